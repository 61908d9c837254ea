"""How steady is the nested CV's choice of C, and does the one-standard-error rule make it steadier?

    python tests/benchmarks/bench_inner_choice.py --from-run runs/paper4-best [--seeds 5] [--protocol grouped_by_subject]

Reads a finished run's store (its best row's CNN features and rhythm block) and reruns one protocol's outer folds with
the run's tuned classifier, once per inner-CV seed (the shuffle of the inner folds: a choice any seed could have made)
and inner rule: 'best' (highest inner mean macro-F1, the default) and 'one_se' (the smallest C within one standard
error of it; paper4-best's since 0.5.0). Seed 0 with the run's own rule is the run's own protocol (its numbers must
match the report's). Every fit is ecgpipe's own `fit_classifier` on one BLAS thread, as the pipeline's fold tasks fit. Prints one table (mean,
sd, min and max over seeds of the outer accuracy and macro-F1; how many outer folds changed their C with the seed)
and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.metrics import accuracy_score, f1_score
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ecgpipe.classify import fit_classifier, inner_groups  # noqa: E402
from ecgpipe.config import ClassifierSettings, CVSettings  # noqa: E402
from ecgpipe.protocols import make_splits  # noqa: E402
from ecgpipe.stages.classification import read_classification_data  # noqa: E402

RULES = ("best", "one_se")


def fold_fit(X, y, subjects, train, test, settings: ClassifierSettings, n_cnn, inner, seed: int):
    """One outer fold: the chosen C and the test rows' predictions."""
    with threadpool_limits(1):
        model, chosen = fit_classifier(X[train], y[train], settings, n_cnn, None if inner is None else inner[train],
                                       seed=seed, subjects=subjects[train])
        return chosen.get("C"), model.predict(X[test])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-run", required=True, help="output folder of a finished run whose classifier is tuned")
    ap.add_argument("--seeds", type=int, default=5, help="inner-CV seeds 0 .. N-1 (default 5)")
    ap.add_argument("--protocol", default="grouped_by_subject")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    run = Path(args.from_run)
    report = json.loads((run / "report.json").read_text())
    base = ClassifierSettings.model_validate(report["config"]["classifier"])
    if not base.tune:
        raise SystemExit(f"{run}: its classifier is not tuned (tune = false): no inner choice to measure")
    data = read_classification_data(str(run / "store.zarr"), report["features_array"].removesuffix("/data"))
    X, y, subjects = data.matrix(base), data.y, data.subjects
    names = list(report["config"]["classes"])
    splits, _ = make_splits(args.protocol, y, subjects, CVSettings.model_validate(report["config"]["cv"]), data.databases, names)
    inner = inner_groups(args.protocol, subjects)
    jobs = [(rule, seed, f) for rule in RULES for seed in range(args.seeds) for f in range(len(splits))]
    settings = {rule: base.model_copy(update={"inner_choice": rule}) for rule in RULES}
    out = Parallel(n_jobs=args.jobs)(
        delayed(fold_fit)(X, y, subjects, *splits[f], settings[rule], data.n_cnn, inner, seed) for rule, seed, f in jobs)
    chosen = {(rule, seed, f): c for (rule, seed, f), (c, _) in zip(jobs, out)}
    scores = {rule: [] for rule in RULES}
    for rule in RULES:
        for seed in range(args.seeds):
            pred = np.full(len(y), -1)
            for (r, s, f), (_, p) in zip(jobs, out):
                if (r, s) == (rule, seed):
                    pred[splits[f][1]] = p
            scored = pred >= 0
            scores[rule].append((accuracy_score(y[scored], pred[scored]), f1_score(y[scored], pred[scored], average="macro")))
    published = report["protocols"][args.protocol]
    print(f"{run}: {args.protocol}, {len(splits)} outer folds, inner seeds 0-{args.seeds - 1}; the run's own "
          f"(seed 0, {base.inner_choice}): accuracy {published['accuracy']:.4f}, macro-F1 {published['macro_f1']:.4f}")
    print("| inner rule | accuracy mean (sd) | accuracy min - max | macro-F1 mean (sd) | macro-F1 min - max | "
          "folds whose C moved with the seed | C chosen (all folds, all seeds) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    summary = {}
    for rule in RULES:
        acc, f1 = np.array(scores[rule]).T
        moved = sum(len({chosen[(rule, s, f)] for s in range(args.seeds)}) > 1 for f in range(len(splits)))
        counts = {c: sum(v == c for (r, _, _), v in chosen.items() if r == rule) for c in base.C_grid}
        print(f"| {rule} | {acc.mean():.4f} ({acc.std(ddof=1) if len(acc) > 1 else 0:.4f}) | {acc.min():.4f} - "
              f"{acc.max():.4f} | {f1.mean():.4f} ({f1.std(ddof=1) if len(f1) > 1 else 0:.4f}) | {f1.min():.4f} - "
              f"{f1.max():.4f} | {moved} of {len(splits)} | {', '.join(f'{c:g}: {n}' for c, n in counts.items())} |")
        summary[rule] = {"accuracy": acc.round(4).tolist(), "macro_f1": f1.round(4).tolist(), "folds_moved": moved,
                         "chosen": {f"{c:g}": n for c, n in counts.items()}}
    reproduced = abs(scores[base.inner_choice][0][0] - published["accuracy"]) < 1e-9
    print(json.dumps({"benchmark": "inner_choice", "run": str(run), "protocol": args.protocol, "seeds": args.seeds,
                      "reproduces_run": reproduced, **summary}))


if __name__ == "__main__":
    main()
