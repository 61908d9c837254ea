"""Stage 2, one unit per run: the segment table ``segments/*``, the dataset every later stage reads.

From every record's windows (their starts and classes, carried by the records' summaries: planning reads no record): a
capped, seeded, *stable* selection per class, and a stable row ("slot") for each selected segment. Stable selection and slots keep unchanged work unchanged: a segment's chance of selection is a
seeded hash of its own identity (so adding a record displaces only what its own segments outrank), and a segment keeps
its row from one run to the next (new segments fill vacated rows first). A fixed record therefore changes only the
chunks that hold its segments or the ones they displace.

The flow process plans the table and creates its arrays; chunk tasks on the workers gather the rows (each record read
once) and write whole chunks, each owned by one task; the flow process writes the attributes and the marker last, so
a table whose write was interrupted has no key and is rewritten. Its key covers the rows, the records' keys, the chunking,
the classes and this module's code; spectrogram chunk keys carry this module's code version too, so an edit here
recomputes everything downstream.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

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
    keep, before = set(selected), set(previous)
    slots: list[str | None] = [u if u in keep else None for u in previous]
    incoming = iter([u for u in new_sorted if u not in before])
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
    rhythm_labels: list[str] = field(default_factory=list)  # every episode label of the records, sorted

    def __len__(self) -> int:
        return len(self.uids)

    def to_json(self) -> dict:
        return {"uids": self.uids, "record_keys": self.record_keys, "signal_keys": self.signal_keys,
                "subjects": self.subjects, "n_candidates": self.n_candidates, "key": self.key,
                "rhythm_labels": self.rhythm_labels}


@dataclass(frozen=True)
class Candidates:
    """Every window of every record: its id and class, from the records' summaries (no record is read again)."""

    uids: list[str]
    class_index: np.ndarray


def candidates(records: list[RecordSummary]) -> Candidates:
    uids = [segment_uid(r.database, r.record, s) for r in records for s in r.starts]
    classes = [np.asarray(r.class_index, dtype=np.int16) for r in records]
    return Candidates(uids, np.concatenate(classes) if classes else np.zeros(0, np.int16))


def plan_table(store: str, records: list[RecordSummary], cfg: PipelineConfig) -> SegmentTable:
    """The segment table a run would write (selection and row order), read-only."""
    cand = candidates(records)
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
    # sorted, so that every chunk task knows the index of a label without seeing the others' windows
    rhythm_labels = sorted({label for r in records for label in r.labels})
    key = content_key(STAGE, code(), slots, record_keys, cfg.run.chunk_size, cfg.classes)
    return SegmentTable(slots, record_keys, signal_keys, subjects, int(len(cand.uids)), key, rhythm_labels)


def stored_table_key(store: str) -> str | None:
    """Key of the table in the store, when it is complete."""
    root = zs.open_root(store, mode="r")
    if Layout.SEGMENTS not in root or Layout.segment("signal") not in root:
        return None
    return root[Layout.SEGMENTS].attrs.get("key")


def stored_digests(store: str) -> dict[str, str]:
    """Digest of every array of the stored segment table, read one chunk at a time (bounded memory)."""
    group = zs.open_group(f"{store}/{Layout.SEGMENTS}", mode="r")
    return {name: content_key(*chunk_digests(group[name])) for name in sorted(group.array_keys())}


def chunk_digests(arr) -> list[str]:
    """The digest of each row chunk of a stored array: an array's digest is ``content_key`` of these, whether they
    are read back here or returned by the tasks that wrote the chunks."""
    n, size = arr.shape[0], arr.chunks[0]
    return [array_digest(arr[lo:min(lo + size, n)]) for lo in range(0, n, size)]


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


# ----------------------------------------------------------------------------------------------------- writing
def create_table_arrays(store: str, table: SegmentTable, cfg: PipelineConfig) -> list[str]:
    """Create the (empty) arrays of ``segments/*`` that the chunk tasks fill; returns their names. Flow process only
    (one creator); the table's attributes are written last, by :func:`finish_table`, so an interrupted write never
    looks complete (its key is missing)."""
    root = zs.open_root(store)
    if Layout.SEGMENTS in root and "key" in root[Layout.SEGMENTS].attrs:
        root[Layout.SEGMENTS].attrs.put({})
    n, shape, chunk, dtype = len(table), cfg.window_shape, cfg.run.chunk_size, Layout.SEGMENT_ARRAYS
    zs.create_array(store, Layout.segment("signal"), (n, *shape), (chunk, *shape), dtype["signal"])
    for name in ("class_index", "source", "start", "rhythm"):
        zs.create_array(store, Layout.segment(name), (n,), (chunk,), dtype[name])
    names = ["signal", "class_index", "source", "start", "rhythm"]
    if cfg.rhythm.enabled:
        width = len(cfg.rhythm_columns)
        zs.create_array(store, Layout.segment("rhythm_features"), (n, width), (chunk, width), dtype["rhythm_features"],
                        attrs={"columns": list(cfg.rhythm_columns), "context_s": cfg.rhythm.context_s})
        names.append("rhythm_features")
    elif Layout.segment("rhythm_features") in root:
        del root[Layout.segment("rhythm_features")]
    return sorted(names)


def table_rows(store: str, uids: list[str], sources: list[str], rhythm_labels: list[str], cfg: PipelineConfig,
               read: dict[str, tuple[dict[str, np.ndarray], dict]] | None = None) -> dict[str, np.ndarray]:
    """The rows of the segment table for ``uids`` (in that order), gathered from their records' stored windows.
    ``read``: records already read (name -> (arrays, attrs)); records read here are added to it."""
    read = {} if read is None else read
    n, dtype = len(uids), Layout.SEGMENT_ARRAYS
    rows = {"signal": np.zeros((n, *cfg.window_shape), dtype["signal"]), "class_index": np.zeros(n, dtype["class_index"]),
            "source": np.zeros(n, dtype["source"]), "start": np.zeros(n, dtype["start"]), "rhythm": np.zeros(n, dtype["rhythm"])}
    if cfg.rhythm.enabled:
        rows["rhythm_features"] = np.zeros((n, len(cfg.rhythm_columns)), dtype["rhythm_features"])
    by_record: dict[str, list[tuple[int, int]]] = {}
    for slot, uid in enumerate(uids):
        seg = SegmentId.parse(uid)
        by_record.setdefault(seg.record_name, []).append((slot, seg.start))
    source_index = {name: i for i, name in enumerate(sources)}
    label_index = {label: i for i, label in enumerate(rhythm_labels)}
    for name, pairs in by_record.items():
        if name not in read:
            group, attrs = zs.read_record_windows(store, *name.split("/", 1))
            read[name] = ({a: group[a][...] for a in group.array_keys()}, attrs)
        arrays, attrs = read[name]
        starts = arrays["starts"]
        slot_idx = np.array([s for s, _ in pairs])
        where = {int(s): i for i, s in enumerate(starts)}
        missing = [start for _, start in pairs if start not in where]
        if missing:
            raise PipelineError(f"records/{name}: no stored window starts at sample {missing[0]}; its windows changed "
                                f"after the table was planned (rerun the pipeline)")
        at = np.array([where[start] for _, start in pairs])
        rows["signal"][slot_idx] = arrays["windows"][at]
        rows["start"][slot_idx] = starts[at]
        rows["class_index"][slot_idx] = np.asarray(attrs["class_index"], dtype=np.int64)[at]
        rows["source"][slot_idx] = source_index[name]
        rows["rhythm"][slot_idx] = [label_index[attrs["episodes"][ep][0]] for ep in arrays["episode"][at]]
        if "rhythm_features" in rows:
            rows["rhythm_features"][slot_idx] = arrays["rhythm"][at]
    return rows


def write_table_chunks(store: str, uids: list[str], first_chunk: int, sources: list[str], rhythm_labels: list[str],
                       cfg: PipelineConfig) -> dict[str, list[str]]:
    """Fill chunks ``first_chunk, first_chunk + 1, ...`` of every array of ``segments/*`` with the rows of ``uids``
    (whole chunks: the task owns them); returns each array's chunk digests. Runs on a worker. A record whose windows
    run on into the next chunk is read once: the records of the chunk before are kept (and only those)."""
    size = cfg.run.chunk_size
    digests: dict[str, list[str]] = {}
    previous: dict = {}
    for offset in range(0, len(uids), size):
        chunk_uids = uids[offset:offset + size]
        read = {name: previous[name] for name in {record_of(u) for u in chunk_uids} if name in previous}
        rows = table_rows(store, chunk_uids, sources, rhythm_labels, cfg, read)
        previous = read
        for name, data in rows.items():
            zs.write_chunk(store, Layout.segment(name), first_chunk + offset // size, data)
            digests.setdefault(name, []).append(array_digest(data))
    return digests


def table_sources(table: SegmentTable) -> list[str]:
    """``<db>/<record>`` of every record, sorted: ``segments/source`` indexes this list."""
    return sorted(table.record_keys)


def finish_table(store: str, table: SegmentTable, cfg: PipelineConfig, markers: Markers,
                 written: dict[str, list[str]]) -> None:
    """Write the table's attributes (its key last of all) and its marker, once every chunk is written. Flow process."""
    sources = table_sources(table)
    root = zs.open_root(store)
    zs.add_attrs(
        root[Layout.SEGMENTS],
        {
            **table.to_json(),
            "class_names": cfg.class_names,
            "sources": [{"database": database_of(s), "record": s.split("/")[1], "subject": table.subjects[s]} for s in sources],
            "target_fs": cfg.segments.target_fs,
            "length": cfg.segment_length,
            "n_leads": cfg.segments.n_leads,
        }
    )
    digests = {name: content_key(*d) for name, d in sorted(written.items())}
    markers.write(STAGE, UNIT, table.key, {"n_segments": len(table), "digests": digests})


def table_tasks(table: SegmentTable, cfg: PipelineConfig, n_tasks: int) -> list[tuple[int, list[str]]]:
    """The table's rows cut into about ``n_tasks`` runs of whole chunks: (first chunk, segment ids) per task."""
    size = cfg.run.chunk_size
    n_chunks = -(-len(table) // size)
    per_task = max(1, -(-n_chunks // max(1, n_tasks)))
    return [(c, table.uids[c * size:(c + per_task) * size]) for c in range(0, n_chunks, per_task)]
