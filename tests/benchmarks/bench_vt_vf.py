"""How well can VT and VF be told apart in patients a classifier has never seen? The grouped macro-F1 ceiling.

    python tests/benchmarks/bench_vt_vf.py --from-run runs/ppb [--features features/<hash>]

Reads a finished run's store (its CNN features and rhythm block), keeps the VT and VF segments only, and scores a few
classifiers by leave-one-subject-out CV (every VT/VF patient is the test set once): the project's fused RBF SVM, the
rhythm block alone with an RBF SVM and with logistic regression, and gradient-boosted trees (scikit-learn's
HistGradientBoosting) on each. All use balanced class weights. Prints one table and, last, one JSON line, including
the macro-F1 a 4-class classifier would reach with perfect normal and AF predictions and this VT/VF F1:
(1 + 1 + F1_vt + F1_vf) / 4.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.model_selection import LeaveOneGroupOut
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ecgpipe.classify import build_classifier  # noqa: E402
from ecgpipe.config import ClassifierSettings  # noqa: E402
from ecgpipe.stages.classification import read_classification_data as classification_data  # noqa: E402


def candidates(n_cnn: int) -> dict:
    """name -> (which columns: 'fused' or 'rhythm', a function making an unfitted classifier)."""
    svc = lambda inputs: ClassifierSettings(inputs=inputs, pca=128, rhythm_weight=0.7, C=1.0, class_weight="balanced")  # noqa: E731
    trees = lambda: HistGradientBoostingClassifier(max_depth=3, class_weight="balanced", random_state=0)  # noqa: E731
    return {
        "fused CNN + rhythm, PCA-128 RBF SVM (weight 0.7, C=1)": ("fused", lambda: build_classifier(svc("cnn+rhythm"), n_cnn)),
        "rhythm block, RBF SVM (C=1)": ("rhythm", lambda: build_classifier(svc("rhythm"))),
        "rhythm block, logistic regression (C=0.1)": (
            "rhythm", lambda: make_pipeline(StandardScaler(), LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000))),
        "rhythm block, gradient-boosted trees (depth 3)": ("rhythm", trees),
        "fused CNN + rhythm, gradient-boosted trees (depth 3)": ("fused", trees),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-run", required=True, help="output folder of a finished run with rhythm features")
    ap.add_argument("--features", default=None, help="feature array to use (default: the run's best row's)")
    args = ap.parse_args()
    run = Path(args.from_run)
    report = json.loads((run / "report.json").read_text())
    store = str(run / "store.zarr")
    feat_array = (args.features or report["features_array"]).removesuffix("/data")
    data = classification_data(store, feat_array)
    if data.rhythm is None:
        raise SystemExit(f"{run}: the run computed no rhythm features (rhythm.enabled = false)")
    names = list(report["config"]["classes"])
    vt, vf = names.index("vt"), names.index("vf")
    keep = np.isin(data.y, [vt, vf])
    y, groups = (data.y[keep] == vf).astype(int), data.subjects[keep]
    blocks = {"fused": np.hstack([data.cnn[keep], data.rhythm[keep]]), "rhythm": data.rhythm[keep]}
    splits = list(LeaveOneGroupOut().split(y, y, groups))
    print(f"{run}: {int((y == 0).sum())} VT and {int(y.sum())} VF segments of {len(np.unique(groups))} subjects; "
          f"leave-one-subject-out ({len(splits)} folds)")
    print("| classifier | balanced accuracy | F1 vt | F1 vf | 4-class macro-F1 with perfect normal/AF |")
    print("|---|---:|---:|---:|---:|")
    results = {}
    for name, (block, make) in candidates(data.cnn.shape[1]).items():
        X = blocks[block]

        def fold(train, test, make=make, X=X):  # bound now: the loop moves on while the folds run
            return test, make().fit(X[train], y[train]).predict(X[test])

        pred = np.zeros_like(y)
        for test, p in Parallel(n_jobs=2)(delayed(fold)(tr, te) for tr, te in splits):
            pred[test] = p
        f1 = f1_score(y, pred, average=None, labels=[0, 1])
        results[name] = {"balanced_accuracy": round(float(balanced_accuracy_score(y, pred)), 4),
                         "f1_vt": round(float(f1[0]), 4), "f1_vf": round(float(f1[1]), 4),
                         "macro_f1_bound": round(float((2 + f1.sum()) / 4), 4)}
        r = results[name]
        print(f"| {name} | {r['balanced_accuracy']:.3f} | {r['f1_vt']:.3f} | {r['f1_vf']:.3f} | {r['macro_f1_bound']:.3f} |",
              flush=True)
    print(json.dumps({"run": str(run), "features": feat_array, "results": results}))


if __name__ == "__main__":
    main()
