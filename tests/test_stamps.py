"""A finished unit is checked by its files' stamp (names, sizes, modification times) before its data is read.

A rerun that changes nothing must not read the whole store back to prove it intact (a corpus of a million records
stores ~190 GB: docs/scaling.md). The marker records the stamp of the files its unit wrote; a check whose stamp
matches reads nothing, and any other check hashes the data as before. These tests pin both sides on a real record's
stored windows: what the stamp sees, what only the hash sees (``run.verify = "content"``), and that a copy of a run
with its times kept is still recognised.
"""

from __future__ import annotations

import os
import shutil

import pytest

from ecgpipe.config import load_config
from ecgpipe.location import Location
from ecgpipe.markers import Markers
from ecgpipe.store import store_path


def test_a_stamp_changes_with_any_write_and_not_with_a_copy_that_keeps_times(tmp_path):
    folder = tmp_path / "out" / "store.zarr" / "g"
    (folder / "c" / "0").mkdir(parents=True)
    (folder / "zarr.json").write_text("{}")
    chunk = folder / "c" / "0" / "0"
    chunk.write_bytes(b"abcdef")
    loc = Location(tmp_path / "out")
    first = loc.files_stamp("store.zarr/g")
    assert first == loc.files_stamp("store.zarr/g") and first is not None
    st = chunk.stat()
    chunk.write_bytes(b"abcdef")  # the same bytes written again: a new modification time
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert loc.files_stamp("store.zarr/g") != first
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert loc.files_stamp("store.zarr/g") == first  # size and time back as they were: the same stamp
    chunk.write_bytes(b"abc")
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert loc.files_stamp("store.zarr/g") != first  # truncated
    chunk.write_bytes(b"abcdef")
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    (folder / "c" / "1").write_bytes(b"x")
    assert loc.files_stamp("store.zarr/g") != first  # a file added
    (folder / "c" / "1").unlink()
    assert loc.files_stamp("store.zarr/g") == first
    shutil.copytree(tmp_path / "out", tmp_path / "copy")  # copy2: times kept (cp -a, rsync -a)
    assert Location(tmp_path / "copy").files_stamp("store.zarr/g") == first
    assert Location(f"file://{tmp_path}/copy").files_stamp("store.zarr/g") == first  # a file:// URL alike
    assert loc.files_stamp("store.zarr/nothing") == Location(tmp_path / "copy").files_stamp("store.zarr/none")


def test_an_fsspec_store_is_stamped_by_what_it_reports():
    loc = Location("memory://ecgpipe-stamps/out")
    loc.write_text("store.zarr/g/c/0/0", "abc")
    first = loc.files_stamp("store.zarr/g")
    assert first is not None and first == loc.files_stamp("store.zarr/g")
    loc.write_text("store.zarr/g/c/1/0", "d")
    assert loc.files_stamp("store.zarr/g") != first
    loc.fs.rm("/ecgpipe-stamps", recursive=True)


@pytest.fixture()
def stored_record(physionet, tmp_path):
    """A real mitdb record's windows stored by the segments stage, with its marker written as the task writes it."""
    from ecgpipe.stages.segments import STAGE, compute_record, record_files_in_store, record_unit

    cfg = load_config("paper4", {"rhythm": {"enabled": False}})
    unit = record_unit(cfg, "vfdb", "426", str(physionet / "vfdb"))
    out = tmp_path / "out"
    store = store_path(str(out))
    summary, digest = compute_record(store, unit, cfg)
    Markers(str(out)).write(STAGE, unit.name, unit.key, {"summary": summary.to_json(), "digest": digest},
                            files=record_files_in_store(unit))
    windows = out / "store.zarr" / "records" / "vfdb" / "426.zip"  # the record's one file: its windows are most of it
    return {"out": out, "store": store, "unit": unit, "windows": windows, "n": summary.n_windows}


def test_unchanged_files_are_trusted_and_changed_ones_are_hashed(stored_record):
    from ecgpipe.stages.segments import record_done

    out, store, unit, windows = (stored_record[k] for k in ("out", "store", "unit", "windows"))
    stamp, content = Markers(str(out)), Markers(str(out), verify="content")
    written = windows.stat()  # as the marker's stamp saw it
    assert stored_record["n"] > 0
    assert record_done(store, stamp, unit) is not None and record_done(store, content, unit) is not None
    # rewritten with the same bytes: the stamp differs, the hash shows nothing changed
    windows.write_bytes(windows.read_bytes())
    os.utime(windows, ns=(written.st_atime_ns, written.st_mtime_ns + 10**9))
    assert record_done(store, stamp, unit) is not None
    # bytes changed, size the same: caught by the hash
    data = bytearray(windows.read_bytes())
    data[len(data) // 2] ^= 0xFF
    windows.write_bytes(bytes(data))
    assert windows.stat().st_size == written.st_size
    assert record_done(store, stamp, unit) is None and record_done(store, content, unit) is None
    # the limit, on purpose: the same change with the time put back is seen only by hashing the data
    os.utime(windows, ns=(written.st_atime_ns, written.st_mtime_ns))
    assert record_done(store, stamp, unit) is not None  # its stamp is the marker's: nothing is read
    assert record_done(store, content, unit) is None  # run.verify = "content" (--verify) reads it


def test_a_bundle_rewritten_with_other_windows_is_caught_by_its_digest(stored_record):
    """A whole, valid bundle holding other windows (not a torn zip, which reading alone refuses): its stamp differs,
    so its arrays are hashed, and their digest is not the marker's."""
    from ecgpipe import store as zs
    from ecgpipe.stages.segments import record_done

    out, store, unit = (stored_record[k] for k in ("out", "store", "unit"))
    stored = zs.read_record_windows(store, unit.database, unit.record)
    windows = stored.arrays["windows"].copy()
    windows[0, ..., 0] += 1.0  # one sample of one window
    zs.write_record_windows(store, unit.database, unit.record, windows, stored.arrays["starts"],
                            stored.arrays["episode"], stored.attrs)
    assert zs.read_record_windows(store, unit.database, unit.record).attrs == stored.attrs  # a valid bundle
    assert record_done(store, Markers(str(out)), unit) is None


def test_a_marker_without_a_stamp_is_checked_by_its_digest(stored_record):
    """Markers written before stamps existed (0.5.0 and earlier) carry none: their units are hashed, as before."""
    from ecgpipe.stages.segments import record_done

    out, store, unit = (stored_record[k] for k in ("out", "store", "unit"))
    markers = Markers(str(out))
    marker = markers.read("segments", unit.name)
    marker.pop("stamp")
    markers.write("segments", unit.name, marker.pop("key"), marker)
    assert record_done(store, markers, unit) is not None
    (stored_record["windows"]).write_bytes(b"\x00" * stored_record["windows"].stat().st_size)
    assert record_done(store, markers, unit) is None
