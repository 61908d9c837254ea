"""Stage 2, one unit per run: the segment table ``segments/*``, the dataset every later stage reads.

From every record's windows (their starts and classes, carried by the records' summaries: planning reads no record): a
capped, seeded, *stable* selection per class, and a stable row ("slot") for each selected segment. Stable selection and slots keep unchanged work unchanged: a segment's chance of selection is a
seeded hash of its own identity (so adding a record displaces only what its own segments outrank), and a segment keeps
its row from one run to the next (new segments fill vacated rows first). A fixed record therefore changes only the
chunks that hold its segments or the ones they displace.

A segment is a pair (record, start): the table holds it as two integer arrays, ``source`` (an index into the table's
records, sorted by database and record) and ``start``. The flow process plans with NumPy on these, never one Python
object per window, so its memory grows with the number of records, not of windows. It writes the row order
(``segments/source`` and ``segments/start``); chunk tasks on the workers gather the other columns (each record read
once) and write whole chunks, each owned by one task; the flow process writes the attributes and the marker last, so
a table whose write was interrupted has no key and is rewritten. Its key covers the rows, the records' keys, the
chunking, the classes and this module's code; spectrogram chunk keys carry this module's code version too, so an edit
here recomputes everything downstream.
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
# What the flow writes before the chunk tasks start: the row order. The tasks fill the other columns.
ROW_ORDER = ("source", "start")
# One int64 per segment while planning: source index in the high bits, start (target-rate samples) in the low ones.
# 2**36 samples is four years at 500 Hz; 2**27 records.
START_BITS = 36


def code() -> str:
    # the rhythm block's code reaches the table through the records' keys, not through this version
    return code_version(__name__, without=RHYTHM_MODULES + CLASSIFY_MODULES)


# --------------------------------------------------------------------------------------------------- segment ids
def segment_uid(record_name: str, start: int) -> str:
    """A segment as people read it: ``<db>/<record>/<start, 10 digits>`` (messages and tests; never stored)."""
    return f"{record_name}/{int(start):010d}"


def segment_keys(source: np.ndarray, start: np.ndarray) -> np.ndarray:
    """One sortable int64 per segment: ordering the keys orders by (record, start)."""
    start = np.asarray(start, dtype=np.int64)
    if len(start) and (start.min() < 0 or start.max() >= 1 << START_BITS):
        raise PipelineError(f"a window starts at sample {int(start.max())}: beyond the {1 << START_BITS} samples a "
                            f"segment table row can address")
    return (np.asarray(source, dtype=np.int64) << START_BITS) | start


def split_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source, start) of segment keys."""
    keys = np.asarray(keys, dtype=np.int64)
    return (keys >> START_BITS).astype(np.int32), keys & ((1 << START_BITS) - 1)


def source_names(sources: list[dict]) -> list[str]:
    """``<db>/<record>`` of each entry of a stored table's ``sources`` attribute (what ``segments/source`` indexes)."""
    return [f"{s['database']}/{s['record']}" for s in sources]


def record_order(records: list[RecordSummary]) -> list[RecordSummary]:
    """Records in table order: by database, then record name (``segments/source`` indexes this order)."""
    return sorted(records, key=lambda r: (r.database, r.record))


# ------------------------------------------------------------------------------------------------------ selection
def selection_priority(record_name: str, starts: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random rank per window of one record that depends only on the window's own identity (record
    and start): adding or removing other records never changes it."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(f"{seed}:{segment_uid(record_name, s)}".encode(), digest_size=8).digest(), "big")
         for s in np.asarray(starts).tolist()),
        dtype=np.uint64, count=len(starts),
    )


def select_stable(priority: np.ndarray, class_index: np.ndarray, caps: dict[int, int | None]) -> np.ndarray:
    """Per class, the ``cap`` candidates of lowest priority (all when uncapped); indices into the candidates, sorted."""
    chosen = []
    for c, cap in caps.items():
        members = np.flatnonzero(class_index == c)
        if cap is not None and len(members) > cap:
            members = members[np.argsort(priority[members], kind="stable")[:cap]]
        chosen.append(members)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def assign_slots(previous: np.ndarray | None, selected: np.ndarray) -> np.ndarray:
    """Row order of the new table, as segment keys: kept segments stay in their rows, new ones fill vacated rows
    (in key order), then the end. ``previous``: the stored table's rows (-1 for a row whose record is gone).

    With no previous table (a cold run) the order is canonical: by database, record and start.
    """
    new_sorted = np.unique(np.asarray(selected, dtype=np.int64))
    if previous is None or not len(previous):
        return new_sorted
    previous = np.asarray(previous, dtype=np.int64)
    slots = np.where(np.isin(previous, new_sorted), previous, -1)
    incoming = new_sorted[~np.isin(new_sorted, previous)]
    holes = np.flatnonzero(slots < 0)
    n_fill = min(len(holes), len(incoming))
    slots[holes[:n_fill]] = incoming[:n_fill]
    slots = np.concatenate([slots, incoming[n_fill:]])
    # More rows vacated than filled: move rows from the end into the holes, the last row into the first hole (only
    # the holes' and the tail's chunks change), then drop the empty tail.
    holes = np.flatnonzero(slots < 0)
    n = len(slots) - len(holes)
    movers = (np.flatnonzero(slots[n:] >= 0) + n)[::-1]
    slots[holes[holes < n]] = slots[movers]
    return slots[:n]


def class_caps(config: PipelineConfig) -> dict[int, int | None]:
    return {i: config.class_cap(name) for i, name in enumerate(config.class_names)}


# --------------------------------------------------------------------------------------------------------- table
@dataclass(frozen=True)
class SegmentTable:
    """The planned (or stored) segment table: which segments, in which row, from which records."""

    sources: list[str]  # <db>/<record> of every record, by (database, record): ``source`` indexes it
    source: np.ndarray  # (n,) int32, row -> index into ``sources``
    start: np.ndarray  # (n,) int64, row -> start of the window (target-rate samples)
    record_keys: dict[str, str]  # <db>/<record> -> record key
    signal_keys: dict[str, str]  # <db>/<record> -> signal key (what spectrograms depend on)
    subjects: dict[str, str]  # <db>/<record> -> subject id
    n_candidates: int
    key: str
    rhythm_labels: list[str] = field(default_factory=list)  # every episode label of the records, sorted

    def __len__(self) -> int:
        return len(self.source)

    def attrs(self) -> dict:
        """The table's JSON attributes: one entry per record, none per segment (the rows are arrays)."""
        return {"record_keys": self.record_keys, "signal_keys": self.signal_keys, "n_candidates": self.n_candidates,
                "key": self.key, "rhythm_labels": self.rhythm_labels,
                "sources": [{"database": s.split("/", 1)[0], "record": s.split("/", 1)[1], "subject": self.subjects[s]}
                            for s in self.sources]}


@dataclass(frozen=True)
class Candidates:
    """Every window of every record (records in table order): its key, class and selection priority."""

    keys: np.ndarray
    class_index: np.ndarray
    priority: np.ndarray


def candidates(records: list[RecordSummary], seed: int) -> Candidates:
    """The candidates of ``records`` (already in table order: their position is their source index)."""
    keys = [segment_keys(np.full(len(r.starts), i), r.starts) for i, r in enumerate(records)]
    classes = [r.class_index for r in records]
    priority = [selection_priority(r.name, r.starts, seed) for r in records]
    join = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
    return Candidates(join(keys, np.int64), join(classes, np.int16), join(priority, np.uint64))


def stored_rows(store: str, source_index: dict[str, int]) -> np.ndarray | None:
    """The complete stored table's rows as segment keys in this run's source indices (-1 where the record is gone);
    None when there is no complete table."""
    root = zs.open_root(store, mode="r")
    if Layout.SEGMENTS not in root or "key" not in root[Layout.SEGMENTS].attrs:
        return None
    attrs = root[Layout.SEGMENTS].attrs
    now = np.array([source_index.get(name, -1) for name in source_names(attrs["sources"])], dtype=np.int64)
    source = now[zs.read_array(store, Layout.segment("source"))]
    keys = segment_keys(np.maximum(source, 0), zs.read_array(store, Layout.segment("start")))
    return np.where(source >= 0, keys, -1)


def plan_table(store: str, records: list[RecordSummary], cfg: PipelineConfig) -> SegmentTable:
    """The segment table a run would write (selection and row order), read-only."""
    records = record_order(records)
    cand = candidates(records, cfg.sampling.seed)
    counts = np.bincount(cand.class_index, minlength=len(cfg.class_names))
    empty = [cfg.class_names[c] for c in range(len(cfg.class_names)) if counts[c] == 0]
    if empty:
        raise PipelineError(
            f"class(es) {empty} have no segments: none of their labels ({[label for c in empty for label in cfg.classes[c]]}) occur in "
            f"an episode of {cfg.segments.length_s} s or more in the {len(records)} records read (labels found: "
            f"{sorted({label for r in records for label in r.labels}) or 'none'}). Check the class labels and "
            f"databases in the config."
        )
    chosen = select_stable(cand.priority, cand.class_index, class_caps(cfg))
    sources = [r.name for r in records]
    previous = stored_rows(store, {name: i for i, name in enumerate(sources)})
    source, start = split_keys(assign_slots(previous, cand.keys[chosen]))
    record_keys = {r.name: r.key for r in records}
    signal_keys = {r.name: r.signal_key for r in records}
    subjects = {r.name: r.subject for r in records}
    # sorted, so that every chunk task knows the index of a label without seeing the others' windows
    rhythm_labels = sorted({label for r in records for label in r.labels})
    key = content_key(STAGE, code(), sources, array_digest(source), array_digest(start), record_keys,
                      cfg.run.chunk_size, list(cfg.classes.items()))  # in order: rows carry class indices
    return SegmentTable(sources, source, start, record_keys, signal_keys, subjects, int(len(cand.keys)), key, rhythm_labels)


def stored_segment_ids(store: str) -> list[str]:
    """Every row of the stored table as ``<db>/<record>/<start>`` (for people and tests: one string per row)."""
    attrs = zs.read_attrs(store, Layout.SEGMENTS)
    names = source_names(attrs["sources"])
    source, start = zs.read_array(store, Layout.segment("source")), zs.read_array(store, Layout.segment("start"))
    return [segment_uid(names[s], t) for s, t in zip(source.tolist(), start.tolist())]


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
    """The digest of each row chunk of an array: an array's digest is ``content_key`` of these, whether they are read
    back here or computed by whoever wrote the chunks."""
    n, size = arr.shape[0], arr.chunks[0]
    return [array_digest(arr[lo:min(lo + size, n)]) for lo in range(0, n, size)]


def table_is_done(store: str, table: SegmentTable, markers: Markers) -> bool:
    """The stored table has this key and its arrays are intact (unchanged files, or else the digests its marker
    recorded: a corrupted chunk of segments/* rewrites the table before any spectrogram reads it)."""
    if stored_table_key(store) != table.key:
        return False
    marker = markers.read(STAGE, UNIT)
    if marker is None or marker.get("key") != table.key:
        return False
    return markers.intact(marker, zs.in_store(Layout.SEGMENTS), lambda: stored_digests(store), field="digests")


# ----------------------------------------------------------------------------------------------------- writing
def create_table_arrays(store: str, table: SegmentTable, cfg: PipelineConfig) -> dict[str, list[str]]:
    """Create the arrays of ``segments/*`` and write the row order (``source``, ``start``); the chunk tasks fill the
    rest. Returns the chunk digests of what was written here. Flow process only (one creator); the table's attributes
    are written last, by :func:`finish_table`, so an interrupted write never looks complete (its key is missing)."""
    root = zs.open_root(store)
    if Layout.SEGMENTS in root and "key" in root[Layout.SEGMENTS].attrs:
        root[Layout.SEGMENTS].attrs.put({})
    n, shape, chunk, dtype = len(table), cfg.window_shape, cfg.run.chunk_size, Layout.SEGMENT_ARRAYS
    zs.create_array(store, Layout.segment("signal"), (n, *shape), (chunk, *shape), dtype["signal"])
    for name in ("class_index", "source", "start", "rhythm"):
        zs.create_array(store, Layout.segment(name), (n,), (chunk,), dtype[name])
    if cfg.rhythm.enabled:
        width = len(cfg.rhythm_columns)
        zs.create_array(store, Layout.segment("rhythm_features"), (n, width), (chunk, width), dtype["rhythm_features"],
                        attrs={"columns": list(cfg.rhythm_columns), "context_s": cfg.rhythm.context_s})
    elif Layout.segment("rhythm_features") in root:
        del root[Layout.segment("rhythm_features")]
    written: dict[str, list[str]] = {}
    for name in ROW_ORDER:
        column = getattr(table, name).astype(dtype[name])
        for c, lo in enumerate(range(0, n, chunk)):
            zs.write_chunk(store, Layout.segment(name), c, column[lo:lo + chunk])
            written.setdefault(name, []).append(array_digest(column[lo:lo + chunk]))
    return written


def table_rows(store: str, source: np.ndarray, start: np.ndarray, record_names: dict[int, str],
               rhythm_labels: list[str], cfg: PipelineConfig,
               read: dict[int, tuple[dict[str, np.ndarray], dict]] | None = None) -> dict[str, np.ndarray]:
    """The columns of the segment table other than the row order, for the rows (``source``, ``start``), gathered from
    their records' stored windows. ``record_names``: source index -> ``<db>/<record>``; ``read``: records already read
    (source index -> (arrays, attrs)); records read here are added to it."""
    read = {} if read is None else read
    n, dtype = len(source), Layout.SEGMENT_ARRAYS
    rows = {"signal": np.zeros((n, *cfg.window_shape), dtype["signal"]), "class_index": np.zeros(n, dtype["class_index"]),
            "rhythm": np.zeros(n, dtype["rhythm"])}
    if cfg.rhythm.enabled:
        rows["rhythm_features"] = np.zeros((n, len(cfg.rhythm_columns)), dtype["rhythm_features"])
    label_index = {label: i for i, label in enumerate(rhythm_labels)}
    for s in np.unique(source).tolist():
        name = record_names[s]
        if s not in read:
            bundle = zs.read_record_windows(store, *name.split("/", 1))
            read[s] = (bundle.arrays, bundle.attrs)
        arrays, attrs = read[s]
        slot_idx = np.flatnonzero(source == s)
        starts, wanted = arrays["starts"], start[slot_idx]
        order = np.argsort(starts, kind="stable")
        at = order[np.minimum(np.searchsorted(starts, wanted, sorter=order), max(len(starts) - 1, 0))] if len(starts) else None
        missing = wanted if at is None else wanted[starts[at] != wanted]
        if len(missing):
            raise PipelineError(f"records/{name}: no stored window starts at sample {int(missing[0])}; its windows "
                                f"changed after the table was planned (rerun the pipeline)")
        rows["signal"][slot_idx] = arrays["windows"][at]
        rows["class_index"][slot_idx] = np.asarray(attrs["class_index"], dtype=np.int64)[at]
        episodes, which = np.unique(arrays["episode"][at], return_inverse=True)
        rows["rhythm"][slot_idx] = np.array([label_index[attrs["episodes"][e][0]] for e in episodes.tolist()])[which]
        if "rhythm_features" in rows:
            rows["rhythm_features"][slot_idx] = arrays["rhythm"][at]
    return rows


def write_table_chunks(store: str, first_chunk: int, n_chunks: int, record_names: dict[int, str],
                       rhythm_labels: list[str], cfg: PipelineConfig) -> dict[str, list[str]]:
    """Fill chunks ``first_chunk .. first_chunk + n_chunks - 1`` of the columns of ``segments/*`` other than the row
    order, which the flow wrote (whole chunks: the task owns them); returns each array's chunk digests. Runs on a
    worker. A record whose windows run on into the next chunk is read once: the records of the chunk before are kept
    (and only those)."""
    size = cfg.run.chunk_size
    digests: dict[str, list[str]] = {}
    previous: dict = {}
    for c in range(first_chunk, first_chunk + n_chunks):
        source = zs.read_chunk(store, Layout.segment("source"), c, size)
        start = zs.read_chunk(store, Layout.segment("start"), c, size)
        read = {s: previous[s] for s in np.unique(source).tolist() if s in previous}
        rows = table_rows(store, source, start, record_names, rhythm_labels, cfg, read)
        previous = read
        for name, data in rows.items():
            zs.write_chunk(store, Layout.segment(name), c, data)
            digests.setdefault(name, []).append(array_digest(data))
    return digests


def finish_table(store: str, table: SegmentTable, cfg: PipelineConfig, markers: Markers,
                 written: dict[str, list[str]]) -> None:
    """Write the table's attributes (its key last of all) and its marker, once every chunk is written. Flow process."""
    root = zs.open_root(store)
    zs.add_attrs(
        root[Layout.SEGMENTS],
        {
            **table.attrs(),
            "class_names": cfg.class_names,
            "target_fs": cfg.segments.target_fs,
            "length": cfg.segment_length,
            "n_leads": cfg.segments.n_leads,
        }
    )
    arrays = sorted(zs.open_group(f"{store}/{Layout.SEGMENTS}", mode="r").array_keys())
    digests = {name: content_key(*written.get(name, [])) for name in arrays}
    markers.write(STAGE, UNIT, table.key, {"n_segments": len(table), "digests": digests}, files=zs.in_store(Layout.SEGMENTS))


@dataclass(frozen=True)
class TableTask:
    """One chunk task's share of the table: whole chunks, and the names of the records its rows come from."""

    first_chunk: int
    n_chunks: int
    record_names: dict[int, str]


def table_tasks(table: SegmentTable, cfg: PipelineConfig, n_tasks: int) -> list[TableTask]:
    """The table's rows cut into about ``n_tasks`` runs of whole chunks."""
    size = cfg.run.chunk_size
    n_chunks = -(-len(table) // size)
    per_task = max(1, -(-n_chunks // max(1, n_tasks)))
    out = []
    for c in range(0, n_chunks, per_task):
        used = np.unique(table.source[c * size:(c + per_task) * size]).tolist()
        out.append(TableTask(c, min(per_task, n_chunks - c), {s: table.sources[s] for s in used}))
    return out
