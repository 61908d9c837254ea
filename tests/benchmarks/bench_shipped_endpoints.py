"""What ``ecgpipe predict``'s endpoint calls do for new patients, as shipped: the run's detectors, predict's decision.

    python tests/benchmarks/bench_shipped_endpoints.py --from-run runs/paper4-best --grid ../shared/data/physionet \
        [--width 15] [--penalty 4]

``bench_context.py`` fixes C at the first value of the grid so that it can afford inner folds for every width. This
benchmark fits, on each outer grouped fold's training windows, exactly what a run ships in its model
(``stages.classification.endpoint_detectors``: the run's classifier with its nested choice of C, inner folds grouped
by subject when the run selects by a grouped protocol), scores every window of the fold's test patients on
``ecgpipe predict``'s grid (``bench_context.py --grid``'s cache) with the artifact's score (``model.detector_score``),
and calls each record's windows with predict's own function (``smoothing.smoothed_call``: the mean over ``--width``
windows, then the change ``--penalty``). It reports the report's sampled windows (each scored by the nearest grid
window) and every window of the recordings (``ecgpipe.recording_endpoints``), for one window, the mean alone, and
predict's decision. Nothing of a test patient is used in training. One difference from predict remains: the grid
keeps only windows without NaN samples, so on a record with a NaN stretch the neighbours join across the gap where
predict leaves one (paper4's 68 records have no such gap). Prints one table and, last, one JSON line.
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

from bench_context import add_balance_argument, add_grid_arguments, grid_run, recording_metrics  # noqa: E402
from bench_endpoints import rates  # noqa: E402

from ecgpipe import protocols  # noqa: E402
from ecgpipe.model import detector_score  # noqa: E402
from ecgpipe.smoothing import smoothed_call  # noqa: E402
from ecgpipe.stages.classification import endpoint_detectors  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_grid_arguments(ap)
    add_balance_argument(ap)
    ap.add_argument("--width", type=int, default=None, help="predict's --endpoint-smooth (default: the run's config)")
    ap.add_argument("--penalty", type=float, default=None, help="predict's --endpoint-penalty (default: the run's config)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    g = grid_run(args.from_run, args.grid, subject_balance=args.subject_balance)
    run, cfg, clf, sampled, names, X, y, grid, reference, splits = (
        g.run, g.cfg, g.clf, g.sampled, g.names, g.X, g.y, g.grid, g.reference, g.splits)
    grouped_inner = protocols.protocol(cfg.selection_protocol).grouped
    print(f"{run}: {len(y)} sampled windows, grouped {len(splits)}-fold; detectors {clf.describe(cfg.rhythm_block)}, "
          f"tuned {clf.tune} (C grid {clf.C_grid}, inner folds {'grouped' if grouped_inner else 'stratified'})", file=sys.stderr)

    def fold(train, test):
        rows = np.flatnonzero(np.isin(grid.subjects, np.unique(sampled.subjects[test])))
        detectors = endpoint_detectors(X[train], y[train], sampled.n_cnn, cfg,
                                       sampled.subjects[train] if grouped_inner else None, sampled.subjects[train])
        return rows, {name: detector_score(d, grid.X[rows]) for name, d in detectors.items()}

    scores = {name: np.full(len(grid.records), np.nan) for name in cfg.endpoints}
    for rows, found in Parallel(n_jobs=2)(delayed(fold)(tr, te) for tr, te in splits):
        for name, score in found.items():
            scores[name][rows] = score
    # rows are (record, start) sorted: each record's windows are one contiguous block, as predict sees them
    bounds = np.flatnonzero(np.r_[True, grid.records[1:] != grid.records[:-1], True])
    starts_s = g.starts_s
    results = {}
    print("| decision | endpoint | report's windows: sens / spec | recordings: sens / spec | runs detected (all; >= 10 s) "
          "| called runs | false alarms per hour |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for rule in ("one window", "mean", "predict"):
        for name, endpoint in cfg.endpoints.items():  # predict's decision: the run's config unless given here
            width = 1 if rule == "one window" else args.width or endpoint.decision_windows
            penalty = args.penalty if args.penalty is not None else endpoint.change_penalty
            penalty = 0.0 if rule != "predict" else penalty
            decision = f"{width} windows, penalty {penalty:g}"
            if np.isnan(scores[name]).all():
                continue
            calls = np.concatenate([smoothed_call(scores[name][a:b], width, penalty) for a, b in zip(bounds[:-1], bounds[1:])])
            m = recording_metrics(calls, name, reference, grid.records, starts_s, cfg.segments.length_s)
            m["sampled"] = [round(v, 4) for v in rates(np.isin(names[y], endpoint.classes), calls[grid.at] == 1)]
            results.setdefault(decision, {})[name] = m
            print(f"| {decision} | {name} | {m['sampled'][0]:.3f} / {m['sampled'][1]:.3f} | {m['sensitivity']:.3f} / "
                  f"{m['specificity']:.3f} | {m['runs_detected']} of {m['runs']}; {m['long_runs_detected']} of {m['long_runs']} "
                  f"| {m['called_runs']} | {m['false_alarms_per_hour']:.2f} |", flush=True)
    print(json.dumps({"run": str(run), "detectors": clf.describe(cfg.rhythm_block), "tuned": clf.tune,
                      "wall_s": round(time.perf_counter() - t0, 1), "results": results}))


if __name__ == "__main__":
    main()
