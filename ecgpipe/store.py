"""The Zarr v3 store of a run: its layout, and the only functions that create arrays in it.

Layout of ``OUT/store.zarr``::

    records/<db>/<record>.zip       one file per record (a record bundle: ``write_bundle``), owned by its task:
                         windows    (n, L) float32   every usable window of the record; (n, 2, L) with segments.n_leads = 2
                         starts     (n,)   int64     window start, in target-rate samples
                         episode    (n,)   int32     index into attrs["episodes"] ([label, start, end] at native fs)
                         rhythm     (n, R) float32   the rhythm block of each window ([rhythm] enabled)
    segments/signal                 (N, L) float32   the selected dataset, chunked by run.chunk_size ((N, 2, L): 2 leads)
            /class_index            (N,)   int16     index into attrs["class_names"]
            /source                 (N,)   int32     index into attrs["sources"] ({database, record, subject, lead})
            /start                  (N,)   int64     start sample at target_fs within the resampled record
            /rhythm                 (N,)   int16     index into attrs["rhythm_labels"]
            /rhythm_features        (N, R) float32   the rhythm block of the selected windows ([rhythm] enabled)
    spectrograms/<settings hash>/data  (N, F, T) float16, attrs: frequencies, times, settings ((N, 2, F, T): 2 leads)
    features/<settings hash>/data      (N, D) float32, attrs: backbone, layer, weights source
    recordings/<grid settings>/<db>/<record>.zip   a record bundle: every window of a record on predict's grid,
                                    featurised ({starts, usable, cnn, rhythm}; [recordings] score; owned by its task)

A record bundle is a Zarr group in a zip file (``zarr.storage.ZipStore`` opens it): one file per record where a group
of four arrays took 18-19 (folders, metadata and chunk files), the difference between 300 000 records fitting a
cluster's inode quota or not. ``records`` and ``recordings`` are plain folders, not Zarr groups.

Concurrency rule (Zarr silently loses data when two writers touch one chunk): arrays are created by the flow process
only; a chunk task opens an existing array and writes exactly the rows of the chunk it owns.
"""

from __future__ import annotations

import itertools
import zipfile
from collections.abc import MutableMapping
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.core.buffer import cpu
from zarr.storage import MemoryStore

from ecgpipe.location import Location, zarr_storage_options


class Layout:
    """The name of every group and array of the store, and their dtypes: the only place a store path is spelt."""

    RECORDS = "records"
    SEGMENTS = "segments"
    SPECTROGRAMS = "spectrograms"
    FEATURES = "features"
    RECORDINGS = "recordings"  # <settings>/<db>/<record>.zip: every window on predict's grid (stages/recording_grid.py)
    GROUPS = (SEGMENTS, SPECTROGRAMS, FEATURES)  # the Zarr groups (records and recordings hold bundles, not groups)
    # one record's windows (arrays of its bundle, records/<db>/<record>.zip)
    RECORD_ARRAYS = {"windows": "float32", "starts": "int64", "episode": "int32", "rhythm": "float32"}
    # the selected dataset (segments/<name>)
    SEGMENT_ARRAYS = {"signal": "float32", "class_index": "int16", "source": "int32", "start": "int64",
                      "rhythm": "int16", "rhythm_features": "float32"}
    # compact log-spectrograms at their native resolution (images are made from them on the fly)
    SPECTROGRAM_DTYPE = "float16"
    FEATURE_DTYPE = "float32"

    BUNDLE = ".zip"  # the suffix of a record bundle's file

    @staticmethod
    def record(database: str, record: str) -> str:
        """One record's windows: a record bundle."""
        return f"records/{database}/{record}{Layout.BUNDLE}"

    @staticmethod
    def recording(settings: str, database: str, record: str) -> str:
        """One record's grid of windows under the grid settings named ``settings``: a record bundle."""
        return f"recordings/{settings}/{database}/{record}{Layout.BUNDLE}"

    @staticmethod
    def segment(name: str) -> str:
        if name not in Layout.SEGMENT_ARRAYS:
            raise KeyError(f"segments/{name}: not an array of the segment table")
        return f"segments/{name}"

    @staticmethod
    def data(array: str) -> str:
        """The data array of a spectrogram or feature array group (``spectrograms/<hash>``, ``features/<hash>``)."""
        return f"{array}/data"

    @staticmethod
    def row_chunk(array: str, i: int) -> str:
        """The folder of the files of row chunk ``i`` of such a data array (Zarr v3's default chunk keys, ``c/<i>/0``:
        arrays are chunked along rows only)."""
        return f"{array}/data/c/{i}"


STORE = "store.zarr"  # the store's folder inside an output location


def store_path(out_dir) -> str:
    """The store inside an output location (local path or fsspec URL)."""
    location = out_dir if isinstance(out_dir, Location) else Location(out_dir)
    return location.child(STORE)


def in_store(rel: str) -> str:
    """Where ``rel`` (a group, array or chunk of the store) lies relative to the output location: what a marker's
    ``files`` names (``Markers.write``)."""
    return f"{STORE}/{rel}"


def open_group(path: str, mode: str = "r") -> zarr.Group:
    return zarr.open_group(path, mode=mode, **zarr_storage_options(path))


def open_root(path: str, mode: str = "a") -> zarr.Group:
    """The store's root group, created on first use."""
    return open_group(path, mode)


def open_array(path: str, mode: str = "r") -> zarr.Array:
    return zarr.open_array(path, mode=mode, **zarr_storage_options(path))


def ensure_groups(path: str, *names: str) -> None:
    """Create (once, from the flow process) the groups that tasks will write children into."""
    root = open_root(path)
    for name in names:
        root.require_group(name)


def prepare_store(path: str, between_batches=lambda: None) -> None:
    """The store as the stages expect it (from the flow process, before they start): its groups, and no group layout
    of an earlier version where bundles are now (``drop_group_layout``)."""
    ensure_groups(path, *Layout.GROUPS)
    drop_group_layout(path, between_batches)


@dataclass(frozen=True)
class Bundle:
    """A record bundle as read or written: its arrays (stored dtypes) by name, and its attributes (JSON types)."""

    arrays: dict[str, np.ndarray]
    attrs: dict


def write_bundle(path: str, rel: str, arrays: dict[str, np.ndarray], attrs: dict, chunk_rows: int) -> Bundle:
    """Store ``arrays`` and ``attrs`` as ONE file at ``rel`` inside the store ``path``: a Zarr group made in memory
    (arrays chunked by ``chunk_rows`` rows, Zarr's default codec) and written as a zip, beside its place first and
    renamed in on a local disk (a reader never meets half a bundle; a bundle written again replaces every array).
    Holds the arrays and their compressed chunks once each (a 24-h Holter: ~80 MB of each), not a copy of the whole
    zip besides. Returns the bundle as a reader will find it (the attributes as read back: JSON types)."""
    entries: dict = {}
    group = zarr.open_group(MemoryStore(store_dict=entries), mode="w", attributes=attrs)
    for name, data in arrays.items():
        chunks = (max(1, min(len(data), chunk_rows)), *data.shape[1:])
        arr = group.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype, fill_value=0)
        if data.size:
            arr[...] = data
    stored_attrs = dict(zarr.open_group(MemoryStore(store_dict=entries, read_only=True), mode="r").attrs)

    def zipped(file) -> None:
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as zf:  # chunks are compressed already
            for key in sorted(entries):  # a fixed time: the same arrays give the same bytes (a zip entry keeps its time)
                zf.writestr(zipfile.ZipInfo(key, date_time=(1980, 1, 1, 0, 0, 0)), entries.pop(key).to_bytes())

    Location(path).write_with(rel, zipped)
    return Bundle(dict(arrays), stored_attrs)


class _ZipEntries(MutableMapping):
    """The entries of an open zip file, as a read-only MemoryStore asks for them: each read when asked for, so that
    reading a record holds its arrays and the compressed chunks zarr decodes at once, not the whole file besides."""

    def __init__(self, zf: zipfile.ZipFile):
        self._zf, self._names = zf, set(zf.namelist())

    def __getitem__(self, key: str):
        if key not in self._names:
            raise KeyError(key)
        return cpu.Buffer.from_bytes(self._zf.read(key))

    def __contains__(self, key) -> bool:
        return key in self._names

    def __iter__(self):
        return iter(sorted(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def __setitem__(self, key, value):
        raise TypeError("a record bundle is read-only")

    __delitem__ = __setitem__


def read_bundle(path: str, rel: str) -> Bundle:
    """The record bundle at ``rel`` inside the store ``path`` (FileNotFoundError where there is none)."""
    with Location(path).open(rel) as file, zipfile.ZipFile(file) as zf:
        group = zarr.open_group(MemoryStore(store_dict=_ZipEntries(zf), read_only=True), mode="r")
        return Bundle({name: group[name][...] for name in sorted(group.array_keys())}, dict(group.attrs))


def drop_group_layout(path: str, between_batches=lambda: None) -> None:
    """Remove what a store of 0.16 and earlier kept where bundles are now: ``records/`` and ``recordings/`` were Zarr
    groups holding a group per record, beside which a store upgraded in place would keep a second copy of every
    record. Called by the flow before the stages start, once (a store whose ``records/zarr.json`` is gone has none):
    everything below those folders but the bundles (``*.zip``) goes, the ``zarr.json`` that says so last, so that a
    run stopped half-way does it again. About 18 files per record: ``between_batches()`` is called after every 10 000
    (the flow's check for a stop asked for)."""
    location = Location(path)
    for top in (Layout.RECORDS, Layout.RECORDINGS):
        if not location.exists(f"{top}/zarr.json"):
            continue
        legacy = (rel for rel in location.files_below(top) if not rel.endswith(Layout.BUNDLE) and rel != f"{top}/zarr.json")
        while batch := list(itertools.islice(legacy, 10_000)):
            location.delete_files(batch)
            between_batches()
        location.delete(f"{top}/zarr.json")
        location.remove_empty_folders(top)


def write_record_windows(
    path: str, database: str, record: str, windows, starts, episode, attrs: dict, rhythm: np.ndarray | None = None
) -> Bundle:
    """Write one record's windows (and their rhythm features, when computed) as its bundle ``records/<db>/<record>``
    (owned by this record's task alone); returns the bundle as written (stored dtypes)."""
    dtype = Layout.RECORD_ARRAYS  # asarray: no copy of what has its stored dtype already (a Holter's windows: 80 MB)
    arrays = {"windows": np.asarray(windows, dtype["windows"]), "starts": np.asarray(starts, dtype["starts"]),
              "episode": np.asarray(episode, dtype["episode"])}
    if rhythm is not None:
        arrays["rhythm"] = np.asarray(rhythm, dtype["rhythm"])
    return write_bundle(path, Layout.record(database, record), arrays, attrs, chunk_rows=1024)


def read_record_windows(path: str, database: str, record: str) -> Bundle:
    return read_bundle(path, Layout.record(database, record))


def create_array(path: str, name: str, shape, chunks, dtype, attrs: dict | None = None) -> zarr.Array:
    """Create (or replace) an array; called by the flow process before any task writes into it."""
    root = open_root(path)
    arr = root.create_array(name, shape=shape, chunks=chunks, dtype=dtype, overwrite=True, fill_value=0)
    if attrs:
        add_attrs(arr, attrs)
    return arr


def add_attrs(node, attrs: dict) -> None:
    """Add ``attrs`` to a group's or array's attributes in ONE write of its metadata (Zarr 3's ``attrs.update``
    rewrites the metadata file once per key: 24 ms instead of 1.7 ms for a record's 15 keys)."""
    node.attrs.put({**node.attrs.asdict(), **attrs})


def chunk_bounds(n_rows: int, chunk_size: int, chunk_index: int) -> tuple[int, int]:
    start = chunk_index * chunk_size
    if start >= n_rows or chunk_index < 0:
        raise IndexError(f"chunk {chunk_index} is outside an array of {n_rows} rows (chunk size {chunk_size})")
    return start, min(start + chunk_size, n_rows)


def write_chunk(path: str, name: str, chunk_index: int, data: np.ndarray) -> None:
    """Write the rows of one whole chunk (the array's own chunking along axis 0) into an existing array."""
    arr = open_array(f"{path}/{name}", mode="r+")
    start, stop = chunk_bounds(arr.shape[0], arr.chunks[0], chunk_index)
    if data.shape[0] != stop - start or data.shape[1:] != arr.shape[1:]:
        raise ValueError(f"{name} chunk {chunk_index}: got shape {data.shape}, expected {(stop - start, *arr.shape[1:])}")
    arr[start:stop] = data.astype(arr.dtype)


def read_chunk(path: str, name: str, chunk_index: int, chunk_size: int) -> np.ndarray:
    arr = open_array(f"{path}/{name}", mode="r")
    start, stop = chunk_bounds(arr.shape[0], chunk_size, chunk_index)
    return arr[start:stop]


def read_array(path: str, name: str) -> np.ndarray:
    return open_array(f"{path}/{name}", mode="r")[...]


def has(path: str, name: str) -> bool:
    """Whether the store holds a group or array ``name``."""
    return name in open_root(path, mode="r")


def read_attrs(path: str, name: str) -> dict:
    return dict(zarr.open(f"{path}/{name}", mode="r", **zarr_storage_options(path)).attrs)
