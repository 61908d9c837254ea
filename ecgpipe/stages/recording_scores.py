"""Stage 6b (``[recordings] score = true``), one unit per grouped fold: the endpoints over whole recordings, out of
fold, as ``ecgpipe predict`` calls them.

The report's endpoints score the sampled windows one at a time; ``ecgpipe predict`` calls an endpoint by its detector's
score averaged over ``decision_windows`` windows and segmented with ``change_penalty``, on every window of a
recording. Here each outer fold of the grouped protocol fits the best row's endpoint detectors on its training
windows (as the model artifact's are fitted on every window) and calls the endpoints on every grid window
(``ecgpipe.stages.recording_grid``) of the records of its test patients; a record whose patient has no sampled
window is in no training fold, and is scored by the fold its position gives. Tallies: windows (every annotated
rhythm, configured or not), annotated runs detected, called runs and false alarms per hour
(``ecgpipe.recording_endpoints``).

Key: the best row's key (classifier, CV, endpoints, features, segment table), the endpoints' decision settings, every
record grid's key and the code version.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ecgpipe.classify import design_matrix
from ecgpipe.config import PipelineConfig
from ecgpipe.keys import code_version, content_key
from ecgpipe.model import detector_score
from ecgpipe.protocols import GROUPED, make_splits
from ecgpipe.recording_endpoints import RecordingTally, endpoint_labels, subjects_json, window_labels
from ecgpipe.results import RecordingScores
from ecgpipe.smoothing import smoothed_call
from ecgpipe.stages.classification import DECISION_FIELDS, ClassificationData, ComparisonRow, endpoint_detectors, row_data
from ecgpipe.stages.recording_grid import GridUnit, RecordGrid, read_grid

STAGE = "recording_scores"


def code() -> str:
    return code_version(__name__)


def scores_key(row: ComparisonRow, grids: list[GridUnit]) -> str:
    decisions = {k: e.model_dump(mode="json", include=DECISION_FIELDS) for k, e in row.cfg.endpoints.items()}
    return content_key(STAGE, code(), row.key, decisions, sorted(g.key for g in grids))


@dataclass(frozen=True)
class GridRecord:
    """What a fold task needs to find a record's grid (the unit itself stays in the flow process)."""

    name: str  # <db>/<record>
    subject: str
    path: str  # the grid's group in the store (GridUnit.path)


def record_folds(data: ClassificationData, cfg: PipelineConfig, grids: list[GridUnit]) -> tuple[list[list[GridRecord]], str]:
    """The records each grouped outer fold scores: those of its test patients; a record whose patient has no
    sampled window (in no training fold) goes to fold ``i % k``, ``i`` its place among those records by name (not
    by the order they were listed in, which no key holds). Returns the folds and the splits' note."""
    splits, note = make_splits(GROUPED.name, data.y, data.subjects, cfg.cv, data.databases)
    fold_of = {str(s): f for f, (_, test) in enumerate(splits) for s in np.unique(data.subjects[test])}
    unseen = sorted(g.shown for g in grids if g.subject not in fold_of)
    fold_of_unseen = {name: i % len(splits) for i, name in enumerate(unseen)}
    folds: list[list[GridRecord]] = [[] for _ in splits]
    for g in grids:
        fold = fold_of[g.subject] if g.subject in fold_of else fold_of_unseen[g.shown]
        folds[fold].append(GridRecord(g.shown, g.subject, g.path))
    return folds, note


def endpoint_calls(grid: RecordGrid, cfg: PipelineConfig, detectors: dict) -> dict[str, np.ndarray]:
    """Each endpoint's call on every grid window (1, 0; -1 where the window has no features or the endpoint no
    detector), as ``ecgpipe.predict.predict_loaded`` calls it: mean detector score over ``decision_windows``, then
    segmented with ``change_penalty``."""
    X = design_matrix(grid.cnn, grid.rhythm, cfg.classifier) if grid.usable.any() else None
    calls = {}
    for name, endpoint in cfg.endpoints.items():
        score = np.full(len(grid.starts), np.nan)
        if name in detectors and X is not None:
            score[grid.usable] = detector_score(detectors[name], X)
        calls[name] = smoothed_call(score, endpoint.decision_windows, endpoint.change_penalty)
    return calls


def tally_record(grid: RecordGrid, cfg: PipelineConfig, calls: dict[str, np.ndarray]) -> dict[str, RecordingTally]:
    """One record's endpoint calls against its annotations (``RecordingTally``): each window's reference is the
    annotated rhythm it lies in, whole."""
    starts_s = grid.starts / cfg.segments.target_fs
    labels = window_labels(grid.episodes, grid.fs, starts_s, cfg.segments.length_s, cfg.segments.exclude_labels)
    tallies = {name: RecordingTally() for name in calls}
    for name, called in calls.items():
        tallies[name].add_record(called, starts_s, cfg.segments.length_s, grid.stride_s, labels, grid.episodes, grid.fs,
                                 endpoint_labels(cfg, name))
    return tallies


@dataclass
class RecordScore:
    """One record's endpoint tallies, and the fold that scored it."""

    record: str
    subject: str
    fold: int
    hours: float
    tallies: dict[str, RecordingTally] = field(default_factory=dict)

    def to_json(self) -> dict:
        per_endpoint = {name: {k: v for k, v in t.to_json().items() if k not in ("negatives_by_label", "long_run_s")}
                        for name, t in self.tallies.items()}
        return {"record": self.record, "subject": self.subject, "fold": self.fold, "hours": round(self.hours, 4),
                "endpoints": per_endpoint}


@dataclass
class FoldScores:
    """What one fold task returns: its records' scores, the records it could not score (with why), and the endpoints
    it had no detector for (its training windows all on one side): those are left out of its records' tallies."""

    scores: list[RecordScore]
    failed: list[dict]
    no_detector: list[str]


def score_fold(store: str, cfg: PipelineConfig, feat_array: str | None, data_key: str, fold: int,
               records: list[GridRecord]) -> FoldScores:
    """Fit the endpoint detectors on the grouped fold's training windows (grouped inner folds when tuned) and score
    its records' grids; a record whose grid cannot be read or scored fails alone."""
    data = row_data(store, cfg, feat_array, data_key)
    splits, _ = make_splits(GROUPED.name, data.y, data.subjects, cfg.cv, data.databases)
    train = splits[fold][0]
    detectors = endpoint_detectors(data.matrix(cfg.classifier)[train], data.y[train], data.n_cnn, cfg, data.subjects[train],
                                   data.subjects[train])
    out, failed = [], []
    for r in records:
        try:
            grid = read_grid(store, r.path)
            calls = {name: c for name, c in endpoint_calls(grid, cfg, detectors).items() if name in detectors}
            hours = len(grid.starts) * grid.stride_s / 3600
            out.append(RecordScore(r.name, r.subject, fold, hours, tally_record(grid, cfg, calls)))
        except Exception as exc:  # an unreadable grid, a detector that fails on one record's values
            failed.append({"record": r.name, "error": f"{type(exc).__name__}: {exc}"})
    return FoldScores(out, failed, sorted(set(cfg.endpoints) - set(detectors)))


def assemble(cfg: PipelineConfig, classifier: str, scores: list[RecordScore], n_folds: int, notes: list[str],
             failed: list[dict]) -> RecordingScores:
    """The run's whole-recording endpoints from every fold's record scores (an endpoint counts the records whose
    fold had its detector)."""
    scores = sorted(scores, key=lambda s: s.record)
    endpoints = {}
    for name, endpoint in cfg.endpoints.items():
        per_subject: dict[str, RecordingTally] = {}  # intervals resample patients (mitdb 201 and 202 are one)
        for s in scores:
            if name in s.tallies:
                per_subject.setdefault(s.subject, RecordingTally()).merge(s.tallies[name])
        endpoints[name] = {**subjects_json(per_subject), "width": endpoint.decision_windows, "penalty": endpoint.change_penalty,
                           "detector": True, "classes": list(endpoint.classes),
                           "records": sum(name in s.tallies for s in scores)}
    return RecordingScores(protocol=GROUPED.name, classifier=classifier, n_folds=n_folds, n_records=len(scores),
                           hours=round(sum(s.hours for s in scores), 3), endpoints=endpoints,
                           records=[s.to_json() for s in scores], notes=notes, failed=sorted(failed, key=lambda f: f["record"]))
