"""Do features relative to the record help new patients? Each window's features minus its record's median window.

    python tests/benchmarks/bench_relative_features.py --from-run runs/paper4-best --grid ../shared/data/physionet

Inter-patient ECG classifiers sometimes subtract a patient's typical beat or window so that what is left is how a
window differs from that patient's usual (a transductive step: ``ecgpipe predict`` sees whole records, so it could).
On the run's grouped folds and ``ecgpipe predict``'s grid (``bench_context.py --grid``, its cache reused), with the
run's classifier (C fixed at its grid's first value), this fits the 4-class model and one detector per endpoint on
the sampled windows and scores the report's windows by the nearest grid window, one window at a time and averaged
over a few widths, for: the run's features as they are; the rhythm block's deviation from the record's median beside
them; the CNN block replaced by its deviation too. Prints one table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.metrics import f1_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_context import add_grid_arguments, finished_run, windows_of_grid  # noqa: E402
from bench_endpoints import fixed_c, rates  # noqa: E402

from ecgpipe.classify import fit_classifier  # noqa: E402
from ecgpipe.protocols import GROUPED, make_splits  # noqa: E402
from ecgpipe.smoothing import neighbour_ranges, smoothed_mean, smoothed_vote  # noqa: E402


def record_medians(X: np.ndarray, records: np.ndarray, of: np.ndarray) -> np.ndarray:
    """The median over ``records``' rows of X of each record named in ``of``, one row per entry of ``of``."""
    median = {r: np.median(X[records == r], axis=0) for r in np.unique(records)}
    return np.stack([median[r] for r in of])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_grid_arguments(ap)
    ap.add_argument("--widths", type=int, nargs="+", default=[1, 15, 45], help="averaging widths in windows (odd)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    run, cfg, sampled = finished_run(args.from_run)
    clf = fixed_c(cfg.classifier)
    names = np.asarray(cfg.class_names)
    X, y, n_cnn = sampled.matrix(clf), sampled.y, sampled.n_cnn
    grid = windows_of_grid(run, args.grid, cfg, clf, sampled)
    M, M_all = record_medians(grid.X, grid.records, sampled.records), record_medians(grid.X, grid.records, grid.records)
    cnn, rhythm = slice(0, n_cnn), slice(n_cnn, None)
    variants = {
        "as the run": (X, grid.X),
        "+ rhythm block minus the record's median": (np.hstack([X, X[:, rhythm] - M[:, rhythm]]),
                                                     np.hstack([grid.X, grid.X[:, rhythm] - M_all[:, rhythm]])),
        "CNN block minus the record's median, + rhythm deviation": (
            np.hstack([X[:, cnn] - M[:, cnn], X[:, rhythm], X[:, rhythm] - M[:, rhythm]]),
            np.hstack([grid.X[:, cnn] - M_all[:, cnn], grid.X[:, rhythm], grid.X[:, rhythm] - M_all[:, rhythm]])),
    }
    splits, _ = make_splits(GROUPED.name, y, sampled.subjects, cfg.cv, sampled.databases)
    endpoints = {name: np.isin(names[y], e.classes) for name, e in cfg.endpoints.items()}
    stride = int(round(cfg.segments.stride_s * cfg.segments.target_fs))
    results = {}
    print("| features | width | grouped macro-F1 | " + " | ".join(f"{n}: detector sens / spec, AUC" for n in endpoints) + " |")
    print("|---|---:|---:|" + "---:|" * len(endpoints))
    for label, (Xa, Xg) in variants.items():
        def fold(train, test, Xa=Xa, Xg=Xg):
            rows = np.flatnonzero(np.isin(grid.subjects, np.unique(sampled.subjects[test])))
            weights = {"subjects": sampled.subjects[train], "weight_classes": y[train]}  # when clf balances patients
            classes = fit_classifier(Xa[train], y[train], clf, n_cnn, **weights)[0].predict(Xg[rows])
            scores = {n: fit_classifier(Xa[train], p[train].astype(np.int64), clf, n_cnn, **weights)[0].decision_function(Xg[rows])
                      for n, p in endpoints.items()}
            return rows, classes, scores

        classes = np.full(len(grid.records), -1, dtype=np.int64)
        scores = {n: np.zeros(len(grid.records)) for n in endpoints}
        for rows, c, s in Parallel(n_jobs=2)(delayed(fold)(tr, te) for tr, te in splits):
            classes[rows] = c
            for n in endpoints:
                scores[n][rows] = s[n]
        for width in args.widths:
            lo, hi = neighbour_ranges(grid.records, grid.starts, (width // 2) * stride)
            row = {"macro_f1_grouped": round(float(f1_score(y, smoothed_vote(classes, lo, hi, len(names))[grid.at],
                                                             average="macro")), 4)}
            for n, positive in endpoints.items():
                score = smoothed_mean(scores[n], lo, hi)[grid.at]
                row[n] = [round(v, 4) for v in rates(positive, score > 0)] + [round(float(roc_auc_score(positive, score)), 4)]
            results[f"{label} / {width}"] = row
            print(f"| {label} | {width} | {row['macro_f1_grouped']:.3f} | "
                  + " | ".join(f"{row[n][0]:.3f} / {row[n][1]:.3f}, {row[n][2]:.4f}" for n in endpoints) + " |", flush=True)
    print(json.dumps({"run": str(run), "classifier": clf.describe(cfg.rhythm_block), "wall_s": round(time.perf_counter() - t0, 1),
                      "results": results}))


if __name__ == "__main__":
    main()
