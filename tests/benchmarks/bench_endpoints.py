"""How close can any operating point come to an endpoint's target for new patients? The endpoint ceiling.

    python tests/benchmarks/bench_endpoints.py --from-run runs/paper4-best [--target shockable=0.97/0.99 ...]
    python tests/benchmarks/bench_endpoints.py --from-run runs/paper4-backbones --all-rows

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

``--all-rows`` scores every row of a sweep run's comparison table (e.g. one per backbone of
``tests/benchmarks/configs/paper4-backbones.toml``) on the same folds, instead of only the row the report selected.
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

from ecgpipe.classify import fit_classifier  # noqa: E402
from ecgpipe.config import config_from_dict  # noqa: E402
from ecgpipe.protocols import GROUPED, make_splits  # noqa: E402
from ecgpipe.stages.classification import read_classification_data  # noqa: E402


def rates(positive: np.ndarray, called: np.ndarray) -> tuple[float, float]:
    """(sensitivity, specificity) of boolean calls."""
    return float(called[positive].mean()), float(1 - called[~positive].mean())


def add_target_argument(ap: argparse.ArgumentParser) -> None:
    """``--target ENDPOINT=SENSITIVITY/SPECIFICITY ...``, issue 16's targets by default."""
    ap.add_argument("--target", nargs="*", default=["shockable=0.97/0.99", "af=0.95/0.98"],
                    help="ENDPOINT=SENSITIVITY/SPECIFICITY targets to compare with (issue 16's by default)")


def targets_of(args) -> dict[str, tuple[float, float]]:
    """``--target``'s values as ``{endpoint: (sensitivity, specificity)}``."""
    return {name: tuple(float(v) for v in goal.split("/")) for name, goal in (t.split("=") for t in args.target)}


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
    subjects: np.ndarray
    n_subjects: int
    counts: dict[str, int]


def check_same_windows(run: Path, cfg, other) -> None:
    """Refuse another run (config ``other``) whose windows were not cut and featurised as ``cfg``'s."""
    for stage in ("segments", "spectrogram", "features", "rhythm"):
        mine = getattr(cfg, stage).model_dump(exclude={"exclude_labels"})
        theirs = getattr(other, stage).model_dump(exclude={"exclude_labels"})
        if mine != theirs:
            raise SystemExit(f"{run}: its [{stage}] settings differ from the run's ({theirs} vs {mine}): windows not comparable")


def extra_training(run: Path, cfg, clf) -> ExtraTraining:
    """Read ``run``'s windows, refusing a run whose windows were not made the way the main run's were."""
    report = json.loads((run / "report.json").read_text())
    other = config_from_dict(report["config"])
    check_same_windows(run, cfg, other)
    data = read_classification_data(str(run / "store.zarr"), report["features_array"].removesuffix("/data"))
    names = np.asarray(other.class_names)[data.y]
    index = {name: i for i, name in enumerate(cfg.class_names)}
    y = np.array([index.get(n, -1) for n in names], dtype=np.int64)
    counts = {str(n): int(c) for n, c in zip(*np.unique(names, return_counts=True))}
    return ExtraTraining(data.matrix(clf), y, names, data.subjects, len(np.unique(data.subjects)), counts)


def fixed_c(clf):
    """The classifier with C fixed at the first value of its grid instead of nested (see the module docstring)."""
    return clf.model_copy(update={"tune": False, "C": clf.C_grid[0]} if clf.tune else {})


def rows_to_score(report: dict, cfg, all_rows: bool) -> list[tuple[str, str, object]]:
    """(label, features array, classifier settings) of the report's selected row, or of every comparison row."""
    if not all_rows:
        return [(report["backbone"], report["features_array"], fixed_c(cfg.classifier))]
    by_description = {c.describe(cfg.rhythm_block): c for c in cfg.classifiers}
    rows = []
    for row in report["comparison"]:
        if row["classifier"] not in by_description:
            raise SystemExit(f"comparison row {row['backbone']} / {row['classifier']}: no classifier of the config matches")
        rows.append((f"{row['backbone']} {row['layer']}", row["features_array"], fixed_c(by_description[row["classifier"]])))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-run", required=True, help="output folder of a finished run (CNN features + rhythm block)")
    ap.add_argument("--extra-training", help="output folder of a finished run whose windows join every training fold")
    ap.add_argument("--all-rows", action="store_true", help="score every row of the run's comparison table")
    add_target_argument(ap)
    args = ap.parse_args()
    if args.extra_training and args.all_rows:
        raise SystemExit("--extra-training scores the selected row only; leave out --all-rows")
    run = Path(args.from_run)
    report = json.loads((run / "report.json").read_text())
    cfg = config_from_dict(report["config"])
    targets = targets_of(args)
    names = np.asarray(cfg.class_names)
    print("| row | endpoint | training | target sens / spec | all classes: sens / spec | detector: sens / spec "
          "| detector AUC | best sens at target spec (bound) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    results = {}
    for label, features_array, clf in rows_to_score(report, cfg, args.all_rows):
        data = read_classification_data(str(run / "store.zarr"), features_array.removesuffix("/data"))
        X, y = data.matrix(clf), data.y
        splits, _ = make_splits(GROUPED.name, y, data.subjects, cfg.cv, data.databases)
        extra = extra_training(Path(args.extra_training), cfg, clf) if args.extra_training else None
        print(f"{run} [{label}]: {len(y)} segments of {len(np.unique(data.subjects))} subjects, grouped "
              f"{len(splits)}-fold; classifier {clf.describe(cfg.rhythm_block)}", file=sys.stderr)
        if extra is not None:
            print(f"extra training: {args.extra_training}: {len(extra.y)} windows of {extra.n_subjects} subjects "
                  f"({', '.join(f'{k} {v}' for k, v in extra.counts.items())})", file=sys.stderr)

        def fit_fold(train, test, labels, more, extra_labels, X=X, y=y, clf=clf, data=data):
            X_train, y_train = X[train], labels[train]
            # patients weighted within their rhythm classes when the classifier balances them (subject_balance)
            subjects, rhythms = data.subjects[train], names[y[train]]
            if extra_labels is not None:  # the extra windows with a label join this fold's training rows
                use = extra_labels >= 0
                X_train, y_train = np.vstack([X_train, more.X[use]]), np.concatenate([y_train, extra_labels[use]])
                subjects, rhythms = np.r_[subjects, more.subjects[use]], np.r_[rhythms, more.names[use]]
            model, _ = fit_classifier(X_train, y_train, clf, data.n_cnn, subjects=subjects, weight_classes=rhythms)
            return test, model.predict(X[test]), (model.decision_function(X[test]) if len(np.unique(labels)) == 2 else None)

        def out_of_fold(labels, more=None, extra_labels=None, splits=splits, fit_fold=fit_fold, n=len(y)):
            called, score = np.zeros(n, dtype=np.int64), np.zeros(n)
            jobs = (delayed(fit_fold)(tr, te, labels, more, extra_labels) for tr, te in splits)
            for test, p, d in Parallel(n_jobs=2)(jobs):
                called[test] = p
                if d is not None:
                    score[test] = d
            return called, score

        variants = [("own folds", None)] + ([("+ extra", extra)] if extra is not None else [])
        for variant, more in variants:
            all_classes, _ = out_of_fold(y, more, None if more is None else more.y)
            for name, endpoint in cfg.endpoints.items():
                positive = np.isin(names[y], endpoint.classes)
                from_all = rates(positive, np.isin(names[all_classes], endpoint.classes))
                extra_positive = None if more is None else np.isin(more.names, endpoint.classes).astype(np.int64)
                called, score = out_of_fold(positive.astype(np.int64), more, extra_positive)
                detector = rates(positive, called.astype(bool))
                target = targets.get(name)
                bound = best_sensitivity_at(positive, score, target[1]) if target else None
                r = {"target": target, "all_classes": [round(v, 4) for v in from_all],
                     "detector": [round(v, 4) for v in detector],
                     "detector_auc": round(float(roc_auc_score(positive, score)), 4),
                     "best_sensitivity_at_target_specificity": None if bound is None else round(bound, 4),
                     "classifier": clf.describe(cfg.rhythm_block)}
                results[" ".join([label, name] + ([] if more is None else ["+ extra"]))] = r
                print(f"| {label} | {name} | {variant} | {'-' if not target else f'{target[0]:.2f} / {target[1]:.2f}'} "
                      f"| {from_all[0]:.3f} / {from_all[1]:.3f} | {detector[0]:.3f} / {detector[1]:.3f} "
                      f"| {r['detector_auc']:.4f} | {'-' if bound is None else f'{bound:.3f}'} |", flush=True)
    print(json.dumps({"run": str(run), "results": results}))


if __name__ == "__main__":
    main()
