"""Stage 1, one unit per record: read and validate a WFDB record, cut its labelled windows and compute their rhythm
block, stored as the record bundle ``records/<db>/<record>.zip`` (windows, starts, episode index, rhythm features; attrs).

Key of a record: its files' digest, its database's settings, the segment and class settings, its per-record label, its
subject id and the code version. The *signal key* leaves out the rhythm block (its settings and its
modules) and the subject rule: spectrograms are computed from the windows alone, so changing the rhythm block or who
is one patient recomputes records and classifiers, not spectrograms or CNN features.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import wfdb

from ecgpipe import store as zs
from ecgpipe.config import PipelineConfig
from ecgpipe.databases import subject_id
from ecgpipe.dataset import flat_windows, record_windows
from ecgpipe.edf import read_edf_header
from ecgpipe.keys import array_digest, code_version, content_key, edf_record_file, file_digest, header_lines, record_files
from ecgpipe.labels import check_record_label, check_subject_column, classes_named, near_labels, record_labels
from ecgpipe.markers import Markers
from ecgpipe.records import RecordError, read_record
from ecgpipe.rhythm_block import window_rhythm_features
from ecgpipe.sources import database_dir, resolve_data_dir, selected_records
from ecgpipe.wfdb_signals import inferred_length

STAGE = "segments"
# Modules that compute only the rhythm block: left out of the signal key's code version.
RHYTHM_MODULES = ("ecgpipe.rhythm_block", "ecgpipe.rhythm", "ecgpipe.beats", "ecgpipe.beat_detail", "ecgpipe.waveform")
# Settings and words only the classification stage reads (classifiers, endpoints, protocol names): left out of every
# upstream key, so that adding a classifier row or an endpoint recomputes no record, spectrogram or CNN chunk.
CLASSIFY_MODULES = ("ecgpipe.classifier_settings", "ecgpipe.protocols")


def code() -> str:
    return code_version(__name__, without=CLASSIFY_MODULES)


def signal_code() -> str:
    return code_version(__name__, without=RHYTHM_MODULES + CLASSIFY_MODULES)


@dataclass(frozen=True)
class RecordUnit:
    database: str
    record: str
    db_dir: str
    key: str  # everything stored for the record: windows and rhythm block
    label: str | None = None  # the record's label, for a database labelled per record (CSV or header)
    files_sha256: str = ""  # SHA-256 over the record's header, signal and annotation files (provenance)
    signal_key: str = ""  # the windows alone (what spectrograms are computed from): the key without the rhythm block
    seconds: float = 0.0  # the record's length from its header (0 when unreadable): how records are batched into tasks
    subject: str = ""  # "<db>:<subject>" by the database's subject rule, found at planning
    subject_error: str | None = None  # why the rule gives the record no subject (the record then fails by name)

    @property
    def name(self) -> str:
        """The unit's marker name."""
        return f"{self.database}__{self.record}"

    @property
    def shown(self) -> str:
        """The unit as people name it: ``<db>/<record>``."""
        return f"{self.database}/{self.record}"


@dataclass(frozen=True, eq=False)  # eq=False: array fields (compare summaries by their fields)
class RecordSummary:
    """What the rest of the pipeline needs to know of a record whose windows are stored."""

    database: str
    record: str
    subject: str
    lead: str
    n_windows: int
    labels: list[str]
    key: str
    signal_key: str
    duration_s: float = 0.0
    no_window_reason: str | None = None  # why a record yields no window (it is listed in the report)
    flat_windows: int = 0  # windows in which a lead is a flat line (lead off): used with their label, named in the report
    read_warnings: list[str] = field(default_factory=list)  # what was read anyway (EcgRecord.notes): named in the report
    # per window, as arrays (the segment table is planned from these, without reading any record again; arrays, not
    # lists: a list holds one Python object per window, and the flow process holds every record's summary)
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # start, target-rate samples
    class_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))

    def __post_init__(self) -> None:
        object.__setattr__(self, "starts", np.asarray(self.starts, dtype=np.int64))
        object.__setattr__(self, "class_index", np.asarray(self.class_index, dtype=np.int16))

    @property
    def name(self) -> str:
        return f"{self.database}/{self.record}"

    def to_json(self) -> dict:
        return {**asdict(self), "starts": self.starts.tolist(), "class_index": self.class_index.tolist()}

    @classmethod
    def from_json(cls, doc: dict) -> RecordSummary:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})


# Which records share a subject: the record's subject id is part of its key (its summary names it), the rule is
# part of no signal key (a new rule reassigns folds without recomputing a spectrogram) and of no key at all (a rule
# that moves a few records recomputes those few).
SUBJECT_SETTINGS = ("same_subject", "subject", "subject_pattern")
# Settings that only decide whether a record is read at all (its checksum policy, the rate it must have) or where it
# is downloaded from: the windows of a record read under either are the same, so they are left out of the signal key
# (switching checksum = "warn" on after a first run rejected a few records recomputes no spectrogram or CNN chunk) but
# kept in the record's key (switching back must reject those records again, not reuse them).
ADMISSION_SETTINGS = ("checksum", "fs", "physionet")


def record_unit(cfg: PipelineConfig, database: str, record: str, db_dir: str, label: str | None = None,
                csv_subject: str | None = None, digest_of: Callable[[list[Path]], str] = file_digest) -> RecordUnit:
    """A record's unit of work, its subject (``csv_subject``: its cell in the labels CSV) and its content keys.
    ``digest_of``: ``file_digest``, or a cache of it (``input_digests.InputDigests``)."""
    settings = cfg.database(database)
    try:
        subject, subject_error = subject_id(database, record, settings.same_subject, settings.subject,
                                            settings.subject_pattern, csv_subject), None
    except ValueError as exc:
        subject, subject_error = "", str(exc)
    digest = digest_of(record_files(db_dir, record, settings.annotator))
    signal_key = content_key(
        STAGE,
        signal_code(),
        digest,
        # which records a run uses is not part of any one record's key: leaving a record out reuses the others
        settings.model_dump(mode="json", exclude={"records", *SUBJECT_SETTINGS, *ADMISSION_SETTINGS}),
        cfg.segments.model_dump(mode="json"),
        # in order: a window's class index is its class's position, and content_key sorts dict keys
        list(cfg.classes.items()),
        label,
    )
    key = content_key(signal_key, "rhythm", code(), cfg.rhythm.model_dump(mode="json"), subject or subject_error,
                      settings.model_dump(mode="json", include=set(ADMISSION_SETTINGS)))
    return RecordUnit(database, record, str(db_dir), key, label, digest, signal_key, header_seconds(db_dir, record),
                      subject, subject_error)


def header_seconds(db_dir: str, record: str) -> float:
    """The record's length in seconds from its header's record line (``name nsig fs nsamp ...``), or an EDF file's
    data records; 0 when unknown."""
    edf = edf_record_file(db_dir, record)
    if edf:
        try:
            header = read_edf_header(edf)
            return max(header.n_records, 0) * header.record_s
        except Exception:  # a bad file is named by the record's own read, not by task planning
            return 0.0
    try:
        line = header_lines(os.path.join(str(db_dir), f"{record}.hea"))[0]
        fs = float(line[2].split("/")[0].split("(")[0])
        if len(line) < 4:  # no length on the record line (optional in WFDB): the signal file's size says it
            try:
                header = wfdb.rdheader(os.path.join(str(db_dir), record))
            except Exception:  # a malformed header is named by the record's own read
                return 0.0
            return (inferred_length(os.path.join(str(db_dir), record), header) or 0) / fs
        return int(line[3]) / fs
    except (OSError, IndexError, ValueError, ZeroDivisionError):
        return 0.0


def batches(units: list[RecordUnit], max_records: int, max_seconds: float) -> list[list[RecordUnit]]:
    """Consecutive records grouped into tasks of at most ``max_records`` records and about ``max_seconds`` of signal:
    thousands of short records cost a few dozen tasks, not thousands; long records still get a task each."""
    out: list[list[RecordUnit]] = []
    seconds = 0.0
    for u in units:
        if not out or len(out[-1]) >= max_records or seconds >= max_seconds:
            out.append([])
            seconds = 0.0
        out[-1].append(u)
        seconds += u.seconds
    return out


def plan_records(cfg: PipelineConfig, data_dir: str | Path | None, download: bool = True,
                 digest_of: Callable[[list[Path]], str] = file_digest) -> list[RecordUnit]:
    """Every record unit of a run, database by database (``download=False``: never fetch a missing database)."""
    root = resolve_data_dir(data_dir)
    units = []
    for db in cfg.databases:
        folder = database_dir(cfg, db, root, download=download)
        settings = cfg.database(db)
        names = selected_records(cfg, db, folder)
        table = record_labels(settings, folder, names, cfg.label_to_class, set(cfg.segments.exclude_labels))
        check_subject_column(settings, table, folder)
        units += [record_unit(cfg, db, rec, str(folder), table.labels.get(rec),
                              table.subject_of(rec, settings.same_subject), digest_of)
                  for rec in names]
    return units


def compute_record(store: str, unit: RecordUnit, cfg: PipelineConfig) -> tuple[RecordSummary, str]:
    """Read and validate one record, cut its labelled windows, store them; returns its summary and the windows'
    digest (for its marker). Raises ``RecordError`` naming the file and the problem."""
    settings = cfg.database(unit.database)
    if settings.labelled_per_record:
        check_record_label(os.path.join(unit.db_dir, unit.record), unit.label, settings,
                           set(cfg.label_to_class), set(cfg.segments.exclude_labels))
    if unit.subject_error:
        raise RecordError(os.path.join(unit.db_dir, unit.record), unit.subject_error)
    rec = read_record(unit.db_dir, unit.database, unit.record, settings, nan_policy=cfg.segments.nan_policy,
                      record_label=unit.label if settings.labelled_per_record else None, n_leads=cfg.segments.n_leads,
                      warn=False)  # in the summary instead: a worker's log is not where anyone looks
    found = record_windows(rec, cfg)
    rhythm = window_rhythm_features(rec, found.starts, cfg) if cfg.rhythm.enabled else None
    duration = rec.signals.shape[1] / rec.fs
    summary = RecordSummary(
        database=unit.database,
        record=unit.record,
        subject=unit.subject,
        lead="+".join(rec.leads),
        n_windows=int(len(found.starts)),
        labels=sorted({ep.label for ep in rec.episodes}),
        key=unit.key,
        signal_key=unit.signal_key,
        duration_s=round(float(duration), 3),
        no_window_reason=None if len(found.starts) else no_window_reason(rec.episodes, duration, cfg, found.n_with_gaps),
        flat_windows=int(flat_windows(found.windows).sum()),
        read_warnings=rec.notes + [f"{rec.path}: rhythm label {label!r} is not used: it differs from the configured "
                                   f"{like!r} only in case or spaces (labels are matched as written: add it to the "
                                   "class's labels to use it)"
                                   for label, like in near_labels([ep.label for ep in rec.episodes], cfg.label_to_class,
                                                                  cfg.segments.exclude_labels)],
        starts=found.starts,
        class_index=found.class_index,
    )
    attrs = {
        "episodes": [[ep.label, ep.start, ep.end] for ep in rec.episodes],
        "fs": rec.fs,
        "path": rec.path,
        "n_nan": rec.n_nan,
        **summary.to_json(),
    }
    written = zs.write_record_windows(store, unit.database, unit.record, found.windows, found.starts, found.episode, attrs, rhythm)
    # the digest of what was written, as stored_record_digest reads it back later (no second read here)
    return summary, content_key(*[(name, array_digest(written.arrays[name])) for name in sorted(written.arrays)])


def stored_record_digest(store: str, unit: RecordUnit) -> str:
    """One digest over every array stored for the record (windows, starts, episode indices, rhythm block)."""
    arrays = zs.read_record_windows(store, unit.database, unit.record).arrays
    return content_key(*[(name, array_digest(arrays[name])) for name in sorted(arrays)])


def _stored_summary(store: str, markers: Markers, unit: RecordUnit, key_field: str) -> RecordSummary | None:
    """The summary in the record's marker when its ``key_field`` ("key" or "signal_key") is the unit's and its stored
    arrays are intact (``Markers.intact``; the key is checked first: a stale record costs no read)."""
    marker = markers.read(STAGE, unit.name)
    if marker is None or marker.get("summary", {}).get(key_field) != getattr(unit, key_field):
        return None
    if not markers.intact(marker, record_files_in_store(unit), lambda: stored_record_digest(store, unit)):
        return None  # missing, unreadable or changed arrays
    return RecordSummary.from_json(marker["summary"])


def record_files_in_store(unit: RecordUnit) -> str:
    """The record's bundle, relative to the output location (its marker's ``files``)."""
    return zs.in_store(zs.Layout.record(unit.database, unit.record))


def no_window_reason(episodes, duration_s: float, cfg: PipelineConfig, n_with_gaps: int = 0) -> str:
    """Why a record yields no window, in words (``n_with_gaps``: windows of a configured class left out for missing
    samples). The first word is the report's category (``report_build.record_accounting``)."""
    labels = sorted({ep.label for ep in episodes})
    excluded = [label for label in labels if label in cfg.segments.exclude_labels]
    if labels and len(excluded) == len(labels):
        return f"label(s) {excluded} excluded (segments.exclude_labels)"
    if len(labels) == 1 and len(named := classes_named(labels[0], cfg.label_to_class)) > 1:  # a header's codes
        return "codes of more than one class (" + "; ".join(f"{c}: {', '.join(v)}" for c, v in named.items()) + ")"
    if duration_s < cfg.segments.length_s:
        return f"shorter ({math.floor(duration_s * 1000) / 1000:g} s) than one window ({cfg.segments.length_s:g} s)"
    if n_with_gaps:  # its windows were there, each with a gap: nan_policy = 'drop' left them out
        return (f"no {cfg.segments.length_s:g}-s window without missing samples: each of its {n_with_gaps} window(s) "
                "inside an episode of a configured class holds NaN (segments.nan_policy = 'drop' leaves them out)")
    return (f"no {cfg.segments.length_s:g}-s stretch inside an episode of a configured class "
            f"(labels found: {', '.join(labels) or 'none'})")


def record_done(store: str, markers: Markers, unit: RecordUnit) -> RecordSummary | None:
    """The record's summary if its stored windows and rhythm block are complete and current, else None."""
    return _stored_summary(store, markers, unit, "key")


def windows_done(store: str, markers: Markers, unit: RecordUnit) -> RecordSummary | None:
    """The record's summary, with its current key, if its stored *windows* are current (its rhythm block may be
    stale): what planning the downstream stages needs."""
    summary = _stored_summary(store, markers, unit, "signal_key")
    return None if summary is None else dataclasses.replace(summary, key=unit.key)
