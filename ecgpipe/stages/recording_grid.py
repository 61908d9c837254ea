"""Stage 6a (``[recordings] score = true``), one unit per rhythm-annotated record: every window of the record on
``ecgpipe predict``'s grid (``ecgpipe.grid``), featurised by predict's own path, with the annotated rhythm each window
lies in; stored under ``recordings/<db>/<record>``.

The segment table holds sampled windows of the configured classes; a device meets every window of a recording,
rhythms no class covers and rhythm changes included. ``ecgpipe.stages.recording_scores`` calls each endpoint on
these windows out of fold, as ``ecgpipe predict`` would.

Key of a record's grid: the record's own key (its files, database, segment, class and rhythm settings), the CNN
feature array's name (spectrogram and feature settings that change values, the weights) and the code version.
Classification settings are not in it: a new classifier or endpoint rescores, it does not refeaturise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgpipe import store as zs
from ecgpipe.config import PipelineConfig
from ecgpipe.grid import grid_features
from ecgpipe.keys import array_digest, code_version, content_key
from ecgpipe.markers import Markers
from ecgpipe.recording_endpoints import window_labels
from ecgpipe.records import RhythmEpisode, read_record
from ecgpipe.stages import features
from ecgpipe.stages.segments import CLASSIFY_MODULES, RecordSummary, RecordUnit
from ecgpipe.store import Layout

STAGE = "recording_grid"


def code() -> str:
    return code_version(__name__, without=CLASSIFY_MODULES)


@dataclass(frozen=True)
class GridUnit:
    """One record's grid: the record (as the segments stage planned it), its patient and its content key."""

    record: RecordUnit
    subject: str
    key: str

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def shown(self) -> str:
        return self.record.shown


def grid_units(cfg: PipelineConfig, units: list[RecordUnit], records: list[RecordSummary]) -> list[GridUnit]:
    """The grid units of a run: every record the segments stage read (a record that failed there is reported there)
    of a rhythm-annotated database (a CSV-labelled record has one label, no rhythm to find in it)."""
    read = {r.name: r for r in records}
    # the blocks stored are those the classifier reads (CNN features, rhythm block or both)
    blocks = (features.array_name(cfg), cfg.classifier.inputs)
    return [GridUnit(u, read[u.shown].subject, content_key(STAGE, code(), u.key, *blocks))
            for u in units if u.shown in read and not cfg.database(u.database).labels_csv]


@dataclass
class RecordGrid:
    """A record's grid as stored: every window's start, whether it has features, its features and its annotated
    rhythm ("" across a rhythm change, before the first annotation or in an excluded label)."""

    starts: np.ndarray  # (n,) first sample at the target rate
    usable: np.ndarray  # (n,) bool: no NaN sample; only these have features
    cnn: np.ndarray | None  # (n_usable, D) float64
    rhythm: np.ndarray | None  # (n_usable, n_rhythm_columns) float64
    labels: np.ndarray  # (n,) str
    episodes: list[RhythmEpisode]
    fs: float  # the record's own rate (episode bounds are its samples)
    stride_s: float


def compute_grid(store: str, unit: GridUnit, cfg: PipelineConfig) -> str:
    """Read the record, featurise every window of its grid, store them; returns the digest of what was written."""
    r = unit.record
    settings = cfg.database(r.database)
    rec = read_record(r.db_dir, r.database, r.record, settings, nan_policy=cfg.segments.nan_policy,
                      n_leads=cfg.segments.n_leads)
    grid = grid_features(cfg, rec)
    starts_s = grid.starts / cfg.segments.target_fs
    labels = window_labels(rec.episodes, rec.fs, starts_s, cfg.segments.length_s, cfg.segments.exclude_labels)
    vocabulary = sorted(set(labels.tolist()) - {""})
    codes = np.array([0 if label == "" else vocabulary.index(label) + 1 for label in labels], dtype=np.int16)
    arrays = {"starts": grid.starts.astype(np.int64), "usable": grid.usable.astype(np.uint8), "label": codes}
    if grid.cnn is not None:
        arrays["cnn"] = grid.cnn.astype(np.float32)  # float32 as computed: exact
    if grid.rhythm is not None:
        arrays["rhythm"] = grid.rhythm.astype(np.float32)
    group = zs.open_group(f"{store}/{Layout.RECORDINGS}", mode="a").require_group(f"{r.database}/{r.record}")
    for name in set(group.array_keys()) - set(arrays):  # a block an earlier setting stored, not this one
        del group[name]
    for name, data in arrays.items():
        chunks = (max(1, min(len(data), 4096)), *data.shape[1:])
        arr = group.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype, overwrite=True, fill_value=0)
        if data.size:
            arr[...] = data
    group.attrs.put({"key": unit.key, "labels": vocabulary, "fs": rec.fs, "stride_s": grid.stride_s, "note": grid.note,
                     "episodes": [[ep.label, ep.start, ep.end] for ep in rec.episodes]})
    return _digest(arrays)


def _digest(arrays: dict[str, np.ndarray]) -> str:
    return content_key(*[(name, array_digest(arrays[name])) for name in sorted(arrays)])


def read_grid(store: str, database: str, record: str) -> RecordGrid:
    group = zs.open_group(f"{store}/{Layout.recording(database, record)}", mode="r")
    attrs = dict(group.attrs)
    names = set(group.array_keys())
    block = lambda name: group[name][...].astype(np.float64) if name in names else None  # noqa: E731
    vocabulary = np.array(["", *attrs["labels"]], dtype=object)
    return RecordGrid(
        starts=group["starts"][...].astype(np.int64), usable=group["usable"][...].astype(bool), cnn=block("cnn"),
        rhythm=block("rhythm"), labels=vocabulary[group["label"][...].astype(np.int64)].astype(str),
        episodes=[RhythmEpisode(label, int(a), int(b)) for label, a, b in attrs["episodes"]], fs=float(attrs["fs"]),
        stride_s=float(attrs["stride_s"]))


def grid_done(store: str, markers: Markers, unit: GridUnit) -> bool:
    """Whether the record's stored grid is current: its marker has the unit's key and its arrays hash to the marker's
    digest (the key is checked first: a stale grid costs no read)."""
    marker = markers.read(STAGE, unit.name)
    if marker is None or marker.get("key") != unit.key:
        return False
    try:
        group = zs.open_group(f"{store}/{Layout.recording(unit.record.database, unit.record.record)}", mode="r")
        digest = _digest({name: group[name][...] for name in group.array_keys()})
    except Exception:  # missing or unreadable arrays
        return False
    return digest == marker.get("digest")
