"""How close can any operating point come to an endpoint's target for new patients? The endpoint ceiling.

    python tests/benchmarks/bench_endpoints.py --from-run runs/paper4-best [--target shockable=0.97/0.99 ...]

Reads a finished run's store (its CNN features and rhythm block) and, on the run's own grouped folds (the same
subjects in the same test folds as its report), scores every binary endpoint of its config two ways:

* the run's classifier settings fitted on all classes, the endpoint read from its predictions (what the report
  shows; C fixed at the first value of the grid instead of nested, which the grouped inner CV chose in most folds);
* a dedicated detector: the same pipeline (scaling, PCA, block weights, balanced RBF SVM) fitted on the endpoint's
  two classes, as a shock-advisory or AF detector is; its out-of-fold decision values give a ROC curve.

For the detector it prints the ROC AUC and the best sensitivity at each target specificity *on the pooled
out-of-fold scores* (the threshold chosen with the test labels: an upper bound for any threshold, not a result a
model could promise). If that bound is below the target, no choice of operating point reaches it with these
features. Prints one table and, last, one JSON line.

``--extra-training RUN`` adds every window of another finished run (made with the same segment, spectrogram, feature
and rhythm settings, e.g. ``tests/benchmarks/configs/cinc2017-paper4-settings.toml``) to every training fold, never
to a test fold, and prints the same table with and without it, side by side: does training on more patients help
the run's own new patients? Its classes join by name; a class the run does not have (CinC's "other") is a negative
of every detector and left out of the all-classes fit.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.metrics import roc_auc_score, roc_curve

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ecgpipe.classify import build_classifier, make_splits  # noqa: E402
from ecgpipe.config import config_from_dict  # noqa: E402
from ecgpipe.protocols import GROUPED  # noqa: E402
from ecgpipe.stages.classification import read_classification_data  # noqa: E402


def rates(positive: np.ndarray, called: np.ndarray) -> tuple[float, float]:
    """(sensitivity, specificity) of boolean calls."""
    return float(called[positive].mean()), float(1 - called[~positive].mean())


def best_sensitivity_at(positive: np.ndarray, score: np.ndarray, specificity: float) -> float:
    """The highest sensitivity of any threshold on ``score`` whose specificity is at least ``specificity``."""
    fpr, tpr, _ = roc_curve(positive, score)
    return float(tpr[fpr <= 1 - specificity + 1e-12].max())


@dataclass
class ExtraTraining:
    """Another run's windows, as extra training rows: the design matrix, class indices into the main run's classes
    (-1 for a class it does not have) and the class names."""

    X: np.ndarray
    y: np.ndarray
    names: np.ndarray
    n_subjects: int
    counts: dict[str, int]


def extra_training(run: Path, cfg) -> ExtraTraining:
    """Read ``run``'s windows, refusing a run whose windows were not made the way the main run's were."""
    report = json.loads((run / "report.json").read_text())
    other = config_from_dict(report["config"])
    for stage in ("segments", "spectrogram", "features", "rhythm"):
        mine = getattr(cfg, stage).model_dump(exclude={"exclude_labels"})
        theirs = getattr(other, stage).model_dump(exclude={"exclude_labels"})
        if mine != theirs:
            raise SystemExit(f"{run}: its [{stage}] settings differ from the run's ({theirs} vs {mine}): windows not comparable")
    data = read_classification_data(str(run / "store.zarr"), report["features_array"].removesuffix("/data"))
    names = np.asarray(other.class_names)[data.y]
    index = {name: i for i, name in enumerate(cfg.class_names)}
    y = np.array([index.get(n, -1) for n in names], dtype=np.int64)
    counts = {str(n): int(c) for n, c in zip(*np.unique(names, return_counts=True))}
    return ExtraTraining(data.matrix(cfg.classifier), y, names, len(np.unique(data.subjects)), counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-run", required=True, help="output folder of a finished run (CNN features + rhythm block)")
    ap.add_argument("--extra-training", help="output folder of a finished run whose windows join every training fold")
    ap.add_argument("--target", nargs="*", default=["shockable=0.97/0.99", "af=0.95/0.98"],
                    help="ENDPOINT=SENSITIVITY/SPECIFICITY targets to compare with (issue 16's by default)")
    args = ap.parse_args()
    run = Path(args.from_run)
    report = json.loads((run / "report.json").read_text())
    cfg = config_from_dict(report["config"])
    clf = cfg.classifier.model_copy(update={"tune": False, "C": cfg.classifier.C_grid[0]} if cfg.classifier.tune else {})
    data = read_classification_data(str(run / "store.zarr"), report["features_array"].removesuffix("/data"))
    X, y = data.matrix(clf), data.y
    splits, _ = make_splits(GROUPED.name, y, data.subjects, cfg.cv, data.databases)
    targets = {name: tuple(float(v) for v in goal.split("/")) for name, goal in (t.split("=") for t in args.target)}

    extra = extra_training(Path(args.extra_training), cfg) if args.extra_training else None
    names = np.asarray(cfg.class_names)

    def fit_fold(train, test, labels, extra_labels):
        X_train, y_train = X[train], labels[train]
        if extra_labels is not None:  # the extra windows with a label join this fold's training rows
            use = extra_labels >= 0
            X_train, y_train = np.vstack([X_train, extra.X[use]]), np.concatenate([y_train, extra_labels[use]])
        model = build_classifier(clf, data.n_cnn).fit(X_train, y_train)
        return test, model.predict(X[test]), (model.decision_function(X[test]) if len(np.unique(labels)) == 2 else None)

    def out_of_fold(labels, extra_labels=None):
        called, score = np.zeros(len(y), dtype=np.int64), np.zeros(len(y))
        for test, p, d in Parallel(n_jobs=2)(delayed(fit_fold)(tr, te, labels, extra_labels) for tr, te in splits):
            called[test] = p
            if d is not None:
                score[test] = d
        return called, score

    print(f"{run}: {len(y)} segments of {len(np.unique(data.subjects))} subjects, grouped {len(splits)}-fold; "
          f"classifier {clf.describe(cfg.rhythm_block)}")
    if extra is not None:
        print(f"extra training: {args.extra_training}: {len(extra.y)} windows of {extra.n_subjects} subjects "
              f"({', '.join(f'{k} {v}' for k, v in extra.counts.items())})")
    print("| endpoint | training | target sens / spec | all classes: sens / spec | detector: sens / spec | detector AUC "
          "| best sens at target spec (bound) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    results = {}
    variants = [("own folds", None)] + ([("+ extra", extra)] if extra is not None else [])
    for variant, more in variants:
        all_classes, _ = out_of_fold(y, None if more is None else more.y)
        for name, endpoint in cfg.endpoints.items():
            positive = np.isin(names[y], endpoint.classes)
            from_all = rates(positive, np.isin(names[all_classes], endpoint.classes))
            extra_positive = None if more is None else np.isin(more.names, endpoint.classes).astype(np.int64)
            called, score = out_of_fold(positive.astype(np.int64), extra_positive)
            detector = rates(positive, called.astype(bool))
            target = targets.get(name)
            bound = best_sensitivity_at(positive, score, target[1]) if target else None
            r = {"target": target, "all_classes": [round(v, 4) for v in from_all],
                 "detector": [round(v, 4) for v in detector], "detector_auc": round(float(roc_auc_score(positive, score)), 4),
                 "best_sensitivity_at_target_specificity": None if bound is None else round(bound, 4)}
            results[name if more is None else f"{name} + extra"] = r
            print(f"| {name} | {variant} | {'-' if not target else f'{target[0]:.2f} / {target[1]:.2f}'} "
                  f"| {from_all[0]:.3f} / {from_all[1]:.3f} | {detector[0]:.3f} / {detector[1]:.3f} | {r['detector_auc']:.4f} "
                  f"| {'-' if bound is None else f'{bound:.3f}'} |", flush=True)
    print(json.dumps({"run": str(run), "classifier": clf.describe(cfg.rhythm_block), "results": results}))


if __name__ == "__main__":
    main()
