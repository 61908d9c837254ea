"""Stage 5, one unit per comparison row (an extractor's features x a classifier of the sweep): every fold of every
protocol, assembled into that row's out-of-fold results. Then the best row's model artifact.

A fold (``evaluate_fold``) is the unit a task computes; ``assemble_row`` turns a row's folds into its protocol
results, and ``evaluate_row`` runs both in one process (tests, notebooks): the flow and they share every step.

Key of a row: its classifier and CV settings, the chunk keys of the features it reads, the segment table's key and
the code version. Classification data is read once per worker process and row inputs, not once per fold.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

import numpy as np

from ecgpipe import protocols
from ecgpipe import store as zs
from ecgpipe.aggregate import record_groups, summarize_rows
from ecgpipe.classify import (
    collect_predictions,
    collect_probabilities,
    design_matrix,
    fit_classifier,
    fit_predict,
    summarize_protocol,
)
from ecgpipe.config import PipelineConfig
from ecgpipe.errors import PipelineError
from ecgpipe.keys import code_version, content_key
from ecgpipe.record_level import record_level_summary
from ecgpipe.results import ProtocolResult
from ecgpipe.stages import table
from ecgpipe.stages.features import FeatureArray
from ecgpipe.store import Layout

STAGE = "classify"


def code() -> str:
    return code_version(__name__)


# ------------------------------------------------------------------------------------------------------- data
@dataclass
class ClassificationData:
    """Everything a classifier sees, in canonical order (database, record, start) whatever the table's row order:
    the folds depend on the segments, not on where an incremental run happened to put them."""

    cnn: np.ndarray | None
    rhythm: np.ndarray | None
    y: np.ndarray
    subjects: np.ndarray
    databases: np.ndarray
    records: np.ndarray  # <db>/<record> of each row
    starts: np.ndarray | None = None  # each window's first sample (target rate) in its record; None for record rows
    per_record: bool = False  # one row is one record (``by_record``)

    def matrix(self, classifier) -> np.ndarray:
        return design_matrix(self.cnn, self.rhythm, classifier)

    @property
    def n_cnn(self) -> int | None:
        return None if self.cnn is None else self.cnn.shape[1]

    def by_record(self, stats: list[str]) -> ClassificationData:
        """One row per record (classifiers with level = 'record'): each block's columns summarised over the
        record's windows by ``stats``; the record's label, subject and database are its windows'."""
        if self.per_record:
            return self
        names, rows = record_groups(self.records)
        first = np.array([r[0] for r in rows], dtype=np.int64)
        for name, r in zip(names, rows):
            if len(np.unique(self.y[r])) != 1:
                raise PipelineError(f"record {name}: its windows carry several classes; level = 'record' needs one label per record")
        summarize = lambda block: None if block is None else summarize_rows(block, rows, stats)  # noqa: E731
        return ClassificationData(summarize(self.cnn), summarize(self.rhythm), self.y[first], self.subjects[first],
                                  self.databases[first], np.asarray(names), per_record=True)


def read_classification_data(store: str, feat_array: str | None) -> ClassificationData:
    y = zs.read_array(store, Layout.segment("class_index")).astype(np.int64)
    sources = zs.read_attrs(store, Layout.SEGMENTS)["sources"]
    source = zs.read_array(store, Layout.segment("source"))
    # records are stored in (database, record) order, so this is (database, record, start) order
    starts = zs.read_array(store, Layout.segment("start")).astype(np.int64)
    order = np.lexsort((starts, source))
    source = source[order]
    records = np.array(table.source_names(sources))[source]
    subjects = np.array([s["subject"] for s in sources])[source]
    databases = np.array([s["database"] for s in sources])[source]
    cnn = rhythm = None
    if feat_array is not None:
        cnn = zs.read_array(store, Layout.data(feat_array)).astype(np.float64)[order]
        if not np.isfinite(cnn).all():
            raise PipelineError(f"{store}/{feat_array}: features contain NaN or inf")
    if zs.has(store, Layout.segment("rhythm_features")):
        rhythm = zs.read_array(store, Layout.segment("rhythm_features")).astype(np.float64)[order]
    return ClassificationData(cnn, rhythm, y[order], subjects, databases, records, starts[order])


@functools.lru_cache(maxsize=4)
def classification_data(store: str, feat_array: str | None, data_key: str = "", by_record: tuple[str, ...] = ()
                        ) -> ClassificationData:
    """The data of ``feat_array`` (None: rhythm block only), read once per process for each ``data_key`` (the
    table's key and the features' chunk keys: any change to the stored data gives another key); with ``by_record``
    (statistics), one row per record."""
    if by_record:
        return classification_data(store, feat_array, data_key).by_record(list(by_record))
    return read_classification_data(store, feat_array)


def row_data(store: str, cfg: PipelineConfig, feat_array: str | None, data_key: str) -> ClassificationData:
    """What the classifier of ``cfg`` reads: window rows, or record rows for level = 'record'."""
    clf = cfg.classifier
    return classification_data(store, feat_array, data_key, tuple(clf.record_stats) if clf.level == "record" else ())


# ------------------------------------------------------------------------------------------------------- rows
@dataclass
class ComparisonRow:
    """One (extractor, classifier) row of the comparison table."""

    cfg: PipelineConfig  # the run's config with this row's [features] and [classifier]
    extractor: FeatureArray
    key: str
    unit: str  # marker name
    features: str | None  # the CNN feature array the classifier reads (None: rhythm block only)
    data_key: str
    protocols: dict[str, ProtocolResult] = field(default_factory=dict)  # once evaluated

    @property
    def label(self) -> str:
        return self.cfg.classifier_label

    @property
    def name(self) -> str:
        """The row in words: its classifier on its features."""
        return f"{self.label} on {self.features or 'the rhythm block'}"


# how predict calls an endpoint: carried by the model, never used by cross-validation (model_key keys it)
DECISION_FIELDS = {"decision_windows", "change_penalty"}


def row_key(cfg: PipelineConfig, feature_keys: list[str], table_key: str) -> str:
    endpoints = {k: e.model_dump(mode="json", exclude=DECISION_FIELDS) for k, e in cfg.endpoints.items()}
    return content_key(STAGE, code(), cfg.classifier.model_dump(mode="json"), cfg.cv.model_dump(mode="json"),
                       endpoints, feature_keys, table_key)


def comparison_rows(cfg: PipelineConfig, extractors: list[FeatureArray], table_key: str) -> list[ComparisonRow]:
    """One row per (extractor, classifier); rhythm-only classifiers do not depend on the extractor: one row each."""
    rows = []
    for e, extractor in enumerate(extractors):
        for clf in cfg.classifiers:
            rhythm_only = clf.inputs == "rhythm"
            if rhythm_only and e > 0:
                continue
            feature_keys = [] if rhythm_only else extractor.keys
            key = row_key(extractor.cfg.with_stage(classifier=clf), feature_keys, table_key)
            rows.append(ComparisonRow(
                cfg=extractor.cfg.with_stage(classifier=clf),
                extractor=extractor,
                key=key,
                unit=f"{extractor.array.replace('/', '__')}__{key[:16]}",
                features=None if rhythm_only else extractor.array,
                data_key=content_key(table_key, feature_keys),
            ))
    return rows


# ------------------------------------------------------------------------------------------------------ folds
@dataclass(frozen=True)
class FoldJob:
    row: int  # index into the rows being evaluated
    protocol: str
    fold: int


@dataclass(frozen=True, eq=False)  # __eq__ below
class FoldResult:
    """One outer fold's answers, as arrays (Python lists were ~208 bytes per window, row and protocol in the flow
    process until the stage ended: 1.7 GiB at 900 000 windows, five rows, two protocols; arrays 34 with three classes'
    probabilities, 10 without)."""

    test: np.ndarray  # the test rows (indices into the row's data)
    predicted: np.ndarray  # their predicted class indices
    chosen: dict  # the inner CV's choice (tuned classifiers)
    # (n_test, n_classes), when the record rule is the mean probability; float64 as they were: the records' mean
    # probabilities, their 4-decimal shares and near-tied answers stay those of earlier versions
    probabilities: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "test", np.asarray(self.test, dtype=np.int64))
        object.__setattr__(self, "predicted", np.asarray(self.predicted, dtype=np.int16))
        if self.probabilities is not None:
            proba = np.asarray(self.probabilities, dtype=np.float64)
            object.__setattr__(self, "probabilities", proba.reshape(len(self.test), -1) if proba.size else proba)

    def __eq__(self, other) -> bool:  # arrays compare element-wise: compare the stored forms
        return isinstance(other, FoldResult) and self.to_json() == other.to_json()

    __hash__ = None

    def to_json(self) -> dict:
        """The stored form (``plan.write_fold``): lists, and the inner CV's numpy scalars as plain numbers."""
        return {"test": self.test.tolist(), "predicted": self.predicted.tolist(),
                "chosen": json.loads(json.dumps(self.chosen, default=lambda v: v.item())),
                "probabilities": None if self.probabilities is None else self.probabilities.tolist()}


def for_row(data: ClassificationData, cfg: PipelineConfig) -> ClassificationData:
    """``data`` at the level the row's classifier works on: windows, or one row per record."""
    clf = cfg.classifier
    return data.by_record(list(clf.record_stats)) if clf.level == "record" else data


def splits_of(row: ComparisonRow, protocol: str, data: ClassificationData) -> tuple[list, str]:
    data = for_row(data, row.cfg)
    return protocols.make_splits(protocol, data.y, data.subjects, row.cfg.cv, data.databases, row.cfg.class_names)


def check_protocols(cfg: PipelineConfig, data: ClassificationData) -> None:
    """Every protocol's folds can be made from the table's windows (leave-one-database-out needs databases that share
    two classes): said once the table is written, before any spectrogram or feature, not when the folds start."""
    for name in cfg.cv.protocols:
        try:
            protocols.make_splits(name, data.y, data.subjects, cfg.cv, data.databases, cfg.class_names)
        except ValueError as err:
            raise PipelineError(f"cv.protocols: {err}, so {name} cannot be run on this run's windows: leave it out "
                                "of cv.protocols, or add records") from None


def fold_jobs(rows: list[ComparisonRow], data: ClassificationData) -> list[FoldJob]:
    return [FoldJob(r, p, f) for r, row in enumerate(rows) for p in row.cfg.cv.protocols
            for f in range(len(splits_of(row, p, data)[0]))]


def evaluate_fold(data: ClassificationData, cfg: PipelineConfig, protocol: str, fold: int) -> FoldResult:
    """Fit on one outer fold's training rows (nested CV inside them when tuned) and predict its test rows."""
    splits, _ = protocols.make_splits(protocol, data.y, data.subjects, cfg.cv, data.databases)
    train, test = splits[fold]
    groups = data.subjects if protocols.protocol(protocol).grouped else None
    pred, chosen, proba = fit_predict(data.matrix(cfg.classifier), data.y, train, test, cfg.classifier, data.n_cnn, groups,
                                      len(cfg.class_names), data.subjects, cfg.cv.seed)
    # rounded once, here: a kept fold's marker stores them as they are, so a fold read back equals a fresh one
    return FoldResult(test, pred, chosen, None if proba is None else np.round(proba, 6))


def one_class_folds(splits: list, y: np.ndarray, class_names: list[str]) -> str:
    """A note naming the folds whose training rows hold one class (a grouped fold of a pilot's few patients): such a
    fold calls every test row that class, as nothing else was seen."""
    lone = [(f + 1, class_names[int(y[train][0])]) for f, (train, _) in enumerate(splits) if len(np.unique(y[train])) < 2]
    if not lone:
        return ""
    return (f"{len(lone)} of {len(splits)} folds train on one class only, so they call every test row that class ("
            + ", ".join(f"fold {f}: {c}" for f, c in lone) + "): add subjects of the other classes")


def assemble_row(row: ComparisonRow, data: ClassificationData, results: dict[tuple[str, int], FoldResult]
                 ) -> dict[str, ProtocolResult]:
    """A row's protocol results from its folds' results (``{(protocol, fold): result}``)."""
    data = for_row(data, row.cfg)
    out = {}
    for protocol in row.cfg.cv.protocols:
        splits, note = splits_of(row, protocol, data)
        if one_class := one_class_folds(splits, data.y, row.cfg.class_names):
            note = "; ".join(n for n in (note, one_class) if n)
        folds = [results[(protocol, f)] for f in range(len(splits))]
        y_pred, chosen = collect_predictions(len(data.y), [(f.test, f.predicted, f.chosen) for f in folds])
        summary = summarize_protocol(data.y, y_pred, data.subjects, splits, row.cfg.class_names, note, chosen,
                                     row.cfg.endpoints, level=row.cfg.classifier.level)
        per_record = [db for db, s in row.cfg.databases.items() if s.labelled_per_record]
        test_fold = np.full(len(data.y), -1)  # the outer fold that tested each row
        for f, (_, test) in enumerate(splits):
            test_fold[test] = f
        if per_record and row.cfg.classifier.level == "record":  # one row is one record already
            clf = row.cfg.classifier
            summary.per_record = record_level_summary(
                data.y, y_pred, data.records, row.cfg.class_names, test_fold, row.cfg.endpoints, subjects=data.subjects,
                rule=f"one prediction per record from its windows' features summarised ({'/'.join(clf.record_stats)})")
        elif per_record:  # databases labelled per record: also score each record from its windows (vote or mean)
            rows_of = np.isin(data.databases, per_record)
            y_proba = (collect_probabilities(len(data.y), len(row.cfg.class_names), [(f.test, f.probabilities) for f in folds])
                       if row.cfg.classifier.uses_probabilities else None)
            summary.per_record = record_level_summary(data.y[rows_of], y_pred[rows_of], data.records[rows_of],
                                                      row.cfg.class_names, test_fold[rows_of], row.cfg.endpoints,
                                                      y_proba=None if y_proba is None else y_proba[rows_of],
                                                      subjects=data.subjects[rows_of])
        out[protocol] = summary
    return out


def evaluate_row(row: ComparisonRow, data: ClassificationData) -> dict[str, ProtocolResult]:
    """Every fold of every protocol of one row, in this process (the flow runs the folds as parallel tasks)."""
    level_data = for_row(data, row.cfg)
    results = {(j.protocol, j.fold): evaluate_fold(level_data, row.cfg, j.protocol, j.fold) for j in fold_jobs([row], data)}
    return assemble_row(row, data, results)


def selects_by_records(cfg: PipelineConfig) -> bool:
    """Datasets labelled per record are judged by their records: the best row is chosen on record-level macro-F1."""
    return all(s.labelled_per_record for s in cfg.databases.values())


def best_row(rows: list[ComparisonRow], protocol: str) -> int:
    """Index of the row with the highest macro-F1 under ``protocol`` (record-level for datasets labelled per record;
    ties: the earlier row)."""
    def score(row: ComparisonRow) -> float:
        result = row.protocols[protocol]
        if selects_by_records(row.cfg) and result.per_record is not None and result.per_record.macro_f1 is not None:
            return result.per_record.macro_f1
        return result.macro_f1

    return int(np.argmax([score(row) for row in rows]))


# ------------------------------------------------------------------------------------------------------ model
def model_key(row: ComparisonRow) -> str:
    # the selection protocol decides whether a tuned classifier's inner CV groups by subject (train_model); an
    # untuned one is refitted too when it changes: rare, and simpler than keying by the classifier's settings. The
    # endpoints' decision settings travel in the artifact: changing one writes the model again, no fold reruns
    decisions = {k: e.model_dump(mode="json", include=DECISION_FIELDS) for k, e in row.cfg.endpoints.items()}
    return content_key("model", row.key, row.cfg.selection_protocol, decisions)


def train_model(store: str, cfg: PipelineConfig, feat_array: str | None, data_key: str, weights_source: str, path: str,
                recordings: dict[str, str] | None = None, signals: dict[str, str] | None = None) -> str:
    """Fit a row's classifier (``cfg``: the row's config) on every segment and save it as a model artifact
    (``ecgpipe.model``)."""
    from ecgpipe.model import save_model

    data = row_data(store, cfg, feat_array, data_key)
    groups = data.subjects if protocols.protocol(cfg.selection_protocol).grouped else None
    X = data.matrix(cfg.classifier)
    model, chosen = fit_classifier(X, data.y, cfg.classifier, data.n_cnn, groups, seed=cfg.cv.seed, subjects=data.subjects)
    detectors = endpoint_detectors(X, data.y, data.n_cnn, cfg, groups, data.subjects)
    training = {"n_segments": int(len(data.y)), "subjects": sorted(set(data.subjects.tolist())), "chosen": chosen,
                "detectors": sorted(detectors),
                # <db>/<record> -> sha256 of its header and signal files (ecgpipe.keys.signal_digest)
                "recordings_sha256": dict(recordings or {}),
                # <db>/<record> -> its signal files alone (ecgpipe.input_digests.signal_fingerprint)
                "signals_fingerprint": dict(signals or {})}
    save_model(path, model, cfg, weights_source=weights_source, n_cnn=data.n_cnn, training=training, detectors=detectors)
    return path


def endpoint_detectors(X: np.ndarray, y: np.ndarray, n_cnn: int | None, cfg: PipelineConfig, groups,
                       subjects: np.ndarray | None = None) -> dict:
    """One two-class classifier per endpoint, with the row's settings, on every window: as a shock-advisory or AF
    detector is built (README "Clinical endpoints": averaged over neighbouring windows, they call new patients' endpoints
    better than the 4-class calls do). None for record-level classifiers, or an endpoint whose windows are all of one
    side. ``groups``: the inner CV's (subjects, or None for stratified inner folds); ``subjects``: every row's, for
    a classifier that balances subjects (within each rhythm class, not each side)."""
    if cfg.classifier.level == "record":
        return {}
    names = np.asarray(cfg.class_names)
    detectors = {}
    for name, endpoint in cfg.endpoints.items():
        positive = np.isin(names[y], endpoint.classes).astype(np.int64)
        if 0 < positive.sum() < len(positive):
            detectors[name], _ = fit_classifier(X, positive, cfg.classifier, n_cnn, groups, seed=cfg.cv.seed, subjects=subjects,
                                                weight_classes=y)
    return detectors
