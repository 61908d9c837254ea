"""Do detectors that have seen the rhythms no class covers call fewer false endpoints on whole recordings?

    python tests/benchmarks/bench_other_negatives.py --from-run runs/paper4-best --grid ../shared/data/physionet \
        [--cap 2000]

A run trains on windows of its configured classes only (paper4: normal, AF, VT, VF), but a recording also holds
bigeminy, trigeminy, SVTA, nodal and paced rhythm, asystole...: ``bench_context.py --grid`` finds them called AF or
shockable far more often than sinus rhythm. On the run's grouped folds and ``ecgpipe predict``'s grid (the cache of
``bench_context.py --grid``), this fits each endpoint detector (C fixed at the grid's first value) on the sampled
windows as the run does, and again with up to ``--cap`` grid windows of the training patients' other annotated
rhythms added as negatives (never a test patient's), and scores both on the report's windows and on every window of
the recordings (bench_context's reference: the annotated rhythm a window lies in), one window and at ``ecgpipe
predict``'s defaults. Prints one table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_context import add_grid_arguments, grid_run, recording_metrics  # noqa: E402
from bench_endpoints import rates  # noqa: E402

from ecgpipe.classify import fit_classifier  # noqa: E402
from ecgpipe.predict import DEFAULT_ENDPOINT_PENALTY, DEFAULT_ENDPOINT_SMOOTH  # noqa: E402
from ecgpipe.smoothing import neighbour_ranges, segmented_call, smoothed_mean  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_grid_arguments(ap)
    ap.add_argument("--cap", type=int, default=2000, help="most other-rhythm windows added per outer fold (default 2000)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    g = grid_run(args.from_run, args.grid, fixed=True)
    run, cfg, clf, sampled, names, X, y, grid, reference, splits = (
        g.run, g.cfg, g.clf, g.sampled, g.names, g.X, g.y, g.grid, g.reference, g.splits)
    other = reference.known & ~np.isin(reference.labels, list(cfg.label_to_class))
    labels, counts = np.unique(reference.labels[other], return_counts=True)
    print(f"other annotated rhythms on the grid: {other.sum()} windows ("
          + ", ".join(f"{label} {n}" for label, n in zip(labels, counts)) + ")", file=sys.stderr)
    endpoints = {name: np.isin(names[y], e.classes) for name, e in cfg.endpoints.items()}
    stride = int(round(cfg.segments.stride_s * cfg.segments.target_fs))
    starts_s = g.starts_s

    def fold(train, test, extra):
        rows = np.flatnonzero(np.isin(grid.subjects, np.unique(sampled.subjects[test])))
        pool = np.flatnonzero(other & np.isin(grid.subjects, np.unique(sampled.subjects[train])))
        if len(pool) > args.cap:
            pool = np.sort(np.random.default_rng(len(train)).choice(pool, args.cap, replace=False))
        pool = pool if extra else pool[:0]
        scores = {}
        for name, positive in endpoints.items():
            Xt = np.vstack([X[train], grid.X[pool]])
            yt = np.concatenate([positive[train], np.zeros(len(pool), bool)]).astype(np.int64)
            # when clf balances patients: within the run's rhythm classes, and within each other rhythm
            weights = {"subjects": np.r_[sampled.subjects[train], grid.subjects[pool]],
                       "weight_classes": np.r_[names[y[train]], reference.labels[pool]]}
            scores[name] = fit_classifier(Xt, yt, clf, sampled.n_cnn, **weights)[0].decision_function(grid.X[rows])
        return rows, scores

    results = {}
    print("| detectors trained on | decision | endpoint | report's windows: sens / spec | recordings: sens / spec "
          "| runs detected (>= 10 s) | false alarms per hour |")
    print("|---|---|---|---:|---:|---:|---:|")
    for extra in (False, True):
        trained_on = f"+ up to {args.cap} other-rhythm windows" if extra else "the run's classes"
        scores = {name: np.zeros(len(grid.records)) for name in endpoints}
        for rows, found in Parallel(n_jobs=2)(delayed(fold)(tr, te, extra) for tr, te in splits):
            for name in endpoints:
                scores[name][rows] = found[name]
        for width, penalty in ((1, 0.0), (DEFAULT_ENDPOINT_SMOOTH, DEFAULT_ENDPOINT_PENALTY)):
            lo, hi = neighbour_ranges(grid.records, grid.starts, (width // 2) * stride)
            decision = f"{width} windows, penalty {penalty:g}"
            for name, positive in endpoints.items():
                calls = segmented_call(smoothed_mean(scores[name], lo, hi), penalty, grid.records)
                m = recording_metrics(calls, name, reference, grid.records, starts_s, cfg.segments.length_s)
                m["sampled"] = [round(v, 4) for v in rates(positive, calls[grid.at] == 1)]
                results.setdefault(trained_on, {}).setdefault(decision, {})[name] = m
                print(f"| {trained_on} | {decision} | {name} | {m['sampled'][0]:.3f} / {m['sampled'][1]:.3f} "
                      f"| {m['sensitivity']:.3f} / {m['specificity']:.3f} | {m['long_runs_detected']} of "
                      f"{m['long_runs']} | {m['false_alarms_per_hour']:.2f} |", flush=True)
    print(json.dumps({"run": str(run), "classifier": clf.describe(cfg.rhythm_block), "cap": args.cap,
                      "wall_s": round(time.perf_counter() - t0, 1), "results": results}))


if __name__ == "__main__":
    main()
