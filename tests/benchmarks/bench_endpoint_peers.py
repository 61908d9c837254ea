"""ecgpipe's endpoint detectors against simple peers: the same patients, folds, windows and decision.

    python tests/benchmarks/bench_endpoint_peers.py --from-run runs/paper4-best --grid ../shared/data/physionet

Does the CNN earn its keep for new patients? The peers are what a signal-processing group builds instead: gradient
boosting (scikit-learn's HistGradientBoostingClassifier, balanced class weights, fixed settings: ecgpipe's classifier
kind ``hgb`` untuned) on hand-crafted features of each window, one two-class detector per endpoint:

* ``RR``: the RR-interval and RR-irregularity statistics over 30 s (irregularity, sample entropy, turning points,
  Poincare clustering...: the inputs of classic AF detectors; the same columns ecgpipe's detectors read beside the CNN);
* ``RR + waveform``: plus the shock-advisory descriptors of ``ecgpipe/waveform.py`` over 4 s (VF leakage, threshold
  crossings, dominant frequency, Lempel-Ziv complexity...: VF detectors' parameters, as Figuera et al. 2016 fed them
  to a classifier);
* ``RR + waveform + beats``: plus the beat-level and beat-detail blocks (P waves, QRS width, template correlation,
  premature beats...: what lifted CinC 2017 to 0.83).

Every detector, ecgpipe's (``stages.classification.endpoint_detectors`` with the run's settings and nested C, what a
run ships in its model) and the peers', is fitted on each outer grouped fold's training windows (the run's sampled
windows) and called on every window of the fold's test patients' recordings on ``ecgpipe predict``'s grid with predict's
own function (``smoothing.smoothed_call``): one window, the mean over 15 windows, and predict's decision (15 windows,
change penalty 4 in each detector's score units: an SVC's margin, boosting's log-odds). The table gives the report's
sampled windows (each scored by the nearest grid window) and every window of the recordings (``RecordingTally``), the
one-window ROC AUC on the sampled windows, and, last, a 95 % bootstrap over patients of ecgpipe's minus the best peer's
balanced accuracy over the recordings at predict's decision; then the same with each detector at the change penalty
that suits it best (``OWN_PENALTIES``, picked on the test patients themselves: a bound for ecgpipe and the peers alike,
since predict's penalty was chosen for ecgpipe's score scale, not the peers'). The hand-crafted features of every window are computed
by ecgpipe's own functions (``rhythm_block.window_rhythm_features``) and cached beside the run. Prints the table and,
last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_context import add_grid_arguments, grid_run, recording_metrics  # noqa: E402
from bench_endpoints import add_target_argument, best_sensitivity_at, fixed_c, rates, targets_of  # noqa: E402

from ecgpipe import protocols  # noqa: E402
from ecgpipe.classify import fit_classifier, inner_splits  # noqa: E402
from ecgpipe.keys import code_version, content_key  # noqa: E402
from ecgpipe.model import detector_score  # noqa: E402
from ecgpipe.recording_endpoints import endpoint_reference  # noqa: E402
from ecgpipe.records import read_record  # noqa: E402
from ecgpipe.rhythm_block import window_rhythm_features  # noqa: E402
from ecgpipe.smoothing import smoothed_call, smoothed_mean, window_ranges  # noqa: E402
from ecgpipe.stages.classification import endpoint_detectors  # noqa: E402
from ecgpipe.stages.segments import plan_records  # noqa: E402

WAVEFORM_CONTEXT_S = 4.0  # as shock-advisory algorithms look at a few seconds (docs/results.md: paper4-shock)
PEERS = {  # peer -> the hand-crafted blocks it reads
    "RR": ("rr", "irregularity"),
    "RR + waveform": ("rr", "irregularity", "waveform"),
    "RR + waveform + beats": ("rr", "irregularity", "beats", "beat_detail", "waveform"),
}
DECISIONS = (("one window", 1, 0.0), ("mean over 15", 15, 0.0), ("predict: 15, penalty 4", 15, 4.0))
# predict's penalty (4) was chosen for ecgpipe's detector, in its score's units (an SVC's margin, |score| ~2); a
# peer's boosting log-odds run ~6 times larger, so at 4 its calls are barely segmented. Each detector is also shown
# at the penalty of this grid that does best for it on the test patients: an upper bound for every detector alike
OWN_PENALTIES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


def handcrafted_config(cfg):
    """The run's config with every hand-crafted block on, the waveform descriptors over a shock advisory's 4 s."""
    rhythm = cfg.rhythm.model_copy(update=dict(enabled=True, irregularity=True, beats=True, beat_detail=True,
                                               waveform=True, waveform_context_s=WAVEFORM_CONTEXT_S))
    return cfg.model_copy(update={"rhythm": rhythm})


def block_columns(full_cfg, blocks: tuple[str, ...]) -> np.ndarray:
    """Indices of ``blocks``' columns in ``full_cfg``'s rhythm block (each block's columns, from a config with it alone)."""
    everything = list(full_cfg.rhythm_columns)
    off = dict(irregularity=False, beats=False, beat_detail=False, waveform=False)

    def alone(block):
        only = {} if block == "rr" else {block: True}
        return full_cfg.model_copy(update={"rhythm": full_cfg.rhythm.model_copy(update={**off, **only})}).rhythm_columns

    rr = set(alone("rr"))
    wanted = {c for b in blocks for c in alone(b) if b == "rr" or c not in rr}
    return np.array([i for i, c in enumerate(everything) if c in wanted])


def _record_blocks(full_cfg, unit, sampled_starts: np.ndarray, grid_starts: np.ndarray):
    rec = read_record(unit.db_dir, unit.database, unit.record, full_cfg.database(unit.database),
                      nan_policy=full_cfg.segments.nan_policy, require_annotations=False, n_leads=full_cfg.segments.n_leads)
    both = window_rhythm_features(rec, np.r_[sampled_starts, grid_starts].astype(np.int64), full_cfg)
    return both[: len(sampled_starts)], both[len(sampled_starts):]


def handcrafted_features(run: Path, data_dir: str, full_cfg, sampled, grid) -> tuple[np.ndarray, np.ndarray]:
    """(sampled windows, grid windows) x every hand-crafted column, in the rows' order; cached beside the run."""
    # the rhythm block's code is in the key (an edit to beats.py recomputes), as the run keys its own records
    key = content_key(code_version("ecgpipe.rhythm_block"), full_cfg.rhythm.model_dump(mode="json"),
                      full_cfg.segments.model_dump(mode="json"),
                      sampled.records.tolist(), sampled.starts.tolist(), grid.records.tolist(), grid.starts.tolist())
    cache = run / "bench_context" / f"handcrafted-{key[:16]}.npz"
    if cache.exists():
        held = np.load(cache, allow_pickle=False)
        return held["sampled"], held["grid"]
    units = {f"{u.database}/{u.record}": u for u in plan_records(full_cfg, data_dir, download=False)}
    names = sorted(set(grid.records.tolist()) | set(sampled.records.tolist()))
    print(f"hand-crafted features of {len(sampled.records)} sampled and {len(grid.records)} grid windows of "
          f"{len(names)} records (cached in {cache}) ...", file=sys.stderr)
    t = time.perf_counter()
    parts = Parallel(n_jobs=2)(delayed(_record_blocks)(full_cfg, units[n], sampled.starts[sampled.records == n],
                                                       grid.starts[grid.records == n]) for n in names)
    width = len(full_cfg.rhythm_columns)
    on_sampled, on_grid = np.zeros((len(sampled.records), width)), np.zeros((len(grid.records), width))
    for name, (s, g) in zip(names, parts):
        on_sampled[sampled.records == name], on_grid[grid.records == name] = s, g
    cache.parent.mkdir(exist_ok=True)
    np.savez(cache, sampled=on_sampled, grid=on_grid)
    print(f"  {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return on_sampled, on_grid


def confusion_by_subject(calls, positive, known, subjects) -> dict[str, np.ndarray]:
    """Per subject: [true positives, positives, true negatives, negatives] over windows with a known rhythm."""
    out = {}
    for s in np.unique(subjects[known]):
        rows = known & (subjects == s)
        p, c = positive[rows], calls[rows] == 1
        out[s] = np.array([(p & c).sum(), p.sum(), (~p & ~c).sum(), (~p).sum()], dtype=np.float64)
    return out


def balanced_accuracy(counts: np.ndarray) -> float:
    tp, pos, tn, neg = counts
    return 0.5 * (tp / pos + tn / neg) if pos and neg else float("nan")


def paired_bootstrap(a: dict, b: dict, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Balanced accuracy of ``a`` minus ``b`` pooled over subjects, and its 95 % bootstrap interval over subjects."""
    subjects = sorted(a)
    A, B = np.array([a[s] for s in subjects]), np.array([b[s] for s in subjects])
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(subjects), len(subjects))
        diffs.append(balanced_accuracy(A[pick].sum(0)) - balanced_accuracy(B[pick].sum(0)))
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return balanced_accuracy(A.sum(0)) - balanced_accuracy(B.sum(0)), float(lo), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_grid_arguments(ap)
    ap.add_argument("--stack", action="store_true",
                    help="add a stacked detector: a logistic regression on ecgpipe's (C fixed) and the last peer's "
                         "scores, fitted on their inner grouped out-of-fold scores (about 5 more minutes)")
    add_target_argument(ap)
    args = ap.parse_args()
    targets = targets_of(args)
    t0 = time.perf_counter()
    g = grid_run(args.from_run, args.grid)
    run, cfg, clf, sampled, names, X, y, grid, reference, splits = (
        g.run, g.cfg, g.clf, g.sampled, g.names, g.X, g.y, g.grid, g.reference, g.splits)
    grouped_inner = protocols.protocol(cfg.selection_protocol).grouped

    full_cfg = handcrafted_config(cfg)
    hand_sampled, hand_grid = handcrafted_features(run, args.grid, full_cfg, sampled, grid)
    if cfg.rhythm.enabled and sampled.rhythm is not None and cfg.rhythm_columns == full_cfg.rhythm_columns[: sampled.rhythm.shape[1]]:
        # the run's own rhythm block is the first columns: computed here exactly as the run stored it
        worst = float(np.abs(hand_sampled[:, : sampled.rhythm.shape[1]] - sampled.rhythm).max())
        if worst > 1e-4:
            raise SystemExit(f"the hand-crafted features differ from the run's rhythm block (max abs difference {worst:.2g})")
    peer_clf = type(clf).model_validate({**clf.model_dump(), **dict(kind="hgb", inputs="rhythm", pca=None, tune=False,
                                                                   class_weight="balanced", name=None)})
    peer_cfg = full_cfg.model_copy(update={"classifier": peer_clf})
    detectors = {"ecgpipe": (cfg, X, grid.X, sampled.n_cnn)}
    for peer, blocks in PEERS.items():
        cols = block_columns(full_cfg, blocks)
        detectors[f"peer: {peer} ({len(cols)})"] = (peer_cfg, hand_sampled[:, cols], hand_grid[:, cols], None)
    print(f"{run}: {len(y)} sampled windows, grouped {len(splits)}-fold, {len(grid.records)} grid windows; ecgpipe: "
          f"{clf.describe(cfg.rhythm_block)}; peers: {peer_cfg.classifier.label}", file=sys.stderr)

    def stacked_fold(label, train, test):
        # each outer fold: both detectors' out-of-fold scores over grouped inner folds of its training patients teach
        # a logistic regression how to weigh them; the detectors refitted on all its training windows feed it
        (_, Xs_a, Xg_a, n_cnn), (_, Xs_b, Xg_b, _) = detectors["ecgpipe"], detectors[last_peer]
        fixed = fixed_c(clf)
        rows = np.flatnonzero(np.isin(grid.subjects, np.unique(sampled.subjects[test])))
        found = {}
        for name, endpoint in cfg.endpoints.items():
            positive = np.isin(names[y], endpoint.classes).astype(np.int64)
            oof = np.zeros((len(train), 2))
            for inner_train, inner_test in inner_splits(fixed, positive[train], sampled.subjects[train]):
                a, b = train[inner_train], train[inner_test]
                weighting = {"subjects": sampled.subjects[a], "weight_classes": y[a]}  # when the run balances patients
                oof[inner_test] = np.c_[detector_score(fit_classifier(Xs_a[a], positive[a], fixed, n_cnn, **weighting)[0], Xs_a[b]),
                                        detector_score(fit_classifier(Xs_b[a], positive[a], peer_clf, **weighting)[0], Xs_b[b])]
            stack = LogisticRegression(class_weight="balanced").fit(oof, positive[train])
            weighting = {"subjects": sampled.subjects[train], "weight_classes": y[train]}
            on_grid = np.c_[detector_score(fit_classifier(Xs_a[train], positive[train], fixed, n_cnn, **weighting)[0], Xg_a[rows]),
                            detector_score(fit_classifier(Xs_b[train], positive[train], peer_clf, **weighting)[0], Xg_b[rows])]
            found[name] = stack.decision_function(on_grid)
        return label, rows, found

    def fold(label, train, test):
        fit_cfg, Xs, Xg, n_cnn = detectors[label]
        rows = np.flatnonzero(np.isin(grid.subjects, np.unique(sampled.subjects[test])))
        fitted = endpoint_detectors(Xs[train], y[train], n_cnn, fit_cfg, sampled.subjects[train] if grouped_inner else None,
                                     sampled.subjects[train])
        return label, rows, {name: detector_score(d, Xg[rows]) for name, d in fitted.items()}

    scores = {label: {name: np.full(len(grid.records), np.nan) for name in cfg.endpoints} for label in detectors}
    jobs = [delayed(fold)(label, tr, te) for label in detectors for tr, te in splits]
    last_peer = list(detectors)[-1]
    if args.stack:
        stacked = f"stacked: ecgpipe (C = {fixed_c(clf).C:g}) + {last_peer}"
        jobs += [delayed(stacked_fold)(stacked, tr, te) for tr, te in splits]
        detectors[stacked] = None
        scores[stacked] = {name: np.full(len(grid.records), np.nan) for name in cfg.endpoints}
    for label, rows, found in Parallel(n_jobs=2)(jobs):
        for name, score in found.items():
            scores[label][name][rows] = score

    bounds = np.flatnonzero(np.r_[True, grid.records[1:] != grid.records[:-1], True])
    starts_s = g.starts_s
    results, by_subject = {}, {}
    print("| endpoint | detector | decision | report's windows: sens / spec | one-window AUC | recordings: sens / spec "
          "| runs detected (all; >= 10 s) | false alarms per hour | bound: best sens at target spec |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name, endpoint in cfg.endpoints.items():
        positive_sampled = np.isin(names[y], endpoint.classes)
        known, positive_grid = endpoint_reference(reference.labels, reference.endpoint_labels(name))
        for label in detectors:
            score = scores[label][name]
            if np.isnan(score).any():
                print(f"| {name} | {label} | - | a fold had no detector |", flush=True)
                continue
            auc = roc_auc_score(positive_sampled, score[grid.at])
            for decision, width, penalty in DECISIONS:
                calls = np.concatenate([smoothed_call(score[a:b], width, penalty) for a, b in zip(bounds[:-1], bounds[1:])])
                # the best any threshold on the mean score does on the report's windows, chosen with their labels: an
                # upper bound, not a result (bench_endpoints.py); a segmented call has no score to threshold
                bound = None
                if name in targets and not penalty:
                    mean = np.concatenate([smoothed_mean(score[a:b], *window_ranges(b - a, width))
                                           for a, b in zip(bounds[:-1], bounds[1:])])
                    bound = best_sensitivity_at(positive_sampled, mean[grid.at], targets[name][1])
                m = recording_metrics(calls, name, reference, grid.records, starts_s, cfg.segments.length_s)
                m["sampled"] = [round(v, 4) for v in rates(positive_sampled, calls[grid.at] == 1)]
                m["auc_one_window"] = round(float(auc), 4)
                m["bound_at_target_specificity"] = None if bound is None else round(bound, 4)
                results.setdefault(name, {}).setdefault(label, {})[decision] = m
                if decision == DECISIONS[-1][0]:
                    counts = confusion_by_subject(calls, positive_grid, known, grid.subjects)
                    pooled = sum(counts.values())  # the tally's window sensitivity and specificity, by subject
                    assert (pooled[1], pooled[3]) == (m["positive_windows"], m["negative_windows"]), (pooled, m)
                    assert abs(pooled[0] / pooled[1] - m["sensitivity"]) < 1e-4 > abs(pooled[2] / pooled[3] - m["specificity"])
                    by_subject.setdefault(name, {})[label] = counts
                print(f"| {name} | {label} | {decision} | {m['sampled'][0]:.3f} / {m['sampled'][1]:.3f} | {auc:.4f} | "
                      f"{m['sensitivity']:.3f} / {m['specificity']:.3f} | {m['runs_detected']} of {m['runs']}; "
                      f"{m['long_runs_detected']} of {m['long_runs']} | {m['false_alarms_per_hour']:.2f} | "
                      f"{'-' if bound is None else f'{bound:.3f}'} |", flush=True)

    # each detector at the penalty that suits its own score scale best, chosen on the test patients (a bound)
    own_best, by_subject_own = {}, {}
    for name in cfg.endpoints:
        known, positive_grid = endpoint_reference(reference.labels, reference.endpoint_labels(name))
        for label in detectors:
            score = scores[label][name]
            if np.isnan(score).any():
                continue
            tried = []
            for penalty in OWN_PENALTIES:
                calls = np.concatenate([smoothed_call(score[a:b], 15, penalty) for a, b in zip(bounds[:-1], bounds[1:])])
                counts = confusion_by_subject(calls, positive_grid, known, grid.subjects)
                tried.append((balanced_accuracy(sum(counts.values())), penalty, counts, calls))
            ba, penalty, counts, calls = max(tried, key=lambda t: t[0])
            m = recording_metrics(calls, name, reference, grid.records, starts_s, cfg.segments.length_s)
            own_best.setdefault(name, {})[label] = {"penalty": penalty, "balanced_accuracy": round(ba, 4),
                                                    "sensitivity": m["sensitivity"], "specificity": m["specificity"],
                                                    "false_alarms_per_hour": m["false_alarms_per_hour"]}
            by_subject_own.setdefault(name, {})[label] = counts
    print("\n| endpoint | detector | own best penalty (15 windows; chosen on the test patients: a bound) | recordings: "
          "sens / spec | false alarms per hour | balanced accuracy |")
    print("|---|---|---:|---:|---:|---:|")
    for name, found in own_best.items():
        for label, m in found.items():
            print(f"| {name} | {label} | {m['penalty']:g} | {m['sensitivity']:.3f} / {m['specificity']:.3f} | "
                  f"{m['false_alarms_per_hour']:.2f} | {m['balanced_accuracy']:.3f} |")

    def versus_best_peer(found: dict) -> dict | None:
        if "ecgpipe" not in found or len(found) < 2:
            return None
        peers = {label: balanced_accuracy(sum(c.values())) for label, c in found.items() if label.startswith("peer")}
        best = max(peers, key=peers.get)
        d, lo, hi = paired_bootstrap(found["ecgpipe"], found[best])
        return {"best_peer": best, "peer_balanced_accuracy": round(peers[best], 4), "difference": round(d, 4),
                "ci95": [round(lo, 4), round(hi, 4)]}

    differences, differences_own = {}, {}
    for title, source, into in (("predict's decision (penalty 4, chosen for ecgpipe)", by_subject, differences),
                                ("each at its own best penalty (a bound for both)", by_subject_own, differences_own)):
        print(f"\n| endpoint | best peer, {title}: recordings' balanced accuracy | ecgpipe minus it (95 % bootstrap "
              "over patients) |")
        print("|---|---|---:|")
        for name, found in source.items():
            if (v := versus_best_peer(found)) is not None:
                into[name] = v
                print(f"| {name} | {v['best_peer']}: {v['peer_balanced_accuracy']:.3f} | {v['difference']:+.3f} "
                      f"({v['ci95'][0]:+.3f} to {v['ci95'][1]:+.3f}) |")
    print(json.dumps({"run": str(run), "ecgpipe": clf.describe(cfg.rhythm_block), "peers": peer_cfg.classifier.label,
                      "wall_s": round(time.perf_counter() - t0, 1), "results": results, "differences": differences,
                      "own_best_penalty": own_best, "differences_at_own_best_penalty": differences_own}))


if __name__ == "__main__":
    main()
