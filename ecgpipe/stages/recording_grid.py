"""Stage 6a (``[recordings] score = true``), one unit per rhythm-annotated record: every window of the record on
``ecgpipe predict``'s grid (``ecgpipe.grid``), featurised by predict's own path, with the record's rhythm episodes;
stored as the record bundle ``recordings/<settings>/<db>/<record>.zip``.

The segment table holds sampled windows of the configured classes; a device meets every window of a recording,
rhythms no class covers and rhythm changes included. ``ecgpipe.stages.recording_scores`` calls each endpoint on
these windows out of fold, as ``ecgpipe predict`` would.

Key of a record's grid: the record's files, its database settings, the segment settings, the blocks the classifier
reads (the rhythm settings; the spectrogram and feature settings that change values) and the code version. Not the
classes, the classifier or the endpoints: a new classifier or decision setting rescores, it does not refeaturise.
``<settings>`` names everything but the record, so grids of other settings (another extractor of a sweep) sit side
by side and switching back costs nothing. The stage modules upstream (table, spectrograms, features) only plan and
key; their code is left out of the version (``GRID_CODE_WITHOUT``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgpipe import store as zs
from ecgpipe.config import PipelineConfig
from ecgpipe.grid import grid_features
from ecgpipe.keys import array_digest, code_version, content_key
from ecgpipe.markers import Markers
from ecgpipe.records import RhythmEpisode, read_record
from ecgpipe.stages.features import value_settings
from ecgpipe.stages.segments import ADMISSION_SETTINGS, CLASSIFY_MODULES, SUBJECT_SETTINGS, RecordSummary, RecordUnit
from ecgpipe.store import Layout

STAGE = "recording_grid"
# what the grid's values do not depend on: the classifier's settings, and the upstream stage modules this one reads
# only for value_settings (their code plans and keys the sampled windows' arrays)
GRID_CODE_WITHOUT = CLASSIFY_MODULES + ("ecgpipe.stages.table", "ecgpipe.stages.spectrograms", "ecgpipe.stages.features")


def code() -> str:
    return code_version(__name__, without=GRID_CODE_WITHOUT)


@dataclass(frozen=True)
class GridUnit:
    """One record's grid: the record (as the segments stage planned it), its patient, the grid's settings (its slot
    in the store) and its content key."""

    record: RecordUnit
    subject: str
    settings: str
    key: str

    @property
    def name(self) -> str:
        return f"{self.settings}__{self.record.name}"

    @property
    def shown(self) -> str:
        return self.record.shown

    @property
    def path(self) -> str:
        return Layout.recording(self.settings, self.record.database, self.record.record)


# What of [segments] a grid reads: its windows' length and rate, their leads, missing samples. Not the training
# windows' stride, tail or excluded labels (a grid covers the whole record, one window length apart).
GRID_SEGMENT_SETTINGS = {"target_fs", "length_s", "n_leads", "nan_policy"}


def grid_settings(cfg: PipelineConfig) -> dict:
    """Every setting a grid's values depend on, but the record's own: the windows' length, rate, leads and missing
    samples, and the blocks the classifier reads."""
    inputs = cfg.classifier.inputs
    return {"segments": cfg.segments.model_dump(mode="json", include=GRID_SEGMENT_SETTINGS), "inputs": inputs,
            "rhythm": cfg.rhythm.model_dump(mode="json") if inputs != "cnn" else None,
            "spectrogram": cfg.spectrogram.model_dump(mode="json") if inputs != "rhythm" else None,
            "features": value_settings(cfg.features) if inputs != "rhythm" else None}


def settings_name(cfg: PipelineConfig) -> str:
    """The grid slot of these settings: ``recordings/<settings_name>/<db>/<record>.zip``."""
    return content_key(grid_settings(cfg))[:12]


def grid_unit(cfg: PipelineConfig, unit: RecordUnit, subject: str) -> GridUnit:
    settings = grid_settings(cfg)
    # who is one patient decides folds, not a recording's windows: a new subject rule rescores, it does not refeaturise
    # nor do the settings that only admit or refuse a record: grids are made of the records the segments stage read
    database = cfg.database(unit.database).model_dump(mode="json", exclude={"records", *SUBJECT_SETTINGS, *ADMISSION_SETTINGS})
    return GridUnit(unit, subject, settings_name(cfg), content_key(STAGE, code(), unit.files_sha256, database, settings))


def grid_units(cfg: PipelineConfig, units: list[RecordUnit], records: list[RecordSummary]) -> list[GridUnit]:
    """The grid units of a run: every record the segments stage read (a record that failed there is reported there)
    of a rhythm-annotated database (a CSV-labelled record has one label, no rhythm to find in it)."""
    read = {r.name: r for r in records}
    return [grid_unit(cfg, u, read[u.shown].subject) for u in units
            if u.shown in read and not cfg.database(u.database).labelled_per_record]


@dataclass
class RecordGrid:
    """A record's grid as stored: every window's start, whether it has features, its features, and the record's
    rhythm episodes (each window's annotated rhythm is found at scoring time: ``recording_endpoints.window_labels``)."""

    starts: np.ndarray  # (n,) first sample at the target rate
    usable: np.ndarray  # (n,) bool: no NaN sample; only these have features
    cnn: np.ndarray | None  # (n_usable, D) float64
    rhythm: np.ndarray | None  # (n_usable, n_rhythm_columns) float64
    episodes: list[RhythmEpisode]
    fs: float  # the record's own rate (episode bounds are its samples)
    stride_s: float


def compute_grid(store: str, unit: GridUnit, cfg: PipelineConfig) -> str:
    """Read the record, featurise every window of its grid, store them; returns the digest of what was written."""
    r = unit.record
    settings = cfg.database(r.database)
    rec = read_record(r.db_dir, r.database, r.record, settings, nan_policy=cfg.segments.nan_policy,
                      n_leads=cfg.segments.n_leads, warn=False)  # the segments stage's summary names them already
    grid = grid_features(cfg, rec)
    arrays = {"starts": grid.starts.astype(np.int64), "usable": grid.usable.astype(np.uint8)}
    if grid.cnn is not None:
        arrays["cnn"] = grid.cnn.astype(np.float32)  # float32 as computed: exact
    if grid.rhythm is not None:
        arrays["rhythm"] = grid.rhythm.astype(np.float32)
    attrs = {"key": unit.key, "fs": rec.fs, "stride_s": grid.stride_s, "note": grid.note,
             "episodes": [[ep.label, ep.start, ep.end] for ep in rec.episodes]}
    written = zs.write_bundle(store, unit.path, arrays, attrs, chunk_rows=4096)
    return _digest(written.arrays, written.attrs)  # as read back (JSON types), as grid_done reads them


def _digest(arrays: dict[str, np.ndarray], attrs: dict) -> str:
    return content_key(*[(name, array_digest(arrays[name])) for name in sorted(arrays)], attrs)


def read_grid(store: str, path: str) -> RecordGrid:
    """The grid stored at ``path`` (``GridUnit.path``)."""
    bundle = zs.read_bundle(store, path)
    arrays, attrs = bundle.arrays, bundle.attrs
    block = lambda name: arrays[name].astype(np.float64) if name in arrays else None  # noqa: E731
    return RecordGrid(
        starts=arrays["starts"].astype(np.int64), usable=arrays["usable"].astype(bool), cnn=block("cnn"),
        rhythm=block("rhythm"), episodes=[RhythmEpisode(label, int(a), int(b)) for label, a, b in attrs["episodes"]],
        fs=float(attrs["fs"]), stride_s=float(attrs["stride_s"]))


def grid_done(store: str, markers: Markers, unit: GridUnit) -> bool:
    """Whether the record's stored grid is current: its marker has the unit's key and its arrays and attributes hash
    to the marker's digest, or its files are unchanged (``Markers.intact``; the key is checked first: a stale grid
    costs no read)."""
    marker = markers.read(STAGE, unit.name)
    if marker is None or marker.get("key") != unit.key:
        return False

    def digest() -> str:
        bundle = zs.read_bundle(store, unit.path)
        return _digest(bundle.arrays, bundle.attrs)

    return markers.intact(marker, zs.in_store(unit.path), digest)
