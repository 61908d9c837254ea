"""Classification stage: a tuned classifier's folds as shipped (each inner fold's preprocessing fitted once for the
whole grid; an RBF SVC on a BLAS-computed kernel) against the plain path (preprocessing refitted for every grid value,
libsvm's own kernel loop), side by side on a finished run's stored features, plus the cost per fold against the number
of segments.

    python tests/benchmarks/bench_classify.py --run runs/paper4-best [--protocol grouped_by_subject] [--folds 3]

Both sides fit the same outer folds of the run's selected row in this one process; the models must agree (same
inner-CV choices, same predicted classes, decision values equal to 1e-6: the BLAS kernel differs from libsvm's in the
last bits). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ecgpipe.classify import fit_classifier, inner_groups
from ecgpipe.config import config_from_dict
from ecgpipe.stages.classification import read_classification_data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/paper4-best", help="output folder of a finished run")
    ap.add_argument("--protocol", default="grouped_by_subject")
    ap.add_argument("--folds", type=int, default=3, help="outer folds to time (of the protocol's)")
    ap.add_argument("--fractions", type=float, nargs="*", default=[0.25, 0.5], help="segment fractions for the cost curve")
    args = ap.parse_args()

    report = json.loads((Path(args.run) / "report.json").read_text())
    cfg = config_from_dict(report["config"])
    clf = cfg.classifier
    features_array = report["features_array"].removesuffix("/data")  # the report names the data array
    data = read_classification_data(report["store"], features_array if clf.inputs != "rhythm" else None)
    if clf.level == "record":
        data = data.by_record(list(clf.record_stats))
    X, y = data.matrix(clf), data.y
    from ecgpipe.protocols import make_splits

    splits, _ = make_splits(args.protocol, y, data.subjects, cfg.cv, data.databases)
    groups = inner_groups(args.protocol, data.subjects)

    def one_fold(train, test, reuse: bool):
        t = time.perf_counter()
        model, chosen = fit_classifier(X[train], y[train], clf, data.n_cnn, None if groups is None else groups[train],
                                       reuse_transforms=reuse, blas_kernel=reuse, subjects=data.subjects[train])
        scores = model.decision_function(X[test]) if hasattr(model, "decision_function") else model.predict_proba(X[test])
        return time.perf_counter() - t, chosen, scores, model.predict(X[test])

    shipped_s = plain_s = 0.0
    identical = True
    for k, (train, test) in enumerate(splits[: args.folds]):
        ts, cs, ds, ps = one_fold(train, test, True)
        tp, cp, dp, pp = one_fold(train, test, False)
        shipped_s, plain_s = shipped_s + ts, plain_s + tp
        same = cs == cp and np.array_equal(ps, pp) and bool(np.allclose(ds, dp, rtol=0, atol=1e-6))
        identical &= same
        print(f"fold {k}: {len(train)} training rows, shipped {ts:6.1f} s, plain {tp:6.1f} s, chosen {cs}, same {same} "
              f"(largest decision difference {np.abs(ds - dp).max():.1e})", flush=True)

    curve = {}
    rng = np.random.default_rng(0)
    train, test = splits[0]
    for fraction in sorted(args.fractions):
        sub = np.sort(rng.choice(train, int(len(train) * fraction), replace=False))
        seconds, _, _, _ = one_fold(sub, test, True)
        curve[str(len(sub))] = round(seconds, 2)
    curve[str(len(train))] = round(shipped_s / min(args.folds, len(splits)), 2)
    result = {
        "benchmark": "classify",
        "run": args.run,
        "row": cfg.classifier_label,
        "protocol": args.protocol,
        "folds_timed": min(args.folds, len(splits)),
        "shipped_s": round(shipped_s, 1),
        "reference_s": round(plain_s, 1),
        "speedup": round(plain_s / shipped_s, 2),
        "identical": bool(identical),
        "seconds_per_fold_by_training_rows": curve,
    }
    print(f"shipped (preprocessing reused, BLAS kernel): {result['shipped_s']} s; plain: {result['reference_s']} s "
          f"({result['speedup']}x), same models: {identical}")
    print("seconds per fold by training rows:", curve)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
