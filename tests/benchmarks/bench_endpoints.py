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
"""

from __future__ import annotations

import argparse
import json
import sys
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-run", required=True, help="output folder of a finished run (CNN features + rhythm block)")
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

    def fit_fold(train, test, labels):
        model = build_classifier(clf, data.n_cnn).fit(X[train], labels[train])
        return test, model.predict(X[test]), (model.decision_function(X[test]) if len(np.unique(labels)) == 2 else None)

    def out_of_fold(labels):
        called, score = np.zeros(len(y), dtype=np.int64), np.zeros(len(y))
        for test, p, d in Parallel(n_jobs=2)(delayed(fit_fold)(tr, te, labels) for tr, te in splits):
            called[test] = p
            if d is not None:
                score[test] = d
        return called, score

    print(f"{run}: {len(y)} segments of {len(np.unique(data.subjects))} subjects, grouped {len(splits)}-fold; "
          f"classifier {clf.describe(cfg.rhythm_block)}")
    all_classes, _ = out_of_fold(y)
    print("| endpoint | target sens / spec | all classes: sens / spec | detector: sens / spec | detector AUC "
          "| best sens at target spec (bound) |")
    print("|---|---:|---:|---:|---:|---:|")
    results = {}
    for name, endpoint in cfg.endpoints.items():
        positive = np.isin(np.asarray(cfg.class_names)[y], endpoint.classes)
        from_all = rates(positive, np.isin(np.asarray(cfg.class_names)[all_classes], endpoint.classes))
        called, score = out_of_fold(positive.astype(np.int64))
        detector = rates(positive, called.astype(bool))
        target = targets.get(name)
        bound = best_sensitivity_at(positive, score, target[1]) if target else None
        results[name] = {"target": target, "all_classes": [round(v, 4) for v in from_all],
                         "detector": [round(v, 4) for v in detector], "detector_auc": round(float(roc_auc_score(positive, score)), 4),
                         "best_sensitivity_at_target_specificity": None if bound is None else round(bound, 4)}
        r = results[name]
        print(f"| {name} | {'-' if not target else f'{target[0]:.2f} / {target[1]:.2f}'} | {from_all[0]:.3f} / {from_all[1]:.3f} "
              f"| {detector[0]:.3f} / {detector[1]:.3f} | {r['detector_auc']:.4f} | {'-' if bound is None else f'{bound:.3f}'} |",
              flush=True)
    print(json.dumps({"run": str(run), "classifier": clf.describe(cfg.rhythm_block), "results": results}))


if __name__ == "__main__":
    main()
