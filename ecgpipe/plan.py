"""Planning incremental runs: the content key of every unit of work, and whether the store already holds it.

Units and their keys (see ``keys.py``):

* record ``<db>/<rec>``: record file digests + database/segment/class settings + segment-stage code;
* segment table: which segments, in which row ("slot"); rebuilt in the flow process only;
* spectrogram chunk i: the ids and record keys of its rows + spectrogram settings + code;
* feature chunk i: its spectrogram chunk's key + feature settings + code;
* classification: every feature chunk key + classifier/CV settings + code.

Stable selection and slots keep unchanged work unchanged: a segment's chance of selection is a seeded hash of its own
identity (so adding a record displaces only what its own segments outrank), and a segment keeps its row from one run
to the next (new segments fill vacated rows first). A fixed record therefore changes only the chunks that hold its
segments or the ones they displace.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ecgpipe.config import PipelineConfig
from ecgpipe.keys import code_version, content_key, file_digest, record_files
from ecgpipe.markers import Markers

STAGES = ("segments", "spectrograms", "features", "classify")
# Feature settings that change speed, not values (beyond float rounding): not part of the feature keys, so moving a
# run from CPU to GPU, or to another batch size, does not recompute its features.
SPEED_ONLY = {"device", "batch_size", "torch_threads", "compile"}


def segment_uid(database: str, record: str, start: int) -> str:
    return f"{database}/{record}/{int(start):010d}"


def uid_order_key(uid: str) -> tuple[str, str, int]:
    db, rec, start = uid.rsplit("/", 2)
    return db, rec, int(start)


# -------------------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class RecordUnit:
    database: str
    record: str
    db_dir: str
    key: str  # everything stored for the record: windows and rhythm block
    label: str | None = None  # the record's label, for a database labelled per record by a CSV
    files_sha256: str = ""  # SHA-256 over the record's header, signal and annotation files (provenance)
    signal_key: str = ""  # the windows alone (what spectrograms are computed from): the key without the rhythm block

    @property
    def name(self) -> str:
        return f"{self.database}__{self.record}"


def record_unit(cfg: PipelineConfig, database: str, record: str, db_dir: str, label: str | None = None) -> RecordUnit:
    settings = cfg.database(database)
    digest = file_digest(record_files(db_dir, record, settings.annotator))
    signal_key = content_key(
        "segments",
        code_version("segments"),
        digest,
        # which records a run uses is not part of any one record's key: leaving a record out reuses the others
        settings.model_copy(update={"records": []}).model_dump(mode="json"),
        cfg.segments.model_dump(mode="json"),
        cfg.classes,
        label,
    )
    key = content_key(signal_key, "rhythm", code_version("rhythm"), cfg.rhythm.model_dump(mode="json"))
    return RecordUnit(database, record, str(db_dir), key, label, digest, signal_key)


def array_digest(data: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


# --------------------------------------------------------------------------------------------------- segment table
def selection_priority(uids: list[str], seed: int) -> np.ndarray:
    """A seeded pseudo-random rank per segment that depends only on the segment's own id."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(f"{seed}:{u}".encode(), digest_size=8).digest(), "big") for u in uids],
        dtype=np.uint64,
    )


def select_stable(uids: list[str], class_index: np.ndarray, caps: dict[int, int | None], seed: int) -> np.ndarray:
    """Per class, the ``cap`` candidates of lowest priority (all when uncapped); indices into ``uids``, sorted."""
    priority = selection_priority(uids, seed)
    chosen = []
    for c, cap in caps.items():
        members = np.flatnonzero(class_index == c)
        if cap is not None and len(members) > cap:
            members = members[np.argsort(priority[members], kind="stable")[:cap]]
        chosen.append(members)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def assign_slots(previous: list[str] | None, selected: list[str]) -> list[str]:
    """Row order of the new table: kept segments stay in their rows, new ones fill vacated rows, then the end.

    With no previous table (a cold run) the order is canonical: by database, record and start.
    """
    new_sorted = sorted(set(selected), key=uid_order_key)
    if not previous:
        return new_sorted
    keep = set(selected)
    slots: list[str | None] = [u if u in keep else None for u in previous]
    incoming = iter([u for u in new_sorted if u not in set(previous)])
    for i, u in enumerate(slots):
        if u is None:
            slots[i] = next(incoming, None)
    slots += list(incoming)
    # More rows vacated than filled: move rows from the end into the holes (only the holes' and the tail's chunks
    # change), then drop the empty tail.
    for hole in [i for i, u in enumerate(slots) if u is None]:
        while slots and slots[-1] is None:
            slots.pop()
        if hole >= len(slots):
            break
        slots[hole] = slots.pop()
    return [u for u in slots if u is not None]


# ------------------------------------------------------------------------------------------------- chunk keys
def spectrogram_array_name(cfg: PipelineConfig) -> str:
    h = content_key(cfg.segments.target_fs, cfg.window_shape, cfg.spectrogram.model_dump(mode="json"), cfg.run.chunk_size)
    return f"spectrograms/{h[:12]}"


def feature_array_name(cfg: PipelineConfig) -> str:
    h = content_key(spectrogram_array_name(cfg), cfg.features.model_dump(mode="json", exclude=SPEED_ONLY))
    return f"features/{h[:12]}"


def spectrogram_chunk_keys(cfg: PipelineConfig, uids: list[str], record_keys: dict[str, str]) -> list[str]:
    """Key of each spectrogram chunk: its rows' segment ids and records' signal keys, the settings, the code."""
    size = cfg.run.chunk_size
    settings = cfg.spectrogram.model_dump(mode="json")
    keys = []
    for start in range(0, len(uids), size):
        rows = uids[start : start + size]
        inputs = [(u, record_keys[u.rsplit("/", 1)[0]]) for u in rows]
        keys.append(content_key("spectrograms", code_version("spectrograms"), cfg.segments.target_fs, settings, inputs))
    return keys


def feature_groups(variants: list) -> list[list[int]]:
    """Indices of a sweep's feature settings grouped by everything but the layer: each group is one backbone whose
    layers are tapped in the same forward pass. Groups keep the order of first appearance."""
    groups: dict[str, list[int]] = {}
    for k, settings in enumerate(variants):
        groups.setdefault(content_key(settings.model_dump(mode="json", exclude={"layer"})), []).append(k)
    return list(groups.values())


def feature_chunk_keys(cfg: PipelineConfig, spectrogram_keys: list[str]) -> list[str]:
    settings = cfg.features.model_dump(mode="json", exclude=SPEED_ONLY)
    return [content_key("features", code_version("features"), settings, k) for k in spectrogram_keys]


def classify_key(cfg: PipelineConfig, feature_keys: list[str], table_key: str) -> str:
    return content_key(
        "classify",
        code_version("classify"),
        cfg.classifier.model_dump(mode="json"),
        cfg.cv.model_dump(mode="json"),
        feature_keys,
        table_key,
    )


def chunk_is_done(markers: Markers, stage: str, unit: str, key: str, read_rows) -> bool:
    """Marker present with this key, and the stored rows still hash to the digest the marker recorded."""
    marker = markers.read(stage, unit)
    if marker is None or marker.get("key") != key:
        return False
    try:
        return array_digest(read_rows()) == marker.get("digest")
    except Exception:  # unreadable or corrupt chunk
        return False
