"""What is stored and under which key: stale blocks are removed, keys follow every input that changes values, and one
record's unexpected error fails that record alone. Fast tests (no Prefect server, no Dask cluster)."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from ecgpipe import store as zs
from ecgpipe.config import load_config
from ecgpipe.keys import file_digest, record_files
from ecgpipe.location import Location
from ecgpipe.store import Layout


def test_a_record_rewritten_without_its_rhythm_block_keeps_no_stale_block(tmp_path):
    store = str(tmp_path / "store.zarr")
    zs.ensure_groups(store, *Layout.GROUPS)
    windows, starts, episode = np.ones((3, 1, 10)), np.arange(3) * 10, np.zeros(3)
    written = zs.write_record_windows(store, "db", "r1", windows, starts, episode, {}, rhythm=np.ones((3, 4)))
    assert "rhythm" in written.arrays
    assert "rhythm" in zs.read_record_windows(store, "db", "r1").arrays
    written = zs.write_record_windows(store, "db", "r1", windows, starts, episode, {}, rhythm=None)
    read = zs.read_record_windows(store, "db", "r1")
    # what is stored is exactly what was written: the record's digest matches its marker's on the next run
    assert set(read.arrays) == set(written.arrays) == {"windows", "starts", "episode"}


def test_a_record_bundle_is_one_zarr_file_and_the_group_layout_of_earlier_versions_goes(tmp_path):
    """300 000 records as groups of four arrays were ~5.7 million files and folders (an inode quota's size): a record
    is one file now, a Zarr group in a zip that zarr's ZipStore opens, the same bytes for the same arrays. A store of
    0.16 and earlier, upgraded in place, loses its record groups (a second copy of every record) and keeps bundles."""
    import zarr

    store = str(tmp_path / "store.zarr")
    root = zarr.open_group(store, mode="w")  # the layout of 0.16: records/<db>/<record> groups, nested names too
    for name in ("r1", "p00/r3"):
        root.require_group(f"records/db/{name}").create_array("windows", shape=(2, 5), dtype="float32")
    root.require_group("recordings/abc/db/r1").create_array("cnn", shape=(2, 5), dtype="float32")
    windows, starts, episode = np.random.default_rng(0).normal(size=(3, 1, 10)), np.arange(3) * 10, np.zeros(3)
    attrs = {"episodes": [("N", 0, 30)], "fs": np.float64(250.0)}
    written = zs.write_record_windows(store, "db", "r2", windows, starts, episode, attrs)
    assert written.attrs == {"episodes": [["N", 0, 30]], "fs": 250.0}  # as a reader finds them: JSON types
    batches = []
    zs.prepare_store(store, between_batches=lambda: batches.append(1))
    assert len(batches) == 2  # records/, recordings/: one batch each (the flow checks for a stop between batches)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "store.zarr" / "records").rglob("*")) == [
        "store.zarr/records/db", "store.zarr/records/db/r2.zip"]
    assert not (tmp_path / "store.zarr" / "recordings").exists()
    zs.prepare_store(store)  # nothing left to remove: the bundle stays
    first = open(f"{store}/records/db/r2.zip", "rb").read()
    zs.write_record_windows(store, "db", "r2", windows, starts, episode, attrs)
    assert open(f"{store}/records/db/r2.zip", "rb").read() == first  # the same arrays, the same bytes: no zip times
    with zarr.storage.ZipStore(f"{store}/records/db/r2.zip", mode="r") as zip_store:
        group = zarr.open_group(zip_store, mode="r")
        assert np.array_equal(group["windows"][...], windows.astype(np.float32))
        assert group.attrs["episodes"] == [["N", 0, 30]] and group["starts"].dtype == np.int64
    # the same through an fsspec URL (an object store's output folder)
    url = "memory://ecgpipe-bundles/store.zarr"
    zs.write_record_windows(url, "db", "p00/r2", windows, starts, episode, {"fs": 250.0})
    read = zs.read_record_windows(url, "db", "p00/r2")
    assert np.array_equal(read.arrays["windows"], windows.astype(np.float32)) and read.attrs == {"fs": 250.0}
    with pytest.raises(FileNotFoundError):
        zs.read_record_windows(url, "db", "absent")

    def torn(file):  # a write that fails half-way (a full disk, a connection reset)
        file.write(b"PK\x03\x04 half a bundle")
        raise OSError("connection reset")

    for where, name in ((store, "r2"), (url, "p00/r2")):  # the earlier bundle stays whole, no staged file is left
        with pytest.raises(OSError, match="connection reset"):
            Location(where).write_with(Layout.record("db", name), torn)
        assert np.array_equal(zs.read_record_windows(where, "db", name).arrays["windows"], windows.astype(np.float32))
        assert not [rel for rel in Location(where).files_below("records") if ".tmp-" in rel]

def test_a_write_that_fails_for_want_of_space_names_its_file_and_keeps_the_earlier_one(tmp_path):
    """A full disk's OSError names no file, so the advice could only guess which disk filled (OUT's, or /tmp's):
    each writer names the file it was writing. Real failing writes: a file-size limit (RLIMIT_FSIZE) in a child."""
    import subprocess
    import sys

    (tmp_path / "report.json").write_text("the earlier report")
    (tmp_path / "model.json").write_text("the earlier note")
    code = f"""
import errno, resource, signal
from ecgpipe.location import Location, write_file
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
for write in (lambda: Location({str(tmp_path)!r}).write_files({{"report.md": b"x" * 10, "report.json": b"y" * 5000}}),
              lambda: write_file({str(tmp_path / "model.json")!r}, "z" * 5000),
              lambda: Location({str(tmp_path)!r}).write_with("records/r.zip", lambda f: f.write(b"w" * 5000))):
    try:
        write()
    except OSError as exc:
        print(exc.errno == errno.EFBIG, exc.filename)
"""
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    out = child.stdout.split("\n")
    assert out[:3] == [f"True {tmp_path / name}" for name in ("report.json", "model.json", "records/r.zip")]
    assert (tmp_path / "report.json").read_text() == "the earlier report" and not (tmp_path / "report.md").exists()
    assert (tmp_path / "model.json").read_text() == "the earlier note"
    assert not list(tmp_path.rglob(".tmp-*"))
    from ecgpipe.cli_checks import failure_advice

    full = OSError(28, "No space left on device", "/tmp/joblib/x.pkl")
    assert failure_advice(full, str(tmp_path), None).startswith("the disk holding /tmp/joblib/x.pkl is full: free space")
    assert failure_advice(OSError(28, "No space left on device"), "OUT", None).startswith("the disk holding OUT is full")


def test_a_run_taking_its_folder_removes_only_what_killed_writes_left(tmp_path):
    """What a SIGKILL or the OOM killer cut short (a record bundle staged as .tmp-<hex>, a Zarr chunk's .partial) is
    removed; a user's files are not, nor anything in a folder below that holds a lock of its own (a prediction at
    work into OUT/predictions)."""
    from ecgpipe.location import Location

    hexname = "0123456789abcdef" * 2
    garbage = [f"store.zarr/records/mitdb/.tmp-{hexname}", f"store.zarr/features/x/c/0/c.{hexname}.partial",
               f"markers/features/.tmp-{hexname}", f".tmp-{hexname}", "model.next.skops.tmp", ".ecgpipe.lock.tmp"]
    kept = ["notes.partial", "store.zarr/records/mitdb/100.zip", "analysis/.tmp-mine", f"predictions/.tmp-{hexname}",
            f"store.zarr/sub/.tmp-{hexname}", "model.next.skops", "agreement.partial.jsonl"]
    an_hour_ago = time.time() - 3600
    for rel in garbage + kept + [f"inputs/.tmp-{hexname[::-1]}"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
        if rel != f"inputs/.tmp-{hexname[::-1]}":  # that one: `ecgpipe status` writing digests this moment, no lock
            os.utime(tmp_path / rel, (an_hour_ago, an_hour_ago))
    kept.append(f"inputs/.tmp-{hexname[::-1]}")
    (tmp_path / "predictions" / ".ecgpipe.lock").write_text("{}")
    (tmp_path / "store.zarr" / "sub" / ".ecgpipe.lock").write_text("{}")
    assert sorted(Location(tmp_path).remove_partial_writes()) == sorted(garbage)
    assert all((tmp_path / rel).exists() for rel in kept) and not any((tmp_path / rel).exists() for rel in garbage)
    assert Location(tmp_path / "absent").remove_partial_writes() == []


def test_replacing_the_weights_file_at_the_same_path_recomputes_the_features(tmp_path):
    from ecgpipe.stages import features

    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"first weights")  # 13 bytes
    cfg = load_config("paper4", {"features": {"weights_path": str(weights)}})
    spec_keys = ["k0", "k1"]
    before = features.array_name(cfg), features.chunk_keys(cfg, spec_keys)
    assert (features.array_name(cfg), features.chunk_keys(cfg, spec_keys)) == before  # same file: same keys
    mtime = weights.stat().st_mtime_ns
    weights.write_bytes(b"other weights")  # the same size: only its time tells the cached digest it changed
    os.utime(weights, ns=(mtime + 10**9, mtime + 10**9))
    after = features.array_name(cfg), features.chunk_keys(cfg, spec_keys)
    assert after[0] != before[0] and not set(after[1]) & set(before[1])
    # and without a weights file the keys do not depend on any file
    plain = load_config("paper4")
    assert features.chunk_keys(plain, spec_keys) == features.chunk_keys(plain, spec_keys)


def test_the_model_is_refit_when_the_selection_protocol_changes():
    from ecgpipe.stages.classification import ComparisonRow, model_key

    grouped = load_config("paper4-best")
    stratified = load_config("paper4-best", {"sweep": {"select_by": "stratified_10fold"}})
    rows = [ComparisonRow(cfg=c, extractor=None, key="same-row", unit="u", features=None, data_key="d")
            for c in (grouped, stratified)]
    assert grouped.selection_protocol != stratified.selection_protocol
    # a tuned classifier's inner CV groups by subject under the grouped protocol only: another model
    assert model_key(rows[0]) != model_key(rows[1])


def test_a_record_in_a_subfolder_is_keyed_by_its_own_signal_file(tmp_path, physionet):
    """A header names its signal file relative to its own folder (PhysioNet's ptbdb, PTB-XL): the key reads it."""
    sub = tmp_path / "db" / "sub"
    sub.mkdir(parents=True)
    for ext in ("hea", "dat", "atr"):
        shutil.copy(physionet / "mitdb" / f"100.{ext}", sub / f"100.{ext}")
    files = record_files(tmp_path / "db", "sub/100", "atr")
    assert [f.relative_to(tmp_path / "db").as_posix() for f in files] == ["sub/100.hea", "sub/100.dat", "sub/100.atr"]
    digest = file_digest(files)
    signal = bytearray((sub / "100.dat").read_bytes())
    signal[-1] ^= 0xFF
    (sub / "100.dat").write_bytes(bytes(signal))
    assert file_digest(record_files(tmp_path / "db", "sub/100", "atr")) != digest  # the signal's bytes count


def test_a_header_that_opens_with_a_comment_names_its_signal_files_only(tmp_path, physionet):
    """Comments may come before the record line (WFDB allows them anywhere): the key, the record's length for task
    planning and the folder listing all read the record line after them, not the comment."""
    from ecgpipe.records import without_segments
    from ecgpipe.stages.segments import header_seconds

    for ext in ("dat", "atr"):
        shutil.copy(physionet / "mitdb" / f"100.{ext}", tmp_path / f"100.{ext}")
    (tmp_path / "100.hea").write_text("# exported by a recorder\n" + (physionet / "mitdb" / "100.hea").read_text())
    assert [f.name for f in record_files(tmp_path, "100", "atr")] == ["100.hea", "100.dat", "100.atr"]
    assert header_seconds(str(tmp_path), "100") == 650000 / 360
    assert without_segments(tmp_path, ["100"]) == ["100"]


def test_one_records_unexpected_error_fails_that_record_alone(tmp_path, physionet, monkeypatch):
    """A bug that one odd record triggers (here an IndexError) is not a transient error: the batch goes on, the
    other records are computed and marked, and the odd one is reported with its error."""
    from ecgpipe.orchestration import tasks
    from ecgpipe.stages import segments

    cfg = load_config("paper4", {"databases": {"mitdb": {"records": ["100", "101", "103"]}}})
    cfg = cfg.model_copy(update={"databases": {"mitdb": cfg.databases["mitdb"]}})
    units = segments.plan_records(cfg, physionet, download=False)
    assert [u.record for u in units] == ["100", "101", "103"]
    store = str(tmp_path / "store.zarr")
    zs.ensure_groups(store, *Layout.GROUPS)
    real = segments.compute_record

    def odd_record_fails(store_, unit, cfg_):
        if unit.record == "101":
            raise IndexError("index 7 is out of bounds for axis 0 with size 7")
        return real(store_, unit, cfg_)

    monkeypatch.setattr(segments, "compute_record", odd_record_fails)
    out = tasks.record_batch.fn(store, str(tmp_path), 0, units, cfg.model_dump_json())
    assert [type(r).__name__ for r in out] == ["RecordSummary", "RecordFailure", "RecordSummary"]
    assert "IndexError: index 7" in out[1].problem
    from ecgpipe.markers import Markers

    markers = Markers(str(tmp_path))
    assert [segments.record_done(store, markers, u) is not None for u in units] == [True, False, True]
