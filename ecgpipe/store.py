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

import io
import zipfile
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
    # one record's windows (records/<db>/<record>/<name>)
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


@dataclass(frozen=True)
class Bundle:
    """A record bundle as read or written: its arrays (stored dtypes) by name, and its attributes (JSON types)."""

    arrays: dict[str, np.ndarray]
    attrs: dict


def write_bundle(path: str, rel: str, arrays: dict[str, np.ndarray], attrs: dict, chunk_rows: int) -> Bundle:
    """Store ``arrays`` and ``attrs`` as ONE file at ``rel`` inside the store ``path``: a Zarr group made in memory
    (arrays chunked by ``chunk_rows`` rows, Zarr's default codec) and written as a zip, beside its place first and
    renamed in on a local disk (a reader never meets half a bundle; a bundle written again replaces every array).
    Returns the bundle as a reader will find it."""
    entries: dict = {}
    group = zarr.open_group(MemoryStore(store_dict=entries), mode="w")
    for name, data in arrays.items():
        chunks = (max(1, min(len(data), chunk_rows)), *data.shape[1:])
        arr = group.create_array(name, shape=data.shape, chunks=chunks, dtype=data.dtype, fill_value=0)
        if data.size:
            arr[...] = data
    group.attrs.put(attrs)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_STORED) as zf:  # chunks are compressed already
        for key in sorted(entries):  # a fixed time: the same arrays give the same bytes (a zip entry keeps its time)
            zf.writestr(zipfile.ZipInfo(key, date_time=(1980, 1, 1, 0, 0, 0)), entries[key].to_bytes())
    location = Location(path)
    location.write_files({rel: packed.getvalue()})
    _remove_group_layout(location, rel, arrays)
    return Bundle(dict(arrays), dict(group.attrs))


def _remove_group_layout(location: Location, rel: str, arrays) -> None:
    """Remove the record's Zarr group of the layout before bundles (0.16 and earlier: ``records/<db>/<record>/``),
    which would otherwise hold a second copy of every record upgraded in place: its metadata and its own arrays
    only (a folder of that name may hold other records' bundles too)."""
    old = rel.removesuffix(Layout.BUNDLE)
    if not location.exists(f"{old}/zarr.json"):
        return
    for name in {*arrays, "windows", "starts", "episode", "rhythm", "usable", "cnn"}:
        location.delete_tree(f"{old}/{name}")
    location.delete(f"{old}/zarr.json")


def read_bundle(path: str, rel: str) -> Bundle:
    """The record bundle at ``rel`` inside the store ``path`` (FileNotFoundError where there is none)."""
    location = Location(path)
    with zipfile.ZipFile(io.BytesIO(location.read_bytes(rel))) as zf:
        entries = {key: cpu.Buffer.from_bytes(zf.read(key)) for key in zf.namelist()}
    group = zarr.open_group(MemoryStore(store_dict=entries), mode="r")
    return Bundle({name: group[name][...] for name in sorted(group.array_keys())}, dict(group.attrs))


def write_record_windows(
    path: str, database: str, record: str, windows, starts, episode, attrs: dict, rhythm: np.ndarray | None = None
) -> Bundle:
    """Write one record's windows (and their rhythm features, when computed) as its bundle ``records/<db>/<record>``
    (owned by this record's task alone); returns the bundle as written (stored dtypes)."""
    dtype = Layout.RECORD_ARRAYS
    arrays = {"windows": windows.astype(dtype["windows"]), "starts": starts.astype(dtype["starts"]),
              "episode": episode.astype(dtype["episode"])}
    if rhythm is not None:
        arrays["rhythm"] = rhythm.astype(dtype["rhythm"])
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
