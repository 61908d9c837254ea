"""The one validated configuration of an ecgpipe run.

Every choice the paper leaves open (databases, leads, sampling rate, classes, segment length, STFT parameters,
backbone and layer, classifier, cross-validation) is a field here with a documented default. A config file is TOML;
unknown keys and invalid values raise :class:`ConfigError` naming the key, e.g. ``spectrogram.nperseg``.

Presets ship inside the package (``ecgpipe/configs/*.toml``) and are selected by name: ``load_config("paper4")``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import AfterValidator, Field, StrictBool, ValidationError, ValidationInfo, field_validator, model_validator

from ecgpipe.beat_detail import BEAT_DETAIL_FEATURES
from ecgpipe.beats import BEAT_FEATURES
from ecgpipe.classifier_settings import ClassifierSettings, EndpointSettings, RecordingSettings, _Strict  # noqa: F401  (re-exported)
from ecgpipe.config_files import ConfigError, close_key, error_words, merge_overrides, preset_names, read_config, setting_file  # noqa: F401  (re-exported)
from ecgpipe.databases import KNOWN_DATABASES, leaves_its_folder
from ecgpipe.protocols import GROUPED, LEAVE_ONE_DATABASE_OUT, PROTOCOL_NAMES, STRATIFIED
from ecgpipe.rhythm import IRREGULARITY_FEATURES, RHYTHM_FEATURES
from ecgpipe.signal_settings import RhythmSettings, SamplingSettings, SegmentSettings, SpectrogramSettings  # noqa: F401  (re-exported)
from ecgpipe.waveform import WAVEFORM_FEATURES


def _known_protocol(name: str) -> str:
    if name not in PROTOCOL_NAMES:  # the one registry of protocol names: ecgpipe.protocols
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOL_NAMES)}")
    return name


ProtocolName = Annotated[str, AfterValidator(_known_protocol)]


class DatabaseSettings(_Strict):
    """One source database, read from ``DATA_DIR/<name>/`` (WFDB records listed in its RECORDS file)."""

    lead: list[str | int] = Field(
        default=[0],
        description="Preferred leads, first available wins: signal names (e.g. 'MLII') or 0-based channel indices.",
    )
    second_lead: list[str | int] = Field(
        default=[],
        description="With segments.n_leads = 2: preferred second lead, first available wins (never the first lead); "
        "empty means the record's first other channel.",
    )
    records: list[str] = Field(default=[], description="Subset of records to use; empty means every record in RECORDS.")
    fs: float | Literal["any"] | None = Field(
        default=None, description="Sampling rate every record must have (each is resampled to segments.target_fs); "
        "defaults to the known database's; 'any' for a database whose records differ (several recorders).")
    annotator: str = Field(default="atr", description="Annotation file extension holding the rhythm labels; 'edf+' "
                           "for EDF+ records labelled by their own annotations (each one with a duration is an episode of its text).")
    labels_csv: str | None = Field(
        default=None,
        description="Per-record labels instead of rhythm annotations: a CSV in the database folder with 'record,label' "
        "rows (PhysioNet/CinC 2017's REFERENCE.csv). Each record is one episode; its class is its windows' majority vote.",
    )
    labels_header: str | None = Field(
        default=None,
        description="Per-record labels from a comment line of each record's header, '#<field>: code,code,...' (the "
        "PhysioNet/CinC Challenge 2020/2021 layout: labels_header = 'Dx', SNOMED CT codes such as '#Dx: 164889003,"
        "59118001'). The record takes the class its codes name; codes of no class or of two classes give it no window "
        "(the report says which), an excluded code leaves it out.",
    )
    physionet: str | None = Field(default=None, description="PhysioNet slug for online download, e.g. 'mitdb/1.0.0'.")
    same_subject: dict[str, str] = Field(
        default={}, description="Records recorded from one subject: record -> canonical record (mitdb: 202 -> 201), "
        "or -> another database's subject as '<db>:<subject>' (nstdb's '118e24' = 'mitdb:118': its noise-stressed "
        "copies of mitdb 118 are that patient, kept in one grouped fold with him)."
    )
    subject: Literal["record", "folder", "labels_csv"] = Field("record", description="What one subject (patient) is, "
        "for the grouped protocol: 'record' (each record, after same_subject); 'folder' (the folder a record lies in "
        "as RECORDS lists it: ptbdb's patient001/s0010_re, Icentia11k's p00/p00000/p00000_s00); 'labels_csv' (the "
        "labels CSV's 'subject' column, header 'record,label,subject': PTB-XL's patient_id).")
    subject_pattern: str | None = Field(None, description="Instead of 'subject': a regular expression searched in "
        "the record's path as RECORDS lists it; its first group (else the whole match) is the subject, e.g. "
        "'p[0-9]{8}' for MIMIC-IV-ECG's files/p1000/p10000032/s40689238/40689238. A record it does not match fails.")
    checksum: Literal["verify", "warn", "off"] = Field("verify", description="Header checksums: 'verify' refuses data "
        "that do not match a recorded one (0 = not recorded, as in CinC 2017); 'warn' reads it with a warning; 'off'.")

    @field_validator("subject_pattern")
    @classmethod
    def _pattern_compiles(cls, v):
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return v

    @model_validator(mode="after")
    def _one_subject_rule(self):
        if self.subject_pattern is not None and self.subject != "record":
            raise ValueError(f"subject = {self.subject!r} and subject_pattern both say what a subject is: keep one")
        if self.subject == "labels_csv" and not self.labels_csv:
            raise ValueError("subject = 'labels_csv' needs labels_csv (a CSV with a 'subject' column)")
        if self.labels_csv and self.labels_header:
            raise ValueError("labels_csv and labels_header both give the records' labels: keep one")
        if self.labels_header is not None and not re.fullmatch(r"[A-Za-z0-9_ -]+", self.labels_header):
            raise ValueError(f"labels_header: {self.labels_header!r} is not a header comment field name like 'Dx' "
                             "(letters, digits, '_', '-', spaces; without '#' or ':')")
        return self

    @property
    def labelled_per_record(self) -> bool:
        """Each record has one label (a labels CSV or a header comment), not rhythm annotations."""
        return bool(self.labels_csv or self.labels_header)

    @property
    def records_are_subjects(self) -> bool:
        """Each record is its own subject (no patient ids): the grouped protocol is record-wise."""
        return self.subject == "record" and self.subject_pattern is None and not self.same_subject

    @field_validator("lead")
    @classmethod
    def _lead_not_empty(cls, v):
        if not v:
            raise ValueError("at least one lead name or index is needed")
        return v

    @field_validator("records")
    @classmethod
    def _records_once(cls, v):
        if twice := sorted(r for r, n in Counter(v).items() if n > 1):  # a count per name would be quadratic
            raise ValueError(f"records listed more than once: {twice}")
        if outside := [r for r in v if leaves_its_folder(r)]:
            raise ValueError(f"records {outside[:3]} are outside the database folder: records are named relative to it, "
                             "without '..' or a leading '/'")
        return v


def _torch_device(name: str) -> str:
    """A device torch can name (checked here: a run found 'gpu' only in its feature stage, after its spectrograms)."""
    if not re.fullmatch(r"auto|(cpu|mps|cuda|xpu)(:[0-9]+)?", name):
        raise ValueError(f"{name!r} is not a device: 'auto' (CUDA where a worker has it), 'cpu', 'cuda', 'cuda:1', 'mps'")
    return name


class FeatureSettings(_Strict):
    backbone: str = Field("efficientnet_lite0", description="Name in ecgpipe.backbones.BACKBONES.")
    layer: str | None = Field(None, description="Layer (graph node) to tap; None = the backbone's pooled output.")
    weights: Literal["pretrained", "random"] = Field(
        "pretrained", description="'random' is for tests only; reports made with it say so on their first line."
    )
    weights_path: str | None = Field(None, description="Local weights file (state dict), used before any download.")
    image_size: int = Field(224, ge=32, description="Side of the square CNN input, in pixels; at least 32: every "
                            "shipped backbone halves it five times (EfficientNet-Lite's 5x5 kernels fail below 32).")
    batch_size: int = Field(32, gt=0)
    device: Annotated[str, AfterValidator(_torch_device)] = Field(
        "auto", description="'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', 'mps', ...")
    torch_threads: int = Field(1, gt=0, description="CPU threads per worker process for inference (any engine).")
    engine: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto", description="What runs the backbone (ecgpipe/engines.py): 'auto' = ONNX Runtime on a CPU (5-6x eager "
        "PyTorch here, same features to ~1e-5), PyTorch on a GPU; 'openvino' needs the [openvino] extra. Speed only: "
        "not part of any key.")
    amp: StrictBool = Field(True, description="Mixed-precision autocast on CUDA (ignored on CPU).")
    amp_dtype: Literal["bfloat16", "float16"] = Field("float16", description=(
        "Autocast dtype on CUDA. float16: features within 0.5 % of float32 on an H200 (bfloat16: 13 %), same speed."))
    compile: StrictBool = Field(False, description="torch.compile the extractor (pays off on GPU for long runs).")


class SweepSettings(_Strict):
    """Several feature extractors x several classifiers in one run, sharing the segment and spectrogram stages.

    Each entry of ``features`` overrides keys of ``[features]`` (e.g. ``{backbone = "resnet18"}`` or
    ``{layer = "blocks.5"}``); an empty list means just ``[features]``. Empty ``classifiers`` means ``[classifier]``.
    """

    features: list[dict] = Field([], description="Feature-setting overrides, one extractor each.")
    classifiers: list[ClassifierSettings] = Field([], description="Classifiers evaluated on every extractor's features.")
    select_by: ProtocolName | None = Field(
        None, description="Protocol whose macro-F1 picks the best row (the saved model); default: grouped if run.")

    @model_validator(mode="after")
    def _no_repeats(self, info: ValidationInfo):
        # a row given twice (computed twice, shown twice): refused in a file being read, not in what a version stored
        if not (info.context or {}).get("as_written"):
            return self
        for part, dumps, aside in [("features", self.features, ""), ("classifiers", [c.model_dump(exclude={"name"}) for c in self.classifiers], " (names aside)")]:
            if repeat := next((j for j, d in enumerate(dumps) if d in dumps[:j]), None):
                raise ValueError(f"{part}[{repeat}] repeats {part}[{dumps.index(dumps[repeat])}]{aside}: one row computed twice")
        return self


class CVSettings(_Strict):
    n_splits: int = Field(10, ge=2)
    seed: int = Field(0, ge=0, lt=2**32, description="Seeds the folds (scikit-learn takes 0 to 2**32 - 1).")
    protocols: list[ProtocolName] = Field([STRATIFIED.name, GROUPED.name], min_length=1)


class RunSettings(_Strict):
    chunk_size: int = Field(256, gt=0, description="Segments per spectrogram/feature task (and per Zarr chunk).")
    n_workers: int = Field(2, gt=0, description="Worker processes of the local Dask cluster.")
    threads_per_worker: int = Field(1, gt=0)
    strict: StrictBool = Field(False, description="Fail on the first bad record instead of skipping it.")
    verify: Literal["stamp", "content"] = Field("stamp", description="How a rerun (and `ecgpipe status`) checks that a "
        "finished unit's stored data is intact: 'stamp' compares its files' names, sizes and modification times with "
        "those its marker recorded and reads the data only where they differ; 'content' reads and hashes every unit's "
        "data (the whole store, on every rerun). `--verify` sets 'content' for one run or status.")
    max_records: int | None = Field(None, gt=0, description="A pilot: at most this many records of each database, a sample "
                                    "seeded by sampling.seed (kept in RECORDS order); the full run later reuses their work.")
    fail_fast_after: int = Field(20, ge=0, description="Stop when the first N records all fail with one kind of error (0: never).")
    records_per_task: int = Field(64, gt=0, description="At most this many records per segments task (per-task overhead).")
    signal_s_per_task: float = Field(3600.0, gt=0, description="A segments task takes records until this much signal.")
    retries: int = Field(2, ge=0, description="Prefect retries of a task that failed for a transient reason.")
    retry_delay_s: list[float] = Field([2.0, 10.0], description="Back-off between retries (seconds, one per retry).")


class PipelineConfig(_Strict):
    name: str = "custom"
    description: str = ""
    databases: dict[str, DatabaseSettings]
    classes: dict[str, list[str]] = Field(description="class name -> rhythm labels (annotation aux notes).")
    segments: SegmentSettings = SegmentSettings()
    sampling: SamplingSettings = SamplingSettings()
    spectrogram: SpectrogramSettings = SpectrogramSettings()
    features: FeatureSettings = FeatureSettings()
    classifier: ClassifierSettings = ClassifierSettings()
    rhythm: RhythmSettings = RhythmSettings()
    sweep: SweepSettings = SweepSettings()
    endpoints: dict[str, EndpointSettings] = Field({}, description="Binary clinical endpoints, by name.")
    recordings: RecordingSettings = RecordingSettings()
    cv: CVSettings = CVSettings()
    run: RunSettings = RunSettings()

    @model_validator(mode="after")
    def _check(self):
        if not self.databases:
            raise ValueError("databases: at least one database is needed")
        for name, db in self.databases.items():
            if db.fs is None and name not in KNOWN_DATABASES:
                raise ValueError(f"databases.{name}: unknown database; give its 'fs' (and 'physionet' slug to download it)")
        if len(self.classes) < 2:
            raise ValueError("classes: at least two classes are needed")
        owner: dict[str, str] = {}
        # rhythm annotations' aux notes start with "(" ("(AFIB"); labels from a CSV ("A", "N") need not
        annotation_labels_only = not any(db.labelled_per_record for db in self.databases.values())
        for cls, labels in self.classes.items():
            if not labels:
                raise ValueError(f"classes.{cls}: no rhythm labels given")
            for label in labels:
                if annotation_labels_only and not label.startswith("("):
                    raise ValueError(f"classes.{cls}: rhythm label {label!r} must start with '(' like '(AFIB'")
                if label in owner:
                    raise ValueError(f"classes: label {label!r} is in both {owner[label]!r} and {cls!r}")
                if label in self.segments.exclude_labels:
                    raise ValueError(f"classes.{cls}: label {label!r} is also in segments.exclude_labels")
                owner[label] = cls
        for cls in self.sampling.per_class:
            if cls not in self.classes:
                raise ValueError(f"sampling.per_class.{cls}: not a class (classes: {sorted(self.classes)})")
        if self.spectrogram.nperseg > self.segment_length:
            raise ValueError(
                f"spectrogram.nperseg ({self.spectrogram.nperseg}) exceeds the segment length "
                f"({self.segment_length} samples at {self.segments.target_fs} Hz)"
            )
        step = self.spectrogram.nperseg - self.spectrogram.noverlap  # scipy.signal.spectrogram: no padding
        if 1 + (self.segment_length - self.spectrogram.nperseg) // step < 2:
            raise ValueError(f"spectrogram: a segment of {self.segment_length} samples gives one STFT frame (nperseg "
                             f"{self.spectrogram.nperseg}, noverlap {self.spectrogram.noverlap}): a spectrum, not an image "
                             "over time; lower nperseg, raise noverlap, or lengthen segments.length_s")
        for i, variant in enumerate(self.sweep.features):
            try:
                FeatureSettings.model_validate({**self.features.model_dump(), **variant})
            except ValidationError as err:
                first = err.errors()[0]
                key = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"sweep.features[{i}].{key}: {error_words(first, FeatureSettings)}") from None
        for clf in self.classifiers:
            if clf.inputs != "cnn" and not self.rhythm.enabled:
                raise ValueError(f"classifier {clf.label!r} uses rhythm features: set rhythm.enabled = true")
            if clf.level == "record" and not all(db.labelled_per_record for db in self.databases.values()):
                raise ValueError(f"classifier {clf.label!r}: level = 'record' needs databases labelled per record "
                                 "(labels_csv or labels_header)")
        for name, endpoint in self.endpoints.items():
            unknown = sorted(set(endpoint.classes) - set(self.classes))
            if unknown:
                raise ValueError(f"endpoints.{name}: {unknown} not in classes {sorted(self.classes)} (an endpoint "
                                 f"inherited through extends is removed with unset = [\"endpoints.{name}\"])")
            if len(set(endpoint.classes)) == len(self.classes):
                raise ValueError(f"endpoints.{name}: every class is positive; leave at least one out")
            unknown = sorted(set(endpoint.class_goals) - set(self.classes))
            if unknown:
                raise ValueError(f"endpoints.{name}.class_goals: {unknown} not in classes {sorted(self.classes)}")
        for key, names in [("cv.protocols", self.cv.protocols)] + [(f"endpoints.{n}.classes", e.classes) for n, e in self.endpoints.items()]:
            if twice := sorted(n for n, k in Counter(names).items() if k > 1):
                raise ValueError(f"{key}: {', '.join(twice)} listed twice")
        if LEAVE_ONE_DATABASE_OUT.name in self.cv.protocols and len(self.databases) < 2:
            raise ValueError(f"cv.protocols: {LEAVE_ONE_DATABASE_OUT.name} needs two databases or more (databases: "
                             f"{', '.join(self.databases)}): leave it out")
        if self.sweep.select_by is not None and self.sweep.select_by not in self.cv.protocols:
            raise ValueError(f"sweep.select_by: {self.sweep.select_by!r} is not in cv.protocols {self.cv.protocols}")
        if self.spectrogram.fmax > self.segments.target_fs / 2:
            raise ValueError(f"spectrogram.fmax ({self.spectrogram.fmax}) is above Nyquist ({self.segments.target_fs / 2})")
        # the spectrogram keeps the FFT bins in [fmin, fmax] (ecgpipe.spectrogram): none would make an empty image
        sp, fs = self.spectrogram, self.segments.target_fs
        bins = np.fft.rfftfreq(sp.nfft, d=1.0 / fs)
        if not ((bins >= sp.fmin) & (bins <= sp.fmax)).any():
            raise ValueError(f"spectrogram.fmin/fmax: [{sp.fmin:g}, {sp.fmax:g}] Hz holds no FFT bin (bins are "
                             f"{fs / sp.nfft:g} Hz apart with nfft = {sp.nfft} at target_fs = {fs:g} Hz): widen the band "
                             "or raise spectrogram.nfft")
        return self

    # --- derived values -------------------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    @property
    def label_to_class(self) -> dict[str, str]:
        return {label: cls for cls, labels in self.classes.items() for label in labels}

    @property
    def segment_length(self) -> int:
        return int(round(self.segments.length_s * self.segments.target_fs))

    @property
    def window_shape(self) -> tuple[int, ...]:
        """Shape of one stored segment: (length,) for one lead, (n_leads, length) for more."""
        length = self.segment_length
        return (length,) if self.segments.n_leads == 1 else (self.segments.n_leads, length)

    @property
    def classifier_label(self) -> str:
        """[classifier]'s row label, naming the rhythm block it sees."""
        return self.classifier.describe(self.rhythm_block)

    @property
    def rhythm_block(self) -> str:
        """Short name of the rhythm block's parts: 'RR', 'RR+irr' (irregularity), 'RR+wave' (waveform), 'RR+irr+wave'."""
        return "+".join(["RR", *(["irr"] if self.rhythm.irregularity else []), *(["beat"] if self.rhythm.beats else []),
                         *(["detail"] if self.rhythm.beat_detail else []), *(["wave"] if self.rhythm.waveform else [])])

    @property
    def rhythm_description(self) -> str:
        """The rhythm block in words, e.g. '8 RR-interval features and 11 waveform descriptors over 30 s'."""
        parts = [f"{len(RHYTHM_FEATURES)} RR-interval features",
                 *([f"{len(IRREGULARITY_FEATURES)} RR-irregularity features"] if self.rhythm.irregularity else []),
                 *([f"{len(BEAT_FEATURES)} beat-level features"] if self.rhythm.beats else []),
                 *([f"{len(BEAT_DETAIL_FEATURES)} beat-detail features"] if self.rhythm.beat_detail else []),
                 *([f"{len(WAVEFORM_FEATURES)} waveform descriptors"] if self.rhythm.waveform else [])]
        listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        own = self.rhythm.waveform and self.rhythm.waveform_seconds != self.rhythm.context_s
        return f"{listed} over {self.rhythm.context_s:g} s" + (f" (waveform over {self.rhythm.waveform_seconds:g} s)" if own else "")

    @property
    def rhythm_columns(self) -> tuple[str, ...]:
        """Names of the 'rhythm' block's columns: RR features, then irregularity features and waveform descriptors
        when enabled."""
        if not self.rhythm.enabled:
            return ()
        return (RHYTHM_FEATURES + (IRREGULARITY_FEATURES if self.rhythm.irregularity else ())
                + (BEAT_FEATURES if self.rhythm.beats else ())
                + (BEAT_DETAIL_FEATURES if self.rhythm.beat_detail else ()) + (WAVEFORM_FEATURES if self.rhythm.waveform else ()))

    @property
    def subject_word(self) -> str:
        """What the grouped folds keep together, in words: "record" where no database has patient ids (labelled per
        record by a CSV, each record its own subject: CinC 2017), else "patient"."""
        return "record" if all(self.database(n).labelled_per_record and self.database(n).records_are_subjects
                               for n in self.databases) else "patient"

    @property
    def segment_stride(self) -> int:
        return int(round(self.segments.stride_s * self.segments.target_fs))

    def database(self, name: str) -> DatabaseSettings:
        """Settings of one database with registry defaults (fs, physionet slug, same-subject map) filled in."""
        db = self.databases[name]
        known = KNOWN_DATABASES.get(name)
        if known is None:
            return db
        return db.model_copy(
            update={
                "fs": db.fs if db.fs is not None else known.fs,
                "physionet": db.physionet or known.physionet,
                # the user's pairs beside the registry's, not instead: a mapping of one's own must not silently undo
                # mitdb's 202 -> 201 (one patient) and put that patient on both sides of a grouped fold
                "same_subject": {**known.same_subject, **db.same_subject},
            }
        )

    @property
    def feature_variants(self) -> list[FeatureSettings]:
        """Every feature extractor of the run: the sweep's overrides of [features], or [features] alone."""
        if not self.sweep.features:
            return [self.features]
        return [FeatureSettings.model_validate({**self.features.model_dump(), **v}) for v in self.sweep.features]

    @property
    def classifiers(self) -> list[ClassifierSettings]:
        return list(self.sweep.classifiers) or [self.classifier]

    def with_stage(self, features: FeatureSettings | None = None, classifier: ClassifierSettings | None = None):
        """This config with one extractor/classifier of the sweep in place of [features]/[classifier]."""
        update = {}
        if features is not None:
            update["features"] = features
        if classifier is not None:
            update["classifier"] = classifier
        return self.model_copy(update=update)

    @property
    def selection_protocol(self) -> str:
        if self.sweep.select_by:
            return self.sweep.select_by
        return GROUPED.name if GROUPED.name in self.cv.protocols else self.cv.protocols[0]

    def class_cap(self, cls: str) -> int | None:
        return self.sampling.per_class.get(cls, self.sampling.max_per_class)



def _format_validation_error(err: ValidationError, source: str, layers: tuple = ()) -> str:
    """One line per invalid key; with an ``extends`` chain (``layers``: each file's own settings, the file first),
    the file that sets the key is named when it is not the file given."""
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = error_words(e, PipelineConfig)
        setter = setting_file(layers, e["loc"])
        where = "" if not e["loc"] and e["type"] == "value_error" else f"{key}: "  # a check across sections names its keys
        lines.append(f"  {where}{msg}" + (f" (set in {setter})" if setter and setter != layers[0][0] else ""))
    return "\n".join(lines)


def config_from_dict(data: dict, source: str = "<dict>", layers: tuple = (), as_written: bool = False) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data, context={"as_written": as_written})
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source, layers)) from None


def load_config(name_or_path: str | Path, overrides: dict | None = None) -> PipelineConfig:
    """Load a preset by name (``paper4``) or a TOML file by path; ``overrides`` is merged section by section.

    A file may start from another with ``extends = "<preset or path>"`` (a path relative to the file): its own
    values are merged over the base's as ``overrides`` are (tables key by key; lists and other values replace), so a
    lever config states only what it changes. ``[classes]`` is the exception: stated in the file, it replaces the
    base's whole (the order of the classes is their index). ``unset = ["endpoints.shockable", ...]`` removes keys or
    tables of the base (dotted paths) before the file's values are merged."""
    data, source, layers = read_config(name_or_path)
    if overrides:
        data = merge_overrides(data, overrides)
    return config_from_dict(data, source, layers, as_written=True)
