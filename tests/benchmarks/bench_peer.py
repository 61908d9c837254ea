"""ecgpipe against the simple peer a reviewer would try first, on the same records and the same folds.

    python tests/benchmarks/bench_peer.py --run runs/cinc2017 --data-dir ../shared/data/physionet [--protocol grouped_by_subject]

The peer (after the baseline in issue 16): gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier,
balanced class weights, default settings) on per-record statistics of the RR intervals that wfdb's xqrs detector
finds, plus a few plain signal statistics. Implemented here from scratch (NumPy, wfdb, scikit-learn) and not from
ecgpipe's own feature code, so that it is a peer and not a variant.

The folds are the run's: ``OUT/records_<protocol>.csv`` names the outer fold that tested each record, and the peer is
trained on the records of the other folds. Prints a table of F1 per class (N, A, O), the challenge's F1_NAO for the
peer and for every comparison row of the run, the difference between the run's best row and the peer with a 95 %
paired bootstrap interval over records, and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import f1_score

PEER_FEATURES = ("rr_mean", "rr_std", "rr_cv", "rr_min", "rr_max", "rr_median", "rr_iqr", "rmssd", "pnn50",
                 "mean_abs_delta", "n_beats_per_s", "duration_s", "amp_std", "amp_kurtosis", "amp_skew", "amp_p99_p1")


def peer_features(path: str) -> np.ndarray:
    """The peer's per-record features: RR-interval statistics and plain signal statistics."""
    from wfdb import processing

    rec = wfdb.rdrecord(path)
    x, fs = rec.p_signal[:, 0].astype(np.float64), float(rec.fs)
    x = np.nan_to_num(x)
    qrs = processing.xqrs_detect(x, fs=fs, verbose=False) if len(x) > 5 * fs else np.zeros(0)
    rr = np.diff(np.asarray(qrs, dtype=np.float64)) / fs
    out = np.zeros(len(PEER_FEATURES))
    if len(rr) >= 3:
        d = np.diff(rr)
        out[:11] = (rr.mean(), rr.std(), rr.std() / rr.mean(), rr.min(), rr.max(), np.median(rr),
                    np.subtract(*np.percentile(rr, [75, 25])), np.sqrt(np.mean(d**2)), np.mean(np.abs(d) > 0.05),
                    np.mean(np.abs(d)), len(qrs) / (len(x) / fs))
    out[11:] = (len(x) / fs, x.std(), stats.kurtosis(x), stats.skew(x), np.subtract(*np.percentile(x, [99, 1])))
    return out


def f1_nao(y_true, y_pred, classes) -> tuple[float, list[float]]:
    per = f1_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    return float(per.mean()), [float(v) for v in per]


def paired_bootstrap(y, a, b, classes, n_boot=1000, seed=0) -> list[float]:
    """95 % interval of F1_NAO(a) - F1_NAO(b), resampling records with replacement."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        diffs.append(f1_nao(y[i], a[i], classes)[0] - f1_nao(y[i], b[i], classes)[0])
    return [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]


@dataclass(frozen=True)
class RunFolds:
    """What a run decided per record, from ``OUT/report.json`` and ``OUT/records_<protocol>.csv``: the peers are
    scored on these records and folds."""

    report: dict
    classes: list[str]
    rows: list[dict]  # the records CSV's rows, in its order
    y: np.ndarray  # each record's class index
    best: np.ndarray  # the run's best row's class index for it
    fold: np.ndarray  # the outer fold that tested it


def run_folds(run: Path, protocol: str) -> RunFolds:
    report = json.loads((run / "report.json").read_text())
    classes = list(report["class_counts"])
    with open(run / f"records_{protocol}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return RunFolds(report, classes, rows, np.array([classes.index(r["label"]) for r in rows]),
                    np.array([classes.index(r["predicted"]) for r in rows]),
                    np.array([int(r["folds"].split()[0]) for r in rows]))


def peer_predictions(X: np.ndarray, y: np.ndarray, fold: np.ndarray, folds) -> np.ndarray:
    """The peer's class for each record of ``folds``, from the records of the other folds (-1 elsewhere)."""
    peer = np.full(len(y), -1)
    for f in folds:
        test = fold == f
        model = HistGradientBoostingClassifier(class_weight="balanced", random_state=0).fit(X[~test], y[~test])
        peer[test] = model.predict(X[test])
    return peer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="output folder of an ecgpipe run on CSV-labelled data")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--protocol", default="grouped_by_subject")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    run = Path(args.run)
    folds = run_folds(run, args.protocol)
    report, classes, y, best, fold = folds.report, folds.classes, folds.y, folds.best, folds.fold
    names = [r["record"] for r in folds.rows]
    t = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        X = np.array(list(pool.map(peer_features, [str(Path(args.data_dir) / n) for n in names], chunksize=32)))
    feature_s = time.perf_counter() - t
    t = time.perf_counter()
    peer = peer_predictions(X, y, fold, np.unique(fold))
    fit_s = time.perf_counter() - t
    labels = list(range(len(classes)))
    peer_f1, peer_per = f1_nao(y, peer, labels)
    best_f1, best_per = f1_nao(y, best, labels)
    ci = paired_bootstrap(y, best, peer, labels)
    print(f"{len(y)} records, {len(np.unique(fold))} folds of {args.protocol} (the run's own); classes {classes}\n")
    print(f"| method | F1_NAO | {' | '.join(f'F1 {c}' for c in classes)} |")
    print("|---|---:|" + "---:|" * len(classes))
    print(f"| peer: gradient boosting on RR + signal statistics | {peer_f1:.3f} | {' | '.join(f'{v:.3f}' for v in peer_per)} |")
    print(f"| ecgpipe best row: {report['classifier']} | {best_f1:.3f} | {' | '.join(f'{v:.3f}' for v in best_per)} |")
    for row in report["comparison"]:
        m = row["protocols"].get(args.protocol, {})
        if "record_macro_f1" in m and not row["best"]:
            print(f"| ecgpipe row: {row['classifier']} | {m['record_macro_f1']:.3f} | (see report.md) |")
    print(f"\nbest row - peer: {best_f1 - peer_f1:+.3f} (95 % paired bootstrap over records {ci[0]:+.3f} to {ci[1]:+.3f})")
    print(json.dumps({"bench": "peer", "run": str(run), "protocol": args.protocol, "records": int(len(y)),
                      "peer_f1_nao": round(peer_f1, 4), "peer_f1_per_class": dict(zip(classes, map(lambda v: round(v, 4), peer_per))),
                      "ecgpipe_f1_nao": round(best_f1, 4), "ecgpipe_f1_per_class": dict(zip(classes, map(lambda v: round(v, 4), best_per))),
                      "ecgpipe_row": report["classifier"], "difference": round(best_f1 - peer_f1, 4),
                      "difference_ci95": [round(v, 4) for v in ci], "peer_feature_s": round(feature_s, 1), "peer_fit_s": round(fit_s, 1)}))


if __name__ == "__main__":
    main()
