"""Typed results: what a protocol measured, what the report holds. Pydantic models, so results stored as JSON (in a
classifier row's marker, in ``report.json``) are validated when read back; ``to_json()`` gives the stored form."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ecgpipe.columns import CountMatrix, FloatMatrix, FoldSets, IntColumn, StrColumn, fold_lists


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


class ClassMetrics(_Result):
    precision: float  # = PPV
    recall: float  # = sensitivity
    f1: float
    support: int
    specificity: float | None = None  # one class against the rest


class EndpointClassRate(_Result):
    """One rhythm's share of segments that a binary endpoint gets right: for a positive class the share called
    positive (its sensitivity), for a negative class the share called negative (its specificity), as the AHA's
    shock-advisory goals are stated per rhythm."""

    name: str
    positive: bool
    n: int
    rate: float
    ci95: list[float] | None
    goal: float | None = None
    subjects: int | None = None  # how many subjects hold its segments (reports before 0.16.0: unknown)

    @property
    def measure(self) -> str:
        return "sensitivity" if self.positive else "specificity"


class SubjectAverage(_Result):
    """EC57's "average" statistic of a rate beside its gross (pooled) one: the mean over subjects of each subject's own
    rate, so that a patient with hours of windows weighs no more than one with a minute; and the lowest of them."""

    mean: float
    ci95: list[float] | None  # bootstrap over subjects; None from one subject
    lowest: float
    subjects: int


class EndpointResult(_Result):
    """A binary clinical endpoint (``[endpoints]`` of the config): positives are its classes, pooled."""

    classes: list[str]
    positives: int
    negatives: int
    sensitivity: float | None
    specificity: float | None
    ppv: float | None
    npv: float | None
    balanced_accuracy: float | None
    ci95: dict[str, list[float]]
    ci_method: str
    positive_subjects: int | None = None  # subjects holding its positives: what its sensitivity rests on
    negative_subjects: int | None = None
    goal_sensitivity: float | None = None
    goal_specificity: float | None = None
    goal_source: str = ""
    by_class: list[EndpointClassRate] = []
    # the same rates as means over subjects (reports before 0.21.0: none)
    sensitivity_per_subject: SubjectAverage | None = None
    specificity_per_subject: SubjectAverage | None = None


class FoldMetrics(_Result):
    fold: int
    n_train: int
    n_test: int
    test_subjects: int
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    chosen: dict = {}  # the inner CV's choice (tuned classifiers only)


class Interval95(_Result):
    method: str
    accuracy: list[float]
    macro_f1: list[float]


def outcomes_of_0_17(doc, field: str):
    """``doc`` (a protocol's or its record level's stored form) with its ``field`` as written before 0.18.0, a list
    of dicts (one per subject or record), wrapped as ``{"classes", "rows"}`` for the columns' validators (the class
    names are those of ``per_class``); anything else as it is."""
    if isinstance(doc, dict) and isinstance(doc.get(field), list):
        return {**doc, field: {"classes": list(doc.get("per_class") or {}), "rows": doc[field]}}
    return doc


class _Columns(_Result):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)

    def __eq__(self, other) -> bool:  # arrays compare element-wise: compare the stored forms
        return type(self) is type(other) and self.to_json() == other.to_json()

    __hash__ = None


class SubjectOutcomes(_Columns):
    """Each (subject, annotated class) of a protocol's scored rows: the subject, the class (``class`` holds its index
    into ``classes``) and how many of its rows were called each class (``called[i, k]``). Errors across patients are
    rarely spread evenly: this shows which patients they come from, and it is what a paired bootstrap over subjects
    resamples (``ecgpipe.compare``)."""

    classes: list[str]
    subject: StrColumn = Field(default_factory=lambda: np.array([], dtype=object))
    class_index: IntColumn = Field(alias="class", default_factory=lambda: np.array([], dtype=np.int64))
    called: CountMatrix = Field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))

    @model_validator(mode="before")
    @classmethod
    def _from_pairs(cls, value):
        """Reports before 0.18.0 held a list of {subject, class, n, recall, predicted} per pair."""
        if isinstance(value, dict) and isinstance(value.get("rows"), list):
            names, pairs = value["classes"], value["rows"]
            index = {c: i for i, c in enumerate(names)}
            return {"classes": names, "subject": [p["subject"] for p in pairs], "class": [index[p["class"]] for p in pairs],
                    "called": [[p["predicted"].get(c, 0) for c in names] for p in pairs]}
        return value

    def __len__(self) -> int:
        return len(self.subject)

    @property
    def n(self) -> np.ndarray:
        return self.called.sum(axis=1) if len(self) else np.zeros(0, dtype=np.int64)

    @property
    def recall(self) -> np.ndarray:
        return self.called[np.arange(len(self)), self.class_index] / np.maximum(self.n, 1) if len(self) else np.zeros(0)

    def pairs(self, rows=None) -> list[dict]:
        """The pairs (all, or those at ``rows``) as dicts: subject, class, n, recall, predicted (class -> count)."""
        rows = range(len(self)) if rows is None else rows
        n, recall = self.n, self.recall
        return [{"subject": str(self.subject[i]), "class": self.classes[self.class_index[i]], "n": int(n[i]),
                 "recall": float(recall[i]),
                 "predicted": {c: int(v) for c, v in zip(self.classes, self.called[i]) if v}} for i in rows]


class RecordOutcomes(_Columns):
    """Each record's out-of-fold outcome, as columns: the record, its subject, its label and the class its segments
    voted for (indices into ``classes``), each class's vote share (``votes[i, k]``), and the outer fold(s) that tested
    its segments (a list per record in JSON; in memory padded with -1)."""

    classes: list[str]
    record: StrColumn = Field(default_factory=lambda: np.array([], dtype=object))
    subject: StrColumn = Field(default_factory=lambda: np.array([], dtype=object))
    label: IntColumn = Field(default_factory=lambda: np.array([], dtype=np.int64))
    predicted: IntColumn = Field(default_factory=lambda: np.array([], dtype=np.int64))
    votes: FloatMatrix = Field(default_factory=lambda: np.zeros((0, 0)))
    folds: FoldSets = Field(default_factory=lambda: np.zeros((0, 0), dtype=np.int16))

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value):
        """Reports before 0.18.0 held a list of {record, subject, label, predicted, votes, folds} per record."""
        if isinstance(value, dict) and isinstance(value.get("rows"), list):
            names, rows = value["classes"], value["rows"]
            index = {c: i for i, c in enumerate(names)}
            return {"classes": names, "record": [r["record"] for r in rows],
                    "subject": [r.get("subject") or r["record"] for r in rows],  # before 0.4.0: each record its own
                    "label": [index[r["label"]] for r in rows], "predicted": [index[r["predicted"]] for r in rows],
                    "votes": [[r["votes"].get(c, 0.0) for c in names] for r in rows], "folds": [r["folds"] for r in rows]}
        return value

    def __len__(self) -> int:
        return len(self.record)

    def labels(self) -> list[str]:
        return [self.classes[i] for i in self.label]

    def answers(self) -> list[str]:
        return [self.classes[i] for i in self.predicted]

    def rows(self) -> list[dict]:
        """Every record as a dict: record, subject, label, predicted, votes (class -> share), folds."""
        folds = fold_lists(self.folds)
        return [{"record": str(self.record[i]), "subject": str(self.subject[i]), "label": self.classes[self.label[i]],
                 "predicted": self.classes[self.predicted[i]],
                 "votes": {c: float(v) for c, v in zip(self.classes, self.votes[i])}, "folds": folds[i]}
                for i in range(len(self))]


class RecordLevel(_Result):
    """Per-record scores of a CSV-labelled database (each record's segments vote)."""

    rule: str
    n_records: int
    accuracy: float | None
    macro_f1: float | None
    confusion_matrix: list[list[int]]
    per_class: dict[str, ClassMetrics] = {}
    endpoints: dict[str, EndpointResult] = {}
    records: RecordOutcomes | None = None  # None: no record was scored

    @model_validator(mode="before")
    @classmethod
    def _records_as_columns(cls, value):
        value = outcomes_of_0_17(value, "records")
        if isinstance(value, dict) and isinstance(value.get("records"), dict) and value["records"].get("rows") == []:
            value = {**value, "records": None}  # no record was scored
        return value


class ProtocolResult(_Result):
    """Out-of-fold metrics of one protocol: pooled, per class, per fold, per subject, with 95 % intervals."""

    n_folds: int
    note: str
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    balanced_accuracy_fold_std: float
    accuracy_fold_mean: float
    accuracy_fold_std: float
    macro_f1_fold_mean: float
    macro_f1_fold_std: float
    per_class: dict[str, ClassMetrics]
    confusion_matrix: list[list[int]]
    ci95: Interval95
    per_subject: SubjectOutcomes
    folds: list[FoldMetrics]
    endpoints: dict[str, EndpointResult] = {}
    per_record: RecordLevel | None = None
    level: str = "window"  # what one scored row is: a window, or a record (classifiers with level = 'record')

    @model_validator(mode="before")
    @classmethod
    def _subjects_as_columns(cls, value):
        return outcomes_of_0_17(value, "per_subject")


def protocols_to_json(results: dict[str, ProtocolResult]) -> dict:
    return {name: r.to_json() for name, r in results.items()}


def protocols_from_json(doc: dict) -> dict[str, ProtocolResult]:
    return {name: ProtocolResult.model_validate(r) for name, r in doc.items()}


class MetricDifference(_Result):
    """One metric of two classifiers scored on the same windows: each value, a - b, and the 95 % interval of that
    difference from a paired bootstrap over subjects (``ecgpipe.compare``); ``a_better``: the share of draws in
    which a scored higher."""

    metric: str
    a: float | None
    b: float | None
    difference: float | None
    ci95: list[float] | None
    a_better: float | None

    @property
    def verdict(self) -> str:
        """In words: whether the interval of the difference excludes 0."""
        if self.ci95 is None:
            return "undefined"
        lo, hi = self.ci95
        return "a higher" if lo > 0 else "b higher" if hi < 0 else "no difference shown"


class PairedComparison(_Result):
    """Two classifiers' results under one protocol, compared metric by metric on the same subjects' windows."""

    level: str  # what one scored row is: a window, or a record
    n_subjects: int
    n_rows: int
    n_boot: int
    differences: list[MetricDifference]

    def metric(self, name: str) -> MetricDifference:
        return next(d for d in self.differences if d.metric == name)


class ScopeComparison(_Result):
    """One protocol's paired comparison of two runs' best rows, on what it scored (windows, or records' votes)."""

    protocol: str
    scored: str
    comparison: PairedComparison


class RunComparison(_Result):
    """``ecgpipe compare RUN_A RUN_B``: the best rows of two runs of the same segments, compared protocol by protocol."""

    a: str
    b: str
    a_classifier: str
    b_classifier: str
    class_names: list[str]
    scopes: list[ScopeComparison]
    not_compared: list[str] = []  # protocols (or record-level results) that only one run has, with why
    notes: list[str] = []  # what limits the comparison that is made (folds drawn differently)


class ComparisonEntry(_Result):
    """One row of the comparison table: extractor, classifier and headline metrics per protocol."""

    backbone: str
    layer: str
    classifier: str
    features_array: str
    best: bool
    protocols: dict[str, dict[str, float]]
    n_folds: dict[str, int]
    chosen: dict[str, list[dict]]
    # per protocol: this row's macro-F1 minus the best row's, with its paired 95 % interval over subjects
    # (ecgpipe.compare; absent for the best row itself and for rows scored on other rows, e.g. per record)
    versus_best: dict[str, MetricDifference] = {}


class RecordingScores(_Result):
    """Each endpoint over every window of the run's rhythm-annotated recordings, as ``ecgpipe predict`` calls it, each
    record by the detectors of the grouped fold that held its patient out (``ecgpipe.stages.recording_scores``)."""

    protocol: str  # the folds': grouped by subject
    classifier: str  # the row whose detectors were fitted (the best row)
    n_folds: int
    n_records: int
    hours: float
    # per endpoint: ecgpipe.recording_endpoints.RecordingTally.to_json() with its decision (width, penalty), as
    # ``ecgpipe evaluate`` writes its own
    endpoints: dict[str, dict]
    records: list[dict]  # per record: record, subject, fold, hours and per endpoint its tally
    notes: list[str] = []
    failed: list[dict] = []  # records whose grid could not be computed, with the error


class Report(_Result):
    """Everything ``report.json`` holds; the Markdown and HTML reports are rendered from it."""

    warning: str | None = None
    config_name: str
    code_version: str
    software: dict[str, str] = {}  # Python, platform, library versions of the flow process (ecgpipe.environment)
    n_segments: int
    windows_digest: str | None = None  # which windows, with their classes (report_build.windows_digest; since 0.15.0)
    n_candidates: int
    class_counts: dict[str, int]
    class_counts_by_database: dict[str, dict[str, int]]
    subjects_per_class: dict[str, int]
    n_subjects: int
    subject_word: str = "patient"  # "record" when no database of the run has patient ids (CSV-labelled)
    n_records_used: int
    databases: list[str]
    spectrogram_shape: list[int]
    backbone: str
    layer: str
    feature_width: int
    weights: str
    features_array: str | None  # None: no CNN feature was computed (every classifier reads the rhythm block only)
    classifier: str
    features_description: str
    rhythm_description: str | None
    selected_by: str
    protocols: dict[str, ProtocolResult]
    comparison: list[ComparisonEntry]
    skipped_records: list[dict]
    failed_rows: list[dict] = []  # classifier rows whose folds failed, left out of the comparison: row, error
    records_without_windows: list[dict] = []  # read fine, but no window of a configured class: why
    records_with_flat_leads: list[dict] = []  # windows in which a lead is a flat line: {record, flat, windows}
    records_read_with_warnings: list[dict] = []  # read anyway (a longer signal file, checksum = "warn"): {record, warning}
    record_accounting: dict[str, int] = {}  # every record once: used, without windows (by reason), failed, absent
    absent_records: list[str] = []  # listed by a labels CSV without any file in the folder: left out, not failed
    unlisted_records: list[str] = []  # files in a labels-CSV folder without RECORDS that the CSV does not list: not used
    unmatched_labels: list[str]
    config: dict
    # filled in by the flow once everything ran
    model: str | None = None
    model_digest: str | None = None  # sha256 of the model artifact's content (ecgpipe.model.content_digest)
    stage_seconds: dict[str, float] = {}
    wall_s: float | None = None
    store: str | None = None
    spectrograms_array: str | None = None
    feature_placement: str | None = None
    feature_img_s: float | None = None  # images through the backbone this run / feature stage seconds
    provenance: dict = {}
    recordings: RecordingScores | None = None  # [recordings] score = true: the endpoints over whole recordings


class EvaluationResult(_Result):
    """What ``ecgpipe evaluate`` measured: a trained model on another dataset, through a class mapping."""

    model: str
    model_digest: str
    model_preset: str  # the name of the config the model was trained with
    model_classes: list[str]
    dataset_config: str
    databases: list[str]
    dataset_classes: list[str]
    mapping: dict[str, str]  # model class -> dataset class
    # every record once: scored, excluded or unknown label, no row in the labels CSV, failed; and the windows of scored
    # records not scored for want of a configured rhythm at their centre (windows_without_reference)
    accounting: dict[str, int]
    failed: list[dict]
    results: dict[str, dict]  # "records" (CSV-labelled) and/or "windows" (rhythm-annotated)
    records: list[dict]
    wall_s: float
    # rhythm-annotated datasets: each endpoint both configs declare, over whole recordings as predict calls it
    recordings: dict[str, dict] = {}
    # the numeric libraries that differ from the model's training (ecgpipe.environment): figures may move a little
    software_differences: list[str] = []
