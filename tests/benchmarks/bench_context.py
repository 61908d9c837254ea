"""Does a decision over more than one 2-s window help new patients? Scores smoothed over neighbours in time.

    python tests/benchmarks/bench_context.py --from-run runs/paper4-best --grid ../shared/data/physionet \
        [--widths 1 3 5 9 15] [--target shockable=0.97/0.99 ...]
    python tests/benchmarks/bench_context.py --from-run runs/paper4-best --all-windows runs/paper4-all-windows

A run's windows are a sample (paper4-best keeps at most 1850 per class, only four rhythms, no noise); a recording
gives every window unlabelled neighbours. Where those neighbours come from:

* ``--grid DATA_DIR`` (what ``ecgpipe predict`` sees): every window of the run's records on predict's fixed grid,
  one per stride from each record's first sample whatever its annotations, featurised by predict's own code
  (``ecgpipe.grid.grid_features``; the run's own grids when it scored its recordings, ``[recordings] score``, else
  computed and cached in ``RUN/bench_context/``). Each of the run's windows is scored by the
  grid window nearest to it (at most half a stride away; it may straddle a rhythm change, as predict's windows do).
* ``--all-windows RUN2``: a finished run of every window of the same records, cut and featurised as the run
  (``tests/benchmarks/configs/paper4-all-windows.toml``). Its windows lie inside annotated episodes, each episode on
  its own grid, so the reference annotations decide where neighbours are missing (a window across a rhythm change,
  a run shorter than a window): a slightly cleaner neighbourhood than a recording gives. Scores the run's own windows.

On the run's own grouped folds (the same subjects in the same test folds as its report), this benchmark

* fits the run's classifier (C fixed at the first value of its grid, as ``bench_endpoints.py`` does) on the training
  fold's sampled windows, four classes, and one two-class detector per endpoint, exactly as ``bench_endpoints.py``;
* predicts *every* window of the test subjects' records (labels unused);
* for each width W (in windows), replaces each test window's class by the majority of the classes within
  W // 2 windows of it in time in the same record (ties keep its own class, as ``ecgpipe predict --smooth`` does),
  and each detector score by the mean of those windows' scores;
* scores the sampled test windows (the report's) under each width: grouped macro-F1, each endpoint's sensitivity
  and specificity from the 4-class classes and from the detector, the detector's ROC AUC and the best sensitivity of
  any threshold at the target specificity (an upper bound: the threshold is chosen with the test labels).

The width is a setting chosen after looking at a table of widths; so that the table's best row is not mistaken for
a result, the row "chosen by inner folds" scores each outer test fold at the widths that grouped inner folds of its
own training subjects choose (``--inner-folds``; 4-class: grouped macro-F1, each detector: balanced accuracy at its
default threshold), as nested CV chooses C. The row after it chooses each detector's operating point the same way:
the width and the threshold that give the best inner sensitivity at the target specificity (``--target``). The row
"4-class calls pooled per endpoint" needs no detector: each endpoint is called where most neighbours' 4-class calls
are among its classes (VT and VF votes pool), at a width per endpoint chosen by inner folds. The last
row ("all widths stacked") decides with every width at once: per decision, a logistic regression (balanced) on the
share of each class and the mean detector scores at every width, fitted on the inner out-of-fold predictions of the
outer fold's training windows; its 4-class column reads the detector scores too. The row "segmented with a change
penalty" is ``ecgpipe predict``'s endpoint decision: each detector's mean score over a width (``--segment-widths``),
then the calls that change only where those scores pay a penalty for it (``smoothing.segmented_call``,
``--penalties``), width and penalty chosen by inner folds (balanced accuracy); a table of fixed widths and penalties
follows.

With ``--grid``, a last table scores every window of the recordings, not only the report's sampled windows: each
grid window's reference is the annotated rhythm it lies in (windows across a change or in noise left out; rhythms no
class covers, such as bigeminy or SVTA, are negatives, as they are for a device), the calls of each outer fold's test
subjects as each decision makes them; and per episode, annotated runs of the endpoint overlapped by a called run and
called runs that overlap none (false alarms per hour).

With ``--all-windows``, width 1 is no smoothing and reproduces ``bench_endpoints.py``'s "own folds" numbers; with
``--grid`` it is one predict window. A window of width W decides with W x 2 s of signal (its rhythm block already
reads 30 s of RR intervals). Nothing of a test subject is used in training or in choosing a width, a threshold or a
stacker. Prints one table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_endpoints import add_target_argument, best_sensitivity_at, check_same_windows, fixed_c, rates, targets_of  # noqa: E402

from ecgpipe.classify import design_matrix, fit_classifier  # noqa: E402
from ecgpipe.config import config_from_dict  # noqa: E402
from ecgpipe.grid import grid_features  # noqa: E402
from ecgpipe.keys import content_key  # noqa: E402
from ecgpipe.markers import Markers  # noqa: E402
from ecgpipe.predict import DEFAULT_ENDPOINT_PENALTY, DEFAULT_ENDPOINT_SMOOTH  # noqa: E402
from ecgpipe.protocols import GROUPED, make_splits  # noqa: E402
from ecgpipe.recording_endpoints import LONG_RUN_S, RecordingTally, endpoint_labels, window_labels  # noqa: E402
from ecgpipe.records import read_record  # noqa: E402
from ecgpipe.smoothing import member_votes, neighbour_ranges, segmented_call, smoothed_mean, smoothed_vote  # noqa: E402
from ecgpipe.stages.classification import read_classification_data  # noqa: E402
from ecgpipe.stages.recording_grid import grid_done, grid_unit, read_grid  # noqa: E402
from ecgpipe.stages.segments import plan_records  # noqa: E402
from ecgpipe.store import Layout  # noqa: E402


@dataclass
class AllWindows:
    """Every window of the test subjects' records that the benchmark predicts, rows in (record, start) order."""

    records: np.ndarray
    subjects: np.ndarray
    starts: np.ndarray  # target-rate samples
    X: np.ndarray  # what the classifier reads
    at: np.ndarray  # the row of each of the run's sampled windows (exactly it, or the grid window nearest to it)
    source: str


def add_grid_arguments(ap: argparse.ArgumentParser) -> None:
    """``--from-run RUN --grid DATA_DIR``: the benchmarks on a finished run's folds and every window of its records."""
    ap.add_argument("--from-run", required=True, help="output folder of a finished run (its folds and classifier)")
    ap.add_argument("--grid", required=True, metavar="DATA_DIR", help="the run's records under DATA_DIR (as bench_context)")


def add_balance_argument(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--subject-balance", type=float, default=None, metavar="P",
                    help="the run's classifier with this subject_balance instead of its own (a lever measured on the "
                         "same folds without a new run: it changes no feature)")


def finished_run(folder: str | Path, subject_balance: float | None = None) -> tuple[Path, object, object]:
    """A finished run's folder, its resolved config and its sampled windows (the report's selected feature array);
    ``subject_balance``: the config's classifier balancing subjects so (``--subject-balance``)."""
    run = Path(folder)
    report = json.loads((run / "report.json").read_text())
    sampled = read_classification_data(str(run / "store.zarr"), report["features_array"].removesuffix("/data"))
    cfg = config_from_dict(report["config"])
    if subject_balance is not None:
        settings = {**cfg.classifier.model_dump(), "subject_balance": subject_balance}
        cfg = cfg.with_stage(classifier=type(cfg.classifier).model_validate(settings))
    return run, cfg, sampled


def windows_of_run(every: Path, cfg, clf, sampled, names) -> AllWindows:
    """A run of every window of the same records, cut and featurised as the run (windows inside its episodes)."""
    every, every_cfg, allw = finished_run(every)
    check_same_windows(every, cfg, every_cfg)
    # every sampled window is one of all windows, with the same features, rhythm and subject
    position = {(r, int(s)): i for i, (r, s) in enumerate(zip(allw.records, allw.starts))}
    missing = [(r, int(s)) for r, s in zip(sampled.records, sampled.starts) if (r, int(s)) not in position]
    if missing:
        raise SystemExit(f"{every}: {len(missing)} of the run's windows are not among all windows, e.g. {missing[:3]}")
    at = np.array([position[(r, int(s))] for r, s in zip(sampled.records, sampled.starts)])
    if not (np.asarray(every_cfg.class_names)[allw.y[at]] == names[sampled.y]).all():
        raise SystemExit(f"{every}: the run's windows carry other rhythms there")
    if not (allw.subjects[at] == sampled.subjects).all():
        raise SystemExit(f"{every}: the run's records belong to other subjects there (same_subject settings differ?)")
    X_all = allw.matrix(clf)
    if not np.allclose(X_all[at], sampled.matrix(clf), rtol=1e-4, atol=1e-4):
        worst = float(np.abs(X_all[at] - sampled.matrix(clf)).max())
        raise SystemExit(f"{every}: features of the same windows differ (max abs difference {worst:.2g})")
    return AllWindows(allw.records, allw.subjects, allw.starts, X_all, at, f"{every} (windows inside annotated episodes)")


def _record_grid(cfg, unit) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    rec = read_record(unit.db_dir, unit.database, unit.record, cfg.database(unit.database),
                      nan_policy=cfg.segments.nan_policy, require_annotations=False, n_leads=cfg.segments.n_leads)
    grid = grid_features(cfg, rec)
    return grid.starts[grid.usable], grid.cnn, grid.rhythm


def _stored_grids(run: Path, data_dir: str, cfg, names: list[str], subject_of: dict[str, str]):
    """(records, starts, cnn, rhythm) of every usable grid window the run stored for these records
    (``ecgpipe.stages.recording_grid``, with the run's settings and current), or None when any is missing or stale."""
    store, markers = str(run / "store.zarr"), Markers(str(run))
    units = {f"{u.database}/{u.record}": u for u in plan_records(cfg, data_dir, download=False)}
    if not set(names) <= set(units):
        return None
    grids = [grid_unit(cfg, units[name], subject_of[name]) for name in names]
    if not all(grid_done(store, markers, g) for g in grids):
        return None
    stored = [read_grid(store, g.path) for g in grids]
    records = np.concatenate([np.full(int(g.usable.sum()), name) for name, g in zip(names, stored)])
    starts = np.concatenate([g.starts[g.usable] for g in stored])
    block = lambda b: np.concatenate(b) if b[0] is not None else np.zeros((len(starts), 0))  # noqa: E731
    return records, starts, block([g.cnn for g in stored]), block([g.rhythm for g in stored])


def _nearest(records: np.ndarray, starts: np.ndarray, record: str, start: int) -> int:
    """The row of ``record``'s window whose start is nearest to ``start`` (rows in (record, start) order)."""
    lo, hi = np.searchsorted(records, record, "left"), np.searchsorted(records, record, "right")
    if lo == hi:
        raise SystemExit(f"{record}: no window on the grid")
    j = lo + int(np.searchsorted(starts[lo:hi], start))
    return min((k for k in (j - 1, j) if lo <= k < hi), key=lambda k: abs(int(starts[k]) - start))


@dataclass
class RecordingReference:
    """The rhythm annotations of every grid record, read once, and each grid window's annotated rhythm."""

    cfg: object
    annotations: dict[str, tuple[list, float]]  # record -> (its rhythm episodes, its sampling rate)
    labels: np.ndarray  # per grid window: the annotated rhythm it lies in, whole ("" across a change or in noise)
    hours: float

    @property
    def known(self) -> np.ndarray:
        return self.labels != ""

    def endpoint_labels(self, name: str) -> set[str]:
        return endpoint_labels(self.cfg, name)


def recording_reference(cfg, data_dir: str, records: np.ndarray, starts: np.ndarray) -> RecordingReference:
    """Read every grid record's annotations (the ``ecgpipe.recording_endpoints`` reference: a window is the rhythm it
    lies in, whole; every other annotated rhythm, configured or not, is a negative)."""
    import wfdb

    from ecgpipe.records import read_episodes

    annotations, labels = {}, np.full(len(records), "", dtype=object)
    starts_s, length_s = starts / cfg.segments.target_fs, cfg.segments.length_s
    for record in np.unique(records):
        database, name = record.split("/", 1)
        path = str(Path(data_dir) / database / name)
        header = wfdb.rdheader(path)
        annotations[record] = (read_episodes(path, cfg.database(database).annotator, header.sig_len), float(header.fs))
        rows = records == record
        labels[rows] = window_labels(*annotations[record], starts_s[rows], length_s, cfg.segments.exclude_labels)
    return RecordingReference(cfg, annotations, labels.astype(str), len(records) * length_s / 3600)


def recording_metrics(calls: np.ndarray, name: str, reference: RecordingReference, records: np.ndarray,
                      starts_s: np.ndarray, length_s: float) -> dict:
    """An endpoint's calls on every grid window, added up over the records (``RecordingTally``)."""
    positive_labels, tally = reference.endpoint_labels(name), RecordingTally()
    for record in np.unique(records):
        rows = records == record
        episodes, fs = reference.annotations[record]
        # each window's annotated rhythm, read once for every endpoint and decision; grid stride = window length
        tally.add_record(calls[rows], starts_s[rows], length_s, length_s, reference.labels[rows], episodes, fs,
                         positive_labels)
    return tally.to_json()


def windows_of_grid(run: Path, data_dir: str, cfg, clf, sampled) -> AllWindows:
    """Every window of the run's records on ``ecgpipe predict``'s fixed grid (one per stride from each record's first
    sample, whatever its annotations), featurised by predict's own path; cached beside the run."""
    settings = [getattr(cfg, k).model_dump(mode="json") for k in ("segments", "spectrogram", "features", "rhythm")]
    names = sorted(set(sampled.records.tolist()))
    key = content_key(*settings, {db: d.model_dump(mode="json") for db, d in cfg.databases.items()}, names)
    cache = run / "bench_context" / f"grid-{key[:16]}.npz"  # a new run folder, or deleting it, recomputes
    stored = _stored_grids(run, data_dir, cfg, names, dict(zip(sampled.records.tolist(), sampled.subjects.tolist())))
    if stored is not None:  # the run scored its recordings ([recordings] score): its grids are these windows
        records, starts, cnn, rhythm = stored
        cache = run / "store.zarr" / Layout.RECORDINGS
    elif cache.exists():
        held = np.load(cache, allow_pickle=False)
        records, starts, cnn, rhythm = held["records"], held["starts"], held["cnn"], held["rhythm"]
    else:
        units = [u for u in plan_records(cfg, data_dir, download=False) if f"{u.database}/{u.record}" in set(names)]
        print(f"featurising every window of {len(units)} records on predict's grid (cached in {cache}) ...", file=sys.stderr)
        t = time.perf_counter()
        parts = Parallel(n_jobs=cfg.run.n_workers)(delayed(_record_grid)(cfg, u) for u in units)
        records = np.concatenate([np.full(len(p[0]), f"{u.database}/{u.record}") for u, p in zip(units, parts)])
        starts = np.concatenate([p[0] for p in parts])
        empty = np.zeros((len(starts), 0))
        cnn = np.concatenate([p[1] for p in parts]) if parts[0][1] is not None else empty
        rhythm = np.concatenate([p[2] for p in parts]) if parts[0][2] is not None else empty
        cache.parent.mkdir(exist_ok=True)
        np.savez(cache, records=records, starts=starts, cnn=cnn, rhythm=rhythm)
        print(f"  {len(starts)} windows in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    order = np.lexsort((starts, records))  # (record, start): units come database by database, then by record
    records, starts = records[order], starts[order]
    X_all = design_matrix(cnn[order] if cnn.shape[1] else None, rhythm[order] if rhythm.shape[1] else None, clf)
    subject_of = dict(zip(sampled.records.tolist(), sampled.subjects.tolist()))
    subjects = np.array([subject_of[r] for r in records])
    # each sampled window is scored by the grid window nearest to it (at most half a stride away, in its record)
    stride = int(round(cfg.segments.stride_s * cfg.segments.target_fs))
    at = np.array([_nearest(records, starts, r, s) for r, s in zip(sampled.records, sampled.starts)])
    offset = np.abs(starts[at] - sampled.starts)
    if (records[at] != sampled.records).any() or offset.max() > stride:
        raise SystemExit(f"{cache}: the grid does not cover the run's windows (largest offset {offset.max()} samples)")
    same = offset == 0  # a grid window that is the sampled window itself has its features (predict's path = training's)
    X = sampled.matrix(clf)
    if same.any() and not np.allclose(X_all[at[same]], X[same], rtol=1e-3, atol=1e-3):
        worst = float(np.abs(X_all[at[same]] - X[same]).max())
        raise SystemExit(f"{cache}: predict's features of the run's own windows differ (max abs difference {worst:.2g})")
    print(f"grid: {len(records)} windows; the run's windows lie {np.median(offset) / cfg.segments.target_fs:.2f} s "
          f"(median) from the nearest grid window, {same.mean():.0%} exactly on it", file=sys.stderr)
    return AllWindows(records, subjects, starts, X_all, at, f"predict's grid over {len(names)} records")


@dataclass
class GridRun:
    """What the benchmarks on predict's grid start from: a finished run, its sampled windows as ``clf`` reads them,
    every window of its records on the grid with their annotated reference, and the run's grouped outer folds."""

    run: Path
    cfg: object
    clf: object
    sampled: object
    names: np.ndarray  # class names
    X: np.ndarray  # the sampled windows' design matrix
    y: np.ndarray
    grid: AllWindows
    reference: RecordingReference
    splits: list

    @property
    def starts_s(self) -> np.ndarray:
        return self.grid.starts / self.cfg.segments.target_fs


def grid_run(from_run: str, data_dir: str, fixed: bool = False, subject_balance: float | None = None) -> GridRun:
    """``--from-run RUN --grid DATA_DIR`` read and checked; ``fixed``: the run's classifier with C fixed (``fixed_c``);
    ``subject_balance``: as ``finished_run``."""
    run, cfg, sampled = finished_run(from_run, subject_balance)
    clf = fixed_c(cfg.classifier) if fixed else cfg.classifier
    grid = windows_of_grid(run, data_dir, cfg, clf, sampled)
    reference = recording_reference(cfg, data_dir, grid.records, grid.starts)
    splits, _ = make_splits(GROUPED.name, sampled.y, sampled.subjects, cfg.cv, sampled.databases)
    return GridRun(run, cfg, clf, sampled, np.asarray(cfg.class_names), sampled.matrix(clf), sampled.y, grid, reference,
                   splits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-run", required=True, help="output folder of a finished run (its folds and classifier)")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--all-windows", help="output folder of a run of every window of the same records")
    where.add_argument("--grid", metavar="DATA_DIR",
                       help="featurise every window of the run's records on predict's fixed grid, records under DATA_DIR")
    ap.add_argument("--widths", type=int, nargs="+", default=[1, 3, 5, 9, 15, 21, 31, 45, 61],
                    help="smoothing widths in windows (odd)")
    ap.add_argument("--penalties", type=float, nargs="+", default=[0.5, 1, 2, 4, 8, 16, 32, 64],
                    help="change penalties of the segmented detector calls (in detector score units)")
    ap.add_argument("--segment-widths", type=int, nargs="+", default=[1, 5, 15],
                    help="widths whose mean detector scores the segmentation reads (odd, among --widths)")
    ap.add_argument("--inner-folds", type=int, default=5, help="grouped inner folds that choose a width (default 5)")
    add_target_argument(ap)
    add_balance_argument(ap)
    args = ap.parse_args()
    if any(w < 1 or w % 2 == 0 for w in args.widths):
        raise SystemExit("--widths: odd numbers of windows (1 = no smoothing)")
    args.widths = sorted(set(args.widths))  # ties between widths go to the narrower
    if set(args.segment_widths) - set(args.widths):
        raise SystemExit("--segment-widths: each must be one of --widths")
    t0 = time.perf_counter()
    run, cfg, sampled = finished_run(args.from_run, args.subject_balance)
    clf = fixed_c(cfg.classifier)
    targets = targets_of(args)
    if set(targets) - set(cfg.endpoints):
        raise SystemExit(f"--target: no endpoint {sorted(set(targets) - set(cfg.endpoints))} in the run (it has {sorted(cfg.endpoints)})")
    names = np.asarray(cfg.class_names)

    X, y = sampled.matrix(clf), sampled.y
    if args.all_windows:
        allw = windows_of_run(Path(args.all_windows), cfg, clf, sampled, names)
    else:
        allw = windows_of_grid(run, args.grid, cfg, clf, sampled)
    X_all, all_starts, at, every = allw.X, allw.starts, allw.at, allw.source

    splits, _ = make_splits(GROUPED.name, y, sampled.subjects, cfg.cv, sampled.databases)
    endpoints = {name: np.isin(names[y], endpoint.classes) for name, endpoint in cfg.endpoints.items()}
    stride = int(round(cfg.segments.stride_s * cfg.segments.target_fs))
    ranges = {w: neighbour_ranges(allw.records, all_starts, (w // 2) * stride)
              for w in sorted(set(args.widths) | {1, DEFAULT_ENDPOINT_SMOOTH})}  # the recordings' table needs 1 and 15
    print(f"{run}: {len(y)} sampled windows of {len(np.unique(sampled.subjects))} subjects, grouped {len(splits)}-fold; "
          f"{every}: {len(allw.records)} windows of the same records; classifier {clf.describe(cfg.rhythm_block)}", file=sys.stderr)

    def predict_windows(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Fit on sampled rows ``train``; predict every window of the subjects of sampled rows ``test``."""
        rows = np.flatnonzero(np.isin(allw.subjects, np.unique(sampled.subjects[test])))
        subjects = sampled.subjects[train]  # weights the training windows when clf balances subjects
        classes = fit_classifier(X[train], y[train], clf, sampled.n_cnn, subjects=subjects)[0].predict(X_all[rows])
        scores = {}
        for name, positive in endpoints.items():
            detector = fit_classifier(X[train], positive[train].astype(np.int64), clf, sampled.n_cnn, subjects=subjects,
                                      weight_classes=y[train])[0]
            scores[name] = detector.decision_function(X_all[rows])
        return rows, classes, scores

    def out_of_fold(fold_splits) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        classes = np.full(len(allw.records), -1, dtype=np.int64)
        scores = {name: np.zeros(len(allw.records)) for name in endpoints}
        for rows, c, d in (predict_windows(tr, te) for tr, te in fold_splits):
            classes[rows] = c
            for name in endpoints:
                scores[name][rows] = d[name]
        return classes, scores

    def smoothed(classes, scores, width, rows):
        """Classes and endpoint scores of sampled ``rows`` after smoothing over ``width`` windows."""
        lo, hi = ranges[width]
        return (smoothed_vote(classes, lo, hi, len(names))[at[rows]],
                {name: smoothed_mean(scores[name], lo, hi)[at[rows]] for name in endpoints})

    endpoint_classes = {name: np.flatnonzero(np.isin(names, e.classes)) for name, e in cfg.endpoints.items()}

    def pooled_votes(classes, width, rows):
        """Of sampled ``rows``, per endpoint: the share of the neighbours whose 4-class call is one of the endpoint's
        classes, minus one half (> 0: most neighbours are positive; VT and VF votes pool before the count)."""
        lo, hi = ranges[width]
        share = {}
        for name, members in endpoint_classes.items():  # predict's votes, averaged over time-based neighbours
            share[name] = smoothed_mean(member_votes(classes, members), lo, hi)[at[rows]]
        return share

    def context_features(classes, scores, rows):
        """Of sampled ``rows``: at each width, the share of each class among the neighbours' classes and the mean
        of each detector's scores (one column block per width)."""
        onehot = np.zeros((len(classes), len(names)))
        predicted = classes >= 0
        onehot[predicted, classes[predicted]] = 1.0
        blocks = []
        for width in args.widths:
            lo, hi = ranges[width]
            blocks.append(smoothed_mean(onehot, lo, hi)[at[rows]])
            blocks.extend(smoothed_mean(scores[name], lo, hi)[at[rows], None] for name in endpoints)
        return np.hstack(blocks)

    def stacker():
        return make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000))

    def outer_fold(train, test):
        """The outer test fold's predictions, and the widths that inner grouped folds of its training subjects choose
        (4-class: grouped macro-F1; each detector: balanced accuracy at its default threshold; ties: the narrower)."""
        inner_cv = cfg.cv.model_copy(update={"n_splits": args.inner_folds})
        inner, _ = make_splits(GROUPED.name, y[train], sampled.subjects[train], inner_cv, sampled.databases[train])
        classes, scores = out_of_fold([(train[tr], train[te]) for tr, te in inner])
        chosen, best = {}, {}
        for width in args.widths:
            called, score = smoothed(classes, scores, width, train)
            merits = {"classes": float(f1_score(y[train], called, average="macro"))}
            merits.update({name: float(balanced_accuracy_score(positive[train], score[name] > 0))
                           for name, positive in endpoints.items()})
            pooled = pooled_votes(classes, width, train)
            merits.update({f"{name} pooled": float(balanced_accuracy_score(positive[train], pooled[name] > 0))
                           for name, positive in endpoints.items()})
            for key, merit in merits.items():
                if merit > best.get(key, -1.0):
                    best[key], chosen[key] = merit, width
            # the operating point for a target specificity: the threshold that keeps that share of the inner
            # out-of-fold negatives below it, and the width whose sensitivity at that threshold is highest
            for name, positive in endpoints.items():
                if name not in targets:
                    continue
                threshold = float(np.quantile(score[name][~positive[train]], targets[name][1]))
                sensitivity = float((score[name][positive[train]] > threshold).mean())
                if sensitivity > best.get(f"{name} at target", -1.0):
                    best[f"{name} at target"], chosen[f"{name} at target"] = sensitivity, (width, threshold)
        # penalised segmentation of the detector scores: the (width, penalty) with the best inner balanced accuracy
        for width in args.segment_widths:
            lo, hi = ranges[width]
            for name, positive in endpoints.items():
                emitted = smoothed_mean(scores[name], lo, hi)
                for penalty in args.penalties:
                    call = segmented_call(emitted, penalty, allw.records)[at[train]]
                    merit = float(balanced_accuracy_score(positive[train], call > 0))
                    if merit > best.get(f"{name} segmented", -1.0):
                        best[f"{name} segmented"], chosen[f"{name} segmented"] = merit, (width, penalty)
        # the stacker: a logistic regression per decision on the smoothed scores at every width at once, fitted on
        # the inner out-of-fold scores of the training windows (what a model not trained on them says of them)
        z = context_features(classes, scores, train)
        stackers = {name: stacker().fit(z, positive[train]) for name, positive in endpoints.items()}
        stackers["classes"] = stacker().fit(z, y[train])
        return predict_windows(train, test), test, chosen, stackers

    all_classes = np.full(len(allw.records), -1, dtype=np.int64)
    all_scores = {name: np.zeros(len(allw.records)) for name in endpoints}
    nested = []  # (sampled test rows, widths chosen for them, stackers fitted for them)
    for (rows, classes, scores), test, chosen, stackers in Parallel(n_jobs=2)(delayed(outer_fold)(tr, te) for tr, te in splits):
        all_classes[rows] = classes
        for name in endpoints:
            all_scores[name][rows] = scores[name]
        nested.append((test, chosen, stackers))

    print("| width (windows / s) | grouped macro-F1 | endpoint | target sens / spec | 4-class: sens / spec "
          "| detector: sens / spec | detector AUC | best sens at target spec (bound) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    results = {}

    def report_row(label, called, scores):
        macro_f1 = float(f1_score(y, called, average="macro"))
        row = {"macro_f1_grouped": round(macro_f1, 4)}
        for name, positive in endpoints.items():
            score = scores[name]
            from_all = rates(positive, np.isin(names[called], cfg.endpoints[name].classes))
            detector = rates(positive, score > 0)
            target = targets.get(name)
            bound = best_sensitivity_at(positive, score, target[1]) if target else None
            auc = float(roc_auc_score(positive, score))
            row[name] = {"all_classes": [round(v, 4) for v in from_all], "detector": [round(v, 4) for v in detector],
                         "detector_auc": round(auc, 4),
                         "best_sensitivity_at_target_specificity": None if bound is None else round(bound, 4)}
            print(f"| {label} | {macro_f1:.3f} | {name} "
                  f"| {'-' if not target else f'{target[0]:.2f} / {target[1]:.2f}'} | {from_all[0]:.3f} / {from_all[1]:.3f} "
                  f"| {detector[0]:.3f} / {detector[1]:.3f} | {auc:.4f} | {'-' if bound is None else f'{bound:.3f}'} |",
                  flush=True)
        results[label] = row

    everything = np.arange(len(y))
    for width in args.widths:
        report_row(f"{width} / {width * cfg.segments.stride_s:g} s", *smoothed(all_classes, all_scores, width, everything))
    # nested: each outer fold scored at the widths its own training subjects chose
    called, scores = np.zeros(len(y), dtype=np.int64), {name: np.zeros(len(y)) for name in endpoints}
    for test, chosen, _ in nested:
        called[test] = smoothed(all_classes, all_scores, chosen["classes"], test)[0]
        for name in endpoints:
            scores[name][test] = smoothed(all_classes, all_scores, chosen[name], test)[1][name]
    widths_chosen = {key: sorted(chosen[key] for _, chosen, _ in nested) for key in nested[0][1]
                     if "at target" not in key and "segmented" not in key}
    report_row("chosen by inner folds", called, scores)
    # the same with each detector's width and threshold for its target specificity chosen by inner folds (scores are
    # shifted by the fold's threshold, so that "> 0" is its call)
    at_target = {name: scores[name].copy() for name in endpoints}
    for test, chosen, _ in nested:
        for name in endpoints:
            if f"{name} at target" in chosen:
                width, threshold = chosen[f"{name} at target"]
                at_target[name][test] = smoothed(all_classes, all_scores, width, test)[1][name] - threshold
    report_row("operating point for the target specificity, chosen by inner folds", called, at_target)
    widths_chosen.update({f"{name} at target": sorted(chosen[f"{name} at target"][0] for _, chosen, _ in nested)
                          for name in endpoints if name in targets})
    # each detector's scores segmented with a change penalty, its width and penalty chosen by inner folds
    def segmented(name, width, penalty, rows):
        lo, hi = ranges[width]
        return segmented_call(smoothed_mean(all_scores[name], lo, hi), penalty, allw.records)[at[rows]] - 0.5

    segmented_scores = {name: np.zeros(len(y)) for name in endpoints}
    for test, chosen, _ in nested:
        for name in endpoints:
            segmented_scores[name][test] = segmented(name, *chosen[f"{name} segmented"], test)
    report_row("detector scores segmented with a change penalty (binary: AUC and bound meaningless), width and "
               "penalty chosen by inner folds", called, segmented_scores)
    widths_chosen.update({f"{name} segmented": sorted(chosen[f"{name} segmented"] for _, chosen, _ in nested)
                          for name in endpoints})
    # the 4-class model alone, its calls pooled per endpoint before the vote (what predict could ship without
    # detectors), each endpoint's width chosen by inner folds
    pooled_scores = {name: np.zeros(len(y)) for name in endpoints}
    for test, chosen, _ in nested:
        for name in endpoints:
            pooled_scores[name][test] = pooled_votes(all_classes, chosen[f"{name} pooled"], test)[name]
    report_row("4-class calls pooled per endpoint, then voted (in the detector columns), widths chosen by inner folds",
               called, pooled_scores)
    # every width at once: each outer test fold scored by the stackers its own training subjects fitted
    stacked_called, stacked = np.zeros(len(y), dtype=np.int64), {name: np.zeros(len(y)) for name in endpoints}
    for test, _, stackers in nested:
        z = context_features(all_classes, all_scores, test)
        stacked_called[test] = stackers["classes"].predict(z)
        for name in endpoints:
            stacked[name][test] = stackers[name].decision_function(z)
    report_row("all widths stacked by inner folds", stacked_called, stacked)
    for name, positive in endpoints.items():  # where the chosen widths' detector still misses, by subject
        missed = positive & (scores[name] <= 0)
        subjects, counts = np.unique(sampled.subjects[missed], return_counts=True)
        worst = sorted(zip(counts.tolist(), subjects.tolist()), reverse=True)[:5]
        print(f"{name} detector misses {missed.sum()} of {positive.sum()}: "
              + ", ".join(f"{subject} {count} of {int((positive & (sampled.subjects == subject)).sum())}" for count, subject in worst))
    # the pooled vote at each fixed width (what ecgpipe predict's endpoints.csv does with --endpoint-smooth W)
    print("| width (windows / s) | endpoint | 4-class calls pooled, then voted: sens / spec |")
    print("|---|---|---:|")
    for width in args.widths:
        pooled = pooled_votes(all_classes, width, everything)
        for name, positive in endpoints.items():
            sens, spec = rates(positive, pooled[name] > 0)
            results[f"{width} / {width * cfg.segments.stride_s:g} s"][name]["pooled_vote"] = [round(sens, 4), round(spec, 4)]
            print(f"| {width} / {width * cfg.segments.stride_s:g} s | {name} | {sens:.3f} / {spec:.3f} |")
    print("| width | penalty | endpoint | segmented detector: sens / spec |")
    print("|---:|---:|---|---:|")
    for width in args.segment_widths:
        for penalty in args.penalties:
            for name, positive in endpoints.items():
                sens, spec = rates(positive, segmented(name, width, penalty, everything) > 0)
                results.setdefault("segmented", {})[f"{width}/{penalty:g}/{name}"] = [round(sens, 4), round(spec, 4)]
                print(f"| {width} | {penalty:g} | {name} | {sens:.3f} / {spec:.3f} |")
    if args.grid:  # every window of the recordings, whatever its rhythm: what a device meets
        reference = recording_reference(cfg, args.grid, allw.records, all_starts)
        length_s, starts_s = cfg.segments.length_s, all_starts / cfg.segments.target_fs
        subjects_of = [np.isin(allw.subjects, np.unique(sampled.subjects[test])) for test, _, _ in nested]

        def grid_calls(name, choose):
            """Calls of every grid window, each outer fold's test subjects decided as ``choose(chosen)`` says."""
            calls = np.full(len(allw.records), -1, dtype=np.int64)
            for rows, (_, chosen, _) in zip(subjects_of, nested):
                width, penalty = choose(chosen)
                lo, hi = ranges[width]
                calls[rows] = segmented_call(smoothed_mean(all_scores[name], lo, hi), penalty, allw.records)[rows]
            return calls

        decoders = {
            "one window": lambda chosen, name: (1, 0.0),
            f"mean over {DEFAULT_ENDPOINT_SMOOTH} windows (predict before the penalty)": lambda chosen, name: (DEFAULT_ENDPOINT_SMOOTH, 0.0),
            f"predict's default ({DEFAULT_ENDPOINT_SMOOTH} windows, penalty {DEFAULT_ENDPOINT_PENALTY:g})":
                lambda chosen, name: (DEFAULT_ENDPOINT_SMOOTH, DEFAULT_ENDPOINT_PENALTY),
            "width chosen by inner folds (mean)": lambda chosen, name: (chosen[name], 0.0),
            "width and penalty chosen by inner folds": lambda chosen, name: chosen[f"{name} segmented"],
        }
        print(f"every window of the recordings ({reference.hours:.1f} h, {reference.known.sum()} windows inside one "
              f"annotated rhythm, {len(reference.known) - reference.known.sum()} straddling a change or in noise):")
        print(f"| decision | endpoint | windows: sens / spec | annotated runs detected | of them >= {LONG_RUN_S:g} s "
              "| called runs | false alarms (per hour) |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for label, choose in decoders.items():
            for name in endpoints:
                calls = grid_calls(name, lambda chosen, name=name, choose=choose: choose(chosen, name))
                m = recording_metrics(calls, name, reference, allw.records, starts_s, length_s)
                results.setdefault("recordings", {}).setdefault(label, {})[name] = m
                print(f"| {label} | {name} | {m['sensitivity']:.3f} / {m['specificity']:.3f} "
                      f"| {m['runs_detected']} of {m['runs']} | {m['long_runs_detected']} of {m['long_runs']} "
                      f"| {m['called_runs']} | {m['false_alarms']} ({m['false_alarms_per_hour']:.2f}) |", flush=True)
        for name in endpoints:  # where predict's default calls an endpoint falsely, by annotated rhythm
            found = results["recordings"][next(k for k in decoders if k.startswith("predict"))][name]["negatives_by_label"]
            worst = sorted(found.items(), key=lambda kv: -kv[1][1])[:6]
            print(f"{name}, predict's default, negatives called positive by annotated rhythm: "
                  + ", ".join(f"{label} {called / n:.3f} of {n}" for label, (n, called) in worst))
    print("widths chosen per outer fold: " + "; ".join(f"{k}: {v}" for k, v in widths_chosen.items()))
    print(json.dumps({"run": str(run), "all_windows": str(every), "n_windows": len(allw.records),
                      "classifier": clf.describe(cfg.rhythm_block), "widths_chosen": widths_chosen,
                      "wall_s": round(time.perf_counter() - t0, 1), "results": results}))


if __name__ == "__main__":
    main()
