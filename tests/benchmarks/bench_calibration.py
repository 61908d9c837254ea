"""Do an SVM's probabilities for new patients come out better calibrated when Platt scaling's folds keep patients apart?

    python tests/benchmarks/bench_calibration.py --from-run runs/paper4-best [--protocol grouped_by_subject] [--jobs 2]

A classifier with ``record_rule = "mean_probability"`` and kind ``svc`` turns decision values into probabilities by
Platt scaling on out-of-fold decision values of its training rows (``ecgpipe.calibration``). Row-wise folds put a
patient's other windows on the training side, so the sigmoid learns from decision values on known patients; folds
over patients (what the classifier does when its fit is given subjects, as under a grouped protocol) learn from
decision values on patients the fold's model never saw, which is what the outer test fold holds. This benchmark reads a
finished run's store, fits its classifier (untuned, at C = the grid's first value, with its inputs, PCA, weights and
balance) with both calibrations on each outer fold's training patients, and scores the held-out patients'
probabilities: log-loss, Brier score, and the gap between mean confidence (the top class's probability) and
accuracy. Paired per fold. Prints one table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.metrics import log_loss
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _run import window_svm_run  # noqa: E402

from ecgpipe.classify import class_probabilities, fit_classifier  # noqa: E402
from ecgpipe.config import CVSettings  # noqa: E402
from ecgpipe.endpoints import percentile_interval  # noqa: E402
from ecgpipe.protocols import make_splits  # noqa: E402

WAYS = ("row-wise folds", "folds over patients")


def fold_probabilities(X, y, subjects, train, test, settings, n_cnn, n_classes) -> list[np.ndarray]:
    """The test rows' class probabilities, calibrated each way, from one outer fold's training patients."""
    with threadpool_limits(1):
        out = []
        for groups in (None, subjects[train]):
            model, _ = fit_classifier(X[train], y[train], settings, n_cnn, groups, subjects=subjects[train])
            out.append(class_probabilities(model.predict_proba(X[test]), model.classes_, n_classes))
        return out


def scores(y: np.ndarray, proba: np.ndarray) -> dict:
    onehot = np.eye(proba.shape[1])[y]
    confidence = proba.max(axis=1)
    accuracy = float((proba.argmax(axis=1) == y).mean())
    return {"log_loss": float(log_loss(y, np.clip(proba, 1e-12, 1), labels=range(proba.shape[1]))),
            "brier": float(((proba - onehot) ** 2).sum(axis=1).mean()), "accuracy": accuracy,
            "mean_confidence": float(confidence.mean()), "overconfidence": float(confidence.mean()) - accuracy}


def paired_difference(y: np.ndarray, first: np.ndarray, second: np.ndarray, subjects: np.ndarray, n_boot: int = 2000) -> dict:
    """Mean per-window log-loss of ``second`` minus ``first`` with a 95 % interval, resampling patients (a patient's
    windows are not independent): negative favours ``second``."""
    rows = np.arange(len(y))
    loss = lambda p: -np.log(np.clip(p[rows, y], 1e-12, 1))  # noqa: E731
    diff = loss(second) - loss(first)
    names, which = np.unique(subjects, return_inverse=True)
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(n_boot):
        weights = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))[which]
        draws.append(float((weights * diff).sum() / weights.sum()))
    return {"mean": float(diff.mean()), "ci95": percentile_interval(draws), "patients": len(names)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-run", required=True, help="output folder of a finished run with a window-level SVM")
    ap.add_argument("--protocol", default="grouped_by_subject")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    started = time.perf_counter()
    run = Path(args.from_run)
    report, base, data = window_svm_run(run, "comparing calibrations")
    settings = base.model_copy(update={"tune": False, "C": base.C_grid[0], "record_rule": "mean_probability"})
    X, y, subjects, names = data.matrix(settings), data.y, data.subjects, list(report["config"]["classes"])
    splits, _ = make_splits(args.protocol, y, subjects, CVSettings.model_validate(report["config"]["cv"]), data.databases, names)
    out = Parallel(n_jobs=args.jobs)(
        delayed(fold_probabilities)(X, y, subjects, train, test, settings, data.n_cnn, len(names)) for train, test in splits)
    pooled = {way: np.zeros((len(y), len(names))) for way in WAYS}
    per_fold = {way: [] for way in WAYS}
    for (_, test), probas in zip(splits, out):
        for way, proba in zip(WAYS, probas):
            pooled[way][test] = proba
            per_fold[way].append(scores(y[test], proba)["log_loss"])
    tested = np.concatenate([test for _, test in splits])
    result = {way: scores(y[tested], pooled[way][tested]) for way in WAYS}
    better = sum(b < a for a, b in zip(*per_fold.values()))
    paired = paired_difference(y[tested], *(pooled[way][tested] for way in WAYS), subjects[tested])
    print(f"{run}: {args.protocol}, {len(splits)} outer folds, {settings.label} at C {settings.C:g}, untuned; "
          f"{time.perf_counter() - started:.0f} s")
    print("| calibration folds | log-loss | Brier | accuracy | mean confidence | confidence - accuracy |")
    print("|---|---:|---:|---:|---:|---:|")
    for way, r in result.items():
        print(f"| {way} | {r['log_loss']:.4f} | {r['brier']:.4f} | {r['accuracy']:.4f} | {r['mean_confidence']:.4f} | "
              f"{r['overconfidence']:+.4f} |")
    print(f"Folds over patients gave the lower log-loss in {better} of {len(splits)} outer folds; log-loss per window, "
          f"over patients minus row-wise: {paired['mean']:+.4f} (95 % CI over {paired['patients']} patients "
          f"{paired['ci95'][0]:+.4f} to {paired['ci95'][1]:+.4f}).")
    print(json.dumps({"benchmark": "calibration", "run": str(run), "protocol": args.protocol, "C": settings.C,
                      **{way.replace(" ", "_").replace("-", "_"): {k: round(v, 4) for k, v in r.items()}
                         for way, r in result.items()},
                      "folds_better_over_patients": better, "folds": len(splits),
                      "log_loss_difference": {"mean": round(paired["mean"], 4), "ci95": [round(v, 4) for v in paired["ci95"]]},
                      "seconds": round(time.perf_counter() - started)}))


if __name__ == "__main__":
    main()
