"""Stage 2, one unit per run: the segment table ``segments/*``, the dataset every later stage reads.

From every record's stored windows: a capped, seeded, *stable* selection per class, and a stable row ("slot") for each
selected segment. Stable selection and slots keep unchanged work unchanged: a segment's chance of selection is a
seeded hash of its own identity (so adding a record displaces only what its own segments outrank), and a segment keeps
its row from one run to the next (new segments fill vacated rows first). A fixed record therefore changes only the
chunks that hold its segments or the ones they displace.

The table is written by the flow process only (one writer). Its key covers the rows, the records' keys, the chunking,
the classes and this module's code; spectrogram chunk keys carry this module's code version too, so an edit here
recomputes everything downstream.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ecgpipe import store as zs
from ecgpipe.config import PipelineConfig
from ecgpipe.errors import PipelineError
from ecgpipe.keys import array_digest, code_version, content_key
from ecgpipe.markers import Markers
from ecgpipe.stages.segments import CLASSIFY_MODULES, RHYTHM_MODULES, RecordSummary
from ecgpipe.store import Layout

STAGE = "table"
UNIT = "table"


def code() -> str:
    # the rhythm block's code reaches the table through the records' keys, not through this version
    return code_version(__name__, without=RHYTHM_MODULES + CLASSIFY_MODULES)


# --------------------------------------------------------------------------------------------------- segment ids
@dataclass(frozen=True, order=True)
class SegmentId:
    """One segment: a window of a record, by its start (target-rate samples). ``str()`` gives the stored form
    ``<db>/<record>/<start, 10 digits>``, whose sort order is (database, record, start)."""

    database: str
    record: str
    start: int

    def __str__(self) -> str:
        return f"{self.database}/{self.record}/{int(self.start):010d}"

    @property
    def record_name(self) -> str:
        return f"{self.database}/{self.record}"

    @classmethod
    def parse(cls, uid: str) -> SegmentId:
        database, record, start = uid.rsplit("/", 2)
        return cls(database, record, int(start))


def segment_uid(database: str, record: str, start: int) -> str:
    return str(SegmentId(database, record, start))


def uid_order_key(uid: str) -> tuple[str, str, int]:
    s = SegmentId.parse(uid)
    return s.database, s.record, s.start


def record_of(uid: str) -> str:
    """``<db>/<record>`` of a stored segment id."""
    return uid.rsplit("/", 1)[0]


def database_of(uid: str) -> str:
    return uid.split("/", 1)[0]


# ------------------------------------------------------------------------------------------------------ selection
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


def class_caps(config: PipelineConfig) -> dict[int, int | None]:
    return {i: config.class_cap(name) for i, name in enumerate(config.class_names)}


# --------------------------------------------------------------------------------------------------------- table
@dataclass(frozen=True)
class SegmentTable:
    """The planned (or stored) segment table: which segments, in which row, from which records."""

    uids: list[str]  # row order ("slots")
    record_keys: dict[str, str]  # <db>/<record> -> record key
    signal_keys: dict[str, str]  # <db>/<record> -> signal key (what spectrograms depend on)
    subjects: dict[str, str]  # <db>/<record> -> subject id
    n_candidates: int
    key: str

    def __len__(self) -> int:
        return len(self.uids)

    def to_json(self) -> dict:
        return {"uids": self.uids, "record_keys": self.record_keys, "signal_keys": self.signal_keys,
                "subjects": self.subjects, "n_candidates": self.n_candidates, "key": self.key}


@dataclass(frozen=True)
class Candidates:
    """Every window of every record: its id, class and where it is stored (database, record, row)."""

    uids: list[str]
    class_index: np.ndarray
    where: list[tuple[str, str, int]]


def read_candidates(store: str, records: list[RecordSummary]) -> Candidates:
    uids, classes, where = [], [], []
    for info in records:
        group, attrs = zs.read_record_windows(store, info.database, info.record)
        starts = group["starts"][...]
        uids += [segment_uid(info.database, info.record, s) for s in starts]
        classes.append(np.asarray(attrs["class_index"], dtype=np.int16))
        where += [(info.database, info.record, row) for row in range(len(starts))]
    class_index = np.concatenate(classes) if classes else np.zeros(0, np.int16)
    return Candidates(uids, class_index, where)


def plan_table(store: str, records: list[RecordSummary], cfg: PipelineConfig) -> tuple[SegmentTable, Candidates]:
    """The segment table a run would write (selection and row order), read-only; and every candidate window."""
    cand = read_candidates(store, records)
    counts = np.bincount(cand.class_index, minlength=len(cfg.class_names))
    empty = [cfg.class_names[c] for c in range(len(cfg.class_names)) if counts[c] == 0]
    if empty:
        raise PipelineError(
            f"class(es) {empty} have no segments: none of their labels ({[cfg.classes[c] for c in empty]}) occur in "
            f"an episode of {cfg.segments.length_s} s or more in the {len(records)} records read. "
            f"Check the class labels and databases in the config."
        )
    chosen = select_stable(cand.uids, cand.class_index, class_caps(cfg), cfg.sampling.seed)
    root = zs.open_root(store, mode="r")
    previous = root[Layout.SEGMENTS].attrs.get("uids") if Layout.SEGMENTS in root else None
    slots = assign_slots(previous, [cand.uids[i] for i in chosen])
    record_keys = {r.name: r.key for r in records}
    signal_keys = {r.name: r.signal_key for r in records}
    subjects = {r.name: r.subject for r in records}
    key = content_key(STAGE, code(), slots, record_keys, cfg.run.chunk_size, cfg.classes)
    return SegmentTable(slots, record_keys, signal_keys, subjects, int(len(cand.uids)), key), cand


def stored_table_key(store: str) -> str | None:
    """Key of the table in the store, when it is complete."""
    root = zs.open_root(store, mode="r")
    if Layout.SEGMENTS not in root or Layout.segment("signal") not in root:
        return None
    return root[Layout.SEGMENTS].attrs.get("key")


def stored_digests(store: str) -> dict[str, str]:
    """Digest of every array of the stored segment table."""
    group = zs.open_group(f"{store}/{Layout.SEGMENTS}", mode="r")
    return {name: array_digest(group[name][...]) for name in sorted(group.array_keys())}


def table_is_done(store: str, table: SegmentTable, markers: Markers) -> bool:
    """The stored table has this key and its arrays still hash to the digests its marker recorded (a corrupted
    chunk of segments/* rewrites the table before any spectrogram reads it)."""
    if stored_table_key(store) != table.key:
        return False
    marker = markers.read(STAGE, UNIT)
    if marker is None or marker.get("key") != table.key:
        return False
    try:
        return stored_digests(store) == marker.get("digests")
    except Exception:  # unreadable chunk
        return False


def write_table(store: str, table: SegmentTable, cand: Candidates, cfg: PipelineConfig) -> None:
    """Gather the selected windows (and their rhythm block) into ``segments/*``. Flow process only."""
    position = {u: i for i, u in enumerate(cand.uids)}
    n, shape, chunk = len(table), cfg.window_shape, cfg.run.chunk_size
    dtype = Layout.SEGMENT_ARRAYS
    signal = np.zeros((n, *shape), dtype["signal"])
    start = np.zeros(n, dtype["start"])
    cls = np.zeros(n, dtype["class_index"])
    rhythm = np.zeros(n, dtype["rhythm"])
    rhythm_features = np.zeros((n, len(cfg.rhythm_columns)), dtype["rhythm_features"]) if cfg.rhythm.enabled else None
    rhythm_labels: list[str] = []
    by_record: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for slot, uid in enumerate(table.uids):
        db, rec, row = cand.where[position[uid]]
        by_record.setdefault((db, rec), []).append((slot, row))
        cls[slot] = cand.class_index[position[uid]]
    for (db, rec), pairs in by_record.items():
        group, attrs = zs.read_record_windows(store, db, rec)
        slot_idx, rows = (np.array(x) for x in zip(*pairs))
        signal[slot_idx] = group["windows"][...][rows]
        start[slot_idx] = group["starts"][...][rows]
        if rhythm_features is not None:
            rhythm_features[slot_idx] = group["rhythm"][...][rows]
        for s, ep in zip(slot_idx, group["episode"][...][rows]):
            label = attrs["episodes"][ep][0]
            if label not in rhythm_labels:
                rhythm_labels.append(label)
            rhythm[s] = rhythm_labels.index(label)
    sources = sorted(table.record_keys)
    source = np.array([sources.index(record_of(u)) for u in table.uids], dtype=dtype["source"])
    zs.create_array(store, Layout.segment("signal"), (n, *shape), (chunk, *shape), dtype["signal"])[...] = signal
    for name, data in [("class_index", cls), ("source", source), ("start", start), ("rhythm", rhythm)]:
        zs.create_array(store, Layout.segment(name), data.shape, (chunk,), data.dtype)[...] = data
    root = zs.open_root(store)
    if rhythm_features is not None:
        zs.create_array(store, Layout.segment("rhythm_features"), rhythm_features.shape, (chunk, rhythm_features.shape[1]),
                        dtype["rhythm_features"], attrs={"columns": list(cfg.rhythm_columns), "context_s": cfg.rhythm.context_s}
                        )[...] = rhythm_features
    elif Layout.segment("rhythm_features") in root:
        del root[Layout.segment("rhythm_features")]
    zs.add_attrs(
        root[Layout.SEGMENTS],
        {
            **table.to_json(),
            "class_names": cfg.class_names,
            "sources": [{"database": database_of(s), "record": s.split("/")[1], "subject": table.subjects[s]} for s in sources],
            "rhythm_labels": rhythm_labels,
            "target_fs": cfg.segments.target_fs,
            "length": cfg.segment_length,
            "n_leads": cfg.segments.n_leads,
        }
    )


def update_table(store: str, markers: Markers, records: list[RecordSummary], cfg: PipelineConfig) -> tuple[SegmentTable, bool]:
    """The run's segment table, (re)written (with its marker) when it changed or was damaged; returns it and whether
    it was written."""
    table, cand = plan_table(store, records, cfg)
    if table_is_done(store, table, markers):
        return table, False
    write_table(store, table, cand, cfg)
    markers.write(STAGE, UNIT, table.key, {"n_segments": len(table), "digests": stored_digests(store)})
    return table, True
