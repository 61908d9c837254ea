"""Nothing lost, nothing silently wrong: bad inputs and unsafe outputs are refused before any work, with one line
that names the file or setting. Real files, real processes (the CLI in a subprocess), real WFDB records."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import wfdb

from ecgpipe.classify import fit_classifier
from ecgpipe.config import DatabaseSettings, load_config
from ecgpipe.lock import LockHeld, RunLock
from ecgpipe.model import load_model, save_model
from ecgpipe.records import RecordError, read_record

from conftest import REPO, copy_records

# a system test: real Prefect flows, Dask clusters, torch models or processes (`make check` leaves it out)
pytestmark = pytest.mark.system

SLICE = """
name = "slice"
[databases.vfdb]
lead = [0]
[classes]
normal = ["(N"]
vf = ["(VF", "(VFL"]
"""


def cli(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecgpipe.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


# ---------------------------------------------------------------------------------------------- before any work
def test_a_missing_data_folder_is_an_error_that_creates_nothing(tmp_path):
    cfg = tmp_path / "slice.toml"
    cfg.write_text(SLICE)
    missing = tmp_path / "no-such-folder"
    proc = cli("run", "--config", str(cfg), "--data-dir", str(missing), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and str(missing) in proc.stderr and "Traceback" not in proc.stderr
    assert not missing.exists() and not (tmp_path / "out" / "store.zarr").exists()


def test_an_unknown_backbone_fails_before_any_record_is_read(tmp_path, physionet):
    cfg = tmp_path / "slice.toml"
    cfg.write_text(SLICE + '[features]\nbackbone = "resnet9000"\n')
    proc = cli("run", "--config", str(cfg), "--data-dir", str(physionet), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2 and "resnet9000" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "store.zarr").exists()


@pytest.mark.parametrize(("features", "problem"), [
    ('layer = "_blocks.99"', "features.layer: '_blocks.99' is neither a node nor a module of efficientnet_lite0's graph; "
                             "documented taps: _blocks.2"),
    ("image_size = 16", "features.image_size: Input should be greater than or equal to 32"),
])
def test_a_layer_the_backbone_lacks_or_a_too_small_image_fails_before_any_work(tmp_path, physionet, features, problem):
    """Both passed validation and failed in the first feature task, after the records and spectrograms, with torch's
    text ("Kernel size can't be greater than actual input size") and advice to rerun."""
    cfg = tmp_path / "slice.toml"
    cfg.write_text(SLICE + f"[features]\n{features}\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text("{}")  # an earlier run's: the failed run says it is not its own
    proc = cli("run", "--config", str(cfg), "--data-dir", str(physionet), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2 and problem in proc.stderr and "again" not in proc.stderr, proc.stderr[-2000:]
    # refused before it started (the layer by the run's checks, the image size by the config's): nothing changed in
    # the folder, so no note that its report is an earlier run's (a run that got going and failed says so)
    assert "still those of an earlier run" not in proc.stderr
    assert not (tmp_path / "out" / "store.zarr").exists() and (tmp_path / "out" / "report.json").read_text() == "{}"
    cfg.write_text(SLICE + '[features]\nlayer = "_blocks.3._project_conv"\n')  # a module of the graph: a tap too
    from ecgpipe.backbones import check_layer
    from ecgpipe.config import load_config

    check_layer("efficientnet_lite0", load_config(cfg).features.layer)


def test_a_missing_local_weights_file_fails_before_any_work(tmp_path, physionet):
    cfg = tmp_path / "slice.toml"
    cfg.write_text(SLICE + f'[features]\nweights_path = "{tmp_path / "nope.pth"}"\n')
    proc = cli("run", "--config", str(cfg), "--data-dir", str(physionet), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2 and "nope.pth" in proc.stderr
    assert not (tmp_path / "out" / "store.zarr").exists()


def test_an_empty_annotation_file_is_a_named_error(tmp_path, physionet):
    copy_records(physionet, tmp_path, "vfdb", ["418"])
    (tmp_path / "vfdb" / "418.atr").write_bytes(b"")
    with pytest.raises(RecordError, match="418.atr.*empty"):
        read_record(str(tmp_path / "vfdb"), "vfdb", "418", DatabaseSettings(fs=250.0, lead=[0]))


# ------------------------------------------------------------------------------------------------- the run lock
def test_a_second_run_on_the_same_output_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = tmp_path / "out" / RunLock.NAME
        lock.parent.mkdir()
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid, "started": "2026-12-01T10:00:00"}))
        cfg = tmp_path / "slice.toml"
        cfg.write_text(SLICE)
        proc = cli("run", "--config", str(cfg), "--data-dir", str(REPO.parent / "shared" / "data" / "physionet"),
                   "--out", str(tmp_path / "out"), timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert f"PID {holder.pid}" in proc.stderr and socket.gethostname() in proc.stderr and "2026-12-01T10:00:00" in proc.stderr
        assert not (tmp_path / "out" / "store.zarr").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_held_folder_is_refused_before_the_corpus_is_planned_and_a_run_whose_lock_is_taken_stops(tmp_path, monkeypatch):
    """A second run is refused before its checks plan (and hash) the corpus, minutes at 300 000 records; a run that
    stalled so long that another took its lock over (a suspended job, a frozen VM) stops at its next check instead of
    writing beside the other into one store."""
    import flows.ecg_pipeline as pipeline
    from ecgpipe.config import load_config
    from ecgpipe.orchestration import interrupt

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / RunLock.NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid, "started": "t"}))

        def planned(*args, **kwargs):
            raise AssertionError("the corpus was planned before the lock was checked")

        monkeypatch.setattr(pipeline, "preflight", planned)
        with pytest.raises(LockHeld, match=f"PID {holder.pid}"):
            pipeline.run_pipeline(load_config("paper4"), str(tmp_path / "data"), str(tmp_path / "out"))
    finally:
        holder.kill()
        holder.wait()

    from pathlib import Path

    from ecgpipe.location import Location
    from ecgpipe.lock import output_lock
    from ecgpipe.orchestration.bookkeeping import wait_all

    lock = tmp_path / RunLock.NAME
    real_read, hiccups = Path.read_text, []

    def stale_handle(path, *args, **kwargs):  # an NFS hiccup on the lock file: no sign that another run took it
        if path == lock and len(hiccups) < 3:
            hiccups.append(path)
            raise OSError(errno.ESTALE, "Stale file handle", str(path))
        return real_read(path, *args, **kwargs)

    interrupt.forget_stops()
    with interrupt.interruptible():  # run_pipeline's block, inside which the lock is taken
        with output_lock(Location(str(tmp_path)), on_lost=interrupt.stop_because) as held:
            held.heartbeat_s = 0.05
            held._stop.set()
            held._beat.join()
            held._stop.clear()
            monkeypatch.setattr(Path, "read_text", stale_handle)
            held._beat = threading.Thread(target=held._heartbeat, daemon=True)
            held._beat.start()
            deadline = time.time() + 5
            while len(hiccups) < 3 and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
            assert len(hiccups) == 3 and not held.lost and not interrupt.requested()  # still this run's
            lock.write_text(json.dumps({"host": "another-node", "pid": 1, "started": "later"}))  # taken over
            while not held.lost and time.time() < deadline:
                time.sleep(0.05)
            assert held.lost and interrupt.requested()
        monkeypatch.setattr(Path, "read_text", real_read)
        assert json.loads(lock.read_text())["host"] == "another-node"  # the other run's lock is left as it is
        with interrupt.interruptible():  # the flow's wait loops stop on it, as the check before the report does
            with pytest.raises(interrupt.LockLost, match="no longer holds its output folder's lock.*this run stops"):
                wait_all([], "segments", logging.getLogger("test"))
    assert not interrupt.requested()  # outside a run, a stop an earlier run was told stops nothing
    interrupt.forget_stops()
    with interrupt.interruptible():
        assert not interrupt.requested()  # the next run starts clean


def test_sigterm_while_the_corpus_is_checked_stops_at_once_keeping_the_digests_read(tmp_path, physionet, monkeypatch):
    """The checks before a run hash every record (minutes at 300 000 records, hours for terabytes of Holter data) and
    a batch system sends SIGKILL soon after its SIGTERM (SLURM: 30 s): a real SIGTERM to this process stops the run at
    the next record, before its lock, run.json, store or server exist (before 0.17.0 it took the process down at once,
    or was seen only once the flow ran). The digests of the records read so far are kept (before 0.19.0 none were: a
    corpus that takes longer to hash than a job may run never got past the checks), and so are those the flow's plan
    reads when it plans afresh (a deployment's run). The signal handlers are this process's own again afterwards."""
    import signal

    from ecgpipe import input_digests
    from ecgpipe.orchestration import interrupt
    from ecgpipe.orchestration.interrupt import RunInterrupted
    from ecgpipe.plan import RunPlan
    from ecgpipe.stages.segments import plan_records
    from flows.ecg_pipeline import run_pipeline

    real, calls = input_digests.InputDigests.__call__, []

    def hashed(self, paths):
        calls.append(paths)
        if len(calls) in stops:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, paths)

    monkeypatch.setattr(input_digests.InputDigests, "__call__", hashed)
    before = signal.getsignal(signal.SIGTERM)
    records = ["100", "101", "103", "105", "106", "108"]
    cfg = load_config("paper4", {"databases": {"mitdb": {"records": records}}})  # and vfdb's 22
    out, stops = tmp_path / "out", {3}
    with pytest.raises(RunInterrupted, match=r"interrupted by SIGTERM.*input digests of the 2 record\(s\) read before the stop are kept"):
        run_pipeline(cfg, str(physionet), str(out))
    assert len(calls) == 3  # the third record, asked for as the signal came, was not hashed: its check stopped the run
    assert sorted(p.name for p in out.iterdir()) == ["inputs"]  # no lock, no run.json, no store: the digests alone
    assert signal.getsignal(signal.SIGTERM) is before

    def read_by_a_new_plan() -> tuple[int, int]:  # (records read, records planned)
        stops.clear()  # no signal outside a run
        digests = input_digests.InputDigests(str(out))
        planned = plan_records(cfg, physionet, digest_of=digests)
        return digests.hashed, len(planned)

    read, planned = read_by_a_new_plan()
    assert planned == len(records) + 22 and read == planned - 2  # the next run reads only the records not read before

    calls.clear()
    stops = {2}  # the flow's plan, hashing afresh (no preflight in its process): stopped at its second record
    (out / "inputs" / "digests.json").unlink()
    interrupt.forget_stops()
    with interrupt.interruptible(), pytest.raises(RunInterrupted, match="interrupted by SIGTERM"):
        RunPlan.create(cfg, str(physionet), str(out), download=False)
    read, planned = read_by_a_new_plan()
    assert read == planned - 1

    calls.clear()
    stops = {2}  # a folder that cannot be made (below a file): the stop is told as a stop, digests or not
    (tmp_path / "a-file").write_text("")
    with pytest.raises(RunInterrupted, match="interrupted by SIGTERM") as stopped:
        run_pipeline(cfg, str(physionet), str(tmp_path / "a-file" / "out"))
    assert "digests" not in str(stopped.value)


def test_a_report_is_replaced_as_a_set_or_not_at_all(tmp_path, monkeypatch):
    """A full disk while the report's files are written leaves the earlier report whole (before 0.16.0 its files
    were replaced one by one: a new report.json beside an old report.html, a PNG cut short), and no staged file."""
    import builtins
    import errno

    from ecgpipe.location import Location

    out = Location(str(tmp_path))
    out.write_files({"a.png": b"old png", "report.html": b"old html", "report.json": b"old json"})
    real_open, opened = builtins.open, []

    def fills_up(path, mode="r", *args, **kwargs):
        if "w" in mode and ".tmp-" in str(path):
            opened.append(path)
            if len(opened) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fills_up)
    with pytest.raises(OSError, match="No space left"):
        out.write_files({"a.png": b"new png", "report.html": b"new html", "report.json": b"new json"})
    monkeypatch.setattr(builtins, "open", real_open)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {"a.png": b"old png", "report.html": b"old html",
                                                                    "report.json": b"old json"}
    out.write_files({"a.png": b"new png", "report.json": b"new json"})
    assert (tmp_path / "a.png").read_bytes() == b"new png" and (tmp_path / "report.json").read_bytes() == b"new json"


def test_an_output_folder_is_locked_and_an_object_store_url_says_it_cannot_be(tmp_path):
    """A local folder (or a file:// URL) gets the run lock; an object store's URL cannot (no atomic create-if-absent
    there), and the run says that two runs into it at once are not refused, instead of implying that they are."""
    from ecgpipe.location import Location
    from ecgpipe.lock import output_lock

    for out in (str(tmp_path / "a"), f"file://{tmp_path / 'b'}"):
        location = Location(out)
        location.makedirs()
        with output_lock(location):
            with pytest.raises(LockHeld):
                RunLock(location.local_root).acquire()
    with pytest.warns(UserWarning, match=r"--out memory://runs/x: an object store holds no run lock, so a second run"):
        with output_lock(Location("memory://runs/x")) as lock:
            assert lock is None


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_warning(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / RunLock.NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": gone.pid, "started": "then"}))
    with pytest.warns(UserWarning, match=f"PID {gone.pid}.*no longer running"):
        with RunLock(tmp_path):
            held = json.loads((tmp_path / RunLock.NAME).read_text())
            assert held["pid"] == os.getpid()
            with pytest.raises(LockHeld, match=f"PID {os.getpid()}"):
                RunLock(tmp_path).acquire()
    assert not (tmp_path / RunLock.NAME).exists()  # released


def test_a_lock_of_another_host_is_held_while_touched_and_taken_over_once_silent(tmp_path):
    """On a shared file system a holder on another node cannot be asked whether it lives: its lock is alive while
    it keeps being touched, and a node that died leaves a lock that goes stale instead of blocking the folder."""
    lock = tmp_path / RunLock.NAME
    lock.write_text(json.dumps({"host": "node-that-died", "pid": os.getpid(), "started": "then", "children": [os.getpid()]}))
    with pytest.raises(LockHeld, match="PID .* on node-that-died.*last seen 0 s ago.*taken over after 600 s"):
        RunLock(tmp_path).acquire()  # just touched: a live run elsewhere
    an_hour_ago = time.time() - 3600
    os.utime(lock, (an_hour_ago, an_hour_ago))
    with pytest.warns(UserWarning, match="node-that-died.*not touched the lock for 3[56]\\d\\d s"):
        with RunLock(tmp_path) as mine:  # and this process, whose PID the dead node's lock names, is not stopped
            assert json.loads(lock.read_text())["host"] == socket.gethostname()
            assert mine.holder_running()
    assert not lock.exists()


def test_a_lock_of_another_host_is_judged_on_the_file_systems_clock_not_this_hosts(tmp_path, monkeypatch):
    """A node whose clock runs an hour ahead (or behind) of the file system's must neither take over a lock another
    node touched a moment ago nor keep waiting on one silent for an hour: silence is measured between two stamps of
    the same file system, the lock's and a probe's touched now."""
    lock = tmp_path / RunLock.NAME
    lock.write_text(json.dumps({"host": "busy-node", "pid": 1, "started": "now"}))  # just touched by a live run
    true_time = time.time
    for skew in (3600.0, -3600.0):
        monkeypatch.setattr(time, "time", lambda skew=skew: true_time() + skew)  # this host's clock is off by an hour
        judge = RunLock(tmp_path, stale_after_s=600)
        assert judge.silent_s() < 60 and judge.holder_running()
        with pytest.raises(LockHeld, match="busy-node"):
            judge.acquire()
    an_hour_ago = true_time() - 3600
    os.utime(lock, (an_hour_ago, an_hour_ago))
    monkeypatch.setattr(time, "time", lambda: true_time() - 3600)  # this clock says the lock was touched just now
    assert RunLock(tmp_path).silent_s() > 3000 and not RunLock(tmp_path).holder_running()
    assert sorted(p.name for p in tmp_path.iterdir()) == [RunLock.NAME]  # no probe left behind


def test_a_held_lock_is_touched_while_the_run_lives(tmp_path):
    with RunLock(tmp_path, heartbeat_s=0.05) as held:
        lock = tmp_path / RunLock.NAME
        os.utime(lock, (time.time() - 3600, time.time() - 3600))
        deadline = time.time() + 5
        while held.silent_s() > 60 and time.time() < deadline:
            time.sleep(0.05)
        assert held.silent_s() < 60  # the heartbeat touched it again
        # seen from another host (its name in the lock not ours), the lock is a live run's
        doc = json.loads(lock.read_text())
        lock.write_text(json.dumps({**doc, "host": "elsewhere"}))
        assert RunLock(tmp_path, stale_after_s=60).holder_running()
        lock.write_text(json.dumps(doc))
    assert not lock.exists() and not held._beat.is_alive()  # released: the heartbeat stopped


def test_a_run_whose_lock_was_taken_over_neither_touches_nor_removes_the_new_one(tmp_path):
    lock = tmp_path / RunLock.NAME
    with pytest.warns(UserWarning, match="no longer holds"):
        with RunLock(tmp_path, heartbeat_s=0.05) as stalled:
            newer = {"host": "other-node", "pid": 1, "started": "later"}
            lock.write_text(json.dumps(newer))  # taken over while this run stalled
            os.utime(lock, (time.time() - 3600, time.time() - 3600))
            stalled._beat.join(timeout=5)
            assert not stalled._beat.is_alive()  # the heartbeat stopped instead of keeping the new lock alive
            assert stalled.silent_s() > 3000
    assert json.loads(lock.read_text()) == newer  # release left the other run's lock in place


def test_two_runs_taking_over_one_stale_lock_cannot_both_hold_it(tmp_path):
    """The second run judged the same stale lock; by the time it acts the first has taken the folder: it gives the
    fresh lock back and is refused, instead of deleting it and holding the folder too."""
    lock = tmp_path / RunLock.NAME
    stale = {"host": "node-that-died", "pid": 7, "started": "then"}
    lock.write_text(json.dumps(stale))
    os.utime(lock, (time.time() - 3600, time.time() - 3600))
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    judged = second.holder()
    with pytest.warns(UserWarning, match="taking over"):
        first.acquire()
    assert not second._take_over(judged)  # what it judged stale is gone; the first run's lock is given back
    assert json.loads(lock.read_text())["pid"] == os.getpid() and first._mine()
    with pytest.raises(LockHeld):
        second.acquire()
    first.release()
    assert not lock.exists() and not list(tmp_path.glob(".ecgpipe.lock.stale.*"))


# ---------------------------------------------------------------------------------------------- transient or not
def test_disk_full_and_permission_errors_are_not_retried():
    from ecgpipe.orchestration.tasks import is_transient

    assert is_transient(OSError(errno.EIO, "I/O error"))
    assert is_transient(ConnectionError("worker lost"))
    for code in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT):
        assert not is_transient(OSError(code, os.strerror(code)))
    assert not is_transient(RecordError("x", "bad"))


# ------------------------------------------------------------------------------------------------------ predict
@pytest.fixture(scope="module")
def rhythm_model(tmp_path_factory, physionet):
    """A rhythm-block-only model (no CNN: prediction is quick) and 60-s excerpts of real mitdb records."""
    tmp = tmp_path_factory.mktemp("predict")
    cfg = load_config("paper4", {"rhythm": {"enabled": True}, "classifier": {"inputs": "rhythm"}})
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    model, _ = fit_classifier(rng.normal(size=(120, 8)) + y[:, None], y, cfg.classifier)
    path = tmp / "model.skops"
    for folder, start in (("a", 0), ("b", 360 * 60)):  # two recordings of one name
        source = wfdb.rdrecord(str(physionet / "mitdb" / "100"), sampfrom=start, sampto=start + 360 * 60, channels=[0])
        (tmp / folder).mkdir()
        wfdb.wrsamp("rec", fs=360, units=["mV"], sig_name=["MLII"], p_signal=source.p_signal, fmt=["212"], write_dir=str(tmp / folder))
    short = wfdb.rdrecord(str(physionet / "mitdb" / "100"), sampto=int(360 * 1.5), channels=[0])  # 1.5 s < a 2-s window
    (tmp / "c").mkdir()
    wfdb.wrsamp("short", fs=360, units=["mV"], sig_name=["MLII"], p_signal=short.p_signal, fmt=["212"], write_dir=str(tmp / "c"))
    from ecgpipe.keys import signal_digest

    training = {"n_segments": 120, "recordings_sha256": {"mitdb/100x": signal_digest(tmp / "a", "rec")}}
    save_model(path, model, cfg, weights_source="test", n_cnn=None, training=training)
    wfdb.wrann("rec", "atr", np.array([10, 360 * 30]), symbol=["+", "+"], aux_note=["(N", "(AFIB"], write_dir=str(tmp / "a"), fs=360)
    return {"tmp": tmp, "model": path}


def test_predict_refuses_to_overwrite_a_reference_annotation(rhythm_model):
    a = rhythm_model["tmp"] / "a"
    before = (a / "rec.atr").read_bytes()
    proc = cli("predict", "--model", str(rhythm_model["model"]), str(a / "rec"), "--extension", "atr", "--out", str(a))
    assert proc.returncode == 2 and "rec.atr" in proc.stderr and "input" in proc.stderr
    assert (a / "rec.atr").read_bytes() == before


def test_records_of_one_name_from_two_folders_get_distinct_outputs(rhythm_model, tmp_path):
    tmp = rhythm_model["tmp"]
    out = tmp_path / "pred"
    proc = cli("predict", "--model", str(rhythm_model["model"]), str(tmp / "a" / "rec"), str(tmp / "b" / "rec"),
               "--out", str(out), "--compare", "atr")
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.pred"))
    assert len(written) == 2 and written[0] != written[1]
    rows = (out / "records.csv").read_text().splitlines()[1:]
    assert len(rows) == 2
    agreement = json.loads((out / "agreement.json").read_text())
    assert len(agreement) == 2
    # b/rec has no reference annotation: still predicted, its agreement marked unavailable
    missing = [v for v in agreement.values() if not v.get("available", True)]
    assert len(missing) == 1 and "not found" in missing[0]["reason"]
    assert sum(1 for line in (out / "episodes.csv").read_text().splitlines()[1:] if "/b/rec" in line) >= 1
    # a/rec is one of the model's training recordings (same bytes, another folder): a warning, and its agreement says so
    assert f"{tmp / 'a' / 'rec'} is mitdb/100x, one of this model's training records" in proc.stderr
    assert [v.get("training_record") for v in agreement.values()].count("mitdb/100x") == 1
    assert json.loads((out / "model.json").read_text())["sha256"] == load_model(rhythm_model["model"]).digest


def test_a_training_record_is_predicted_and_flagged_without_compare(rhythm_model, tmp_path):
    """Predicting one of the model's training recordings without --compare: the warning, and every output written
    (the flag alone once broke the console line with a KeyError)."""
    proc = cli("predict", "--model", str(rhythm_model["model"]), str(rhythm_model["tmp"] / "a" / "rec"), "--out", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    assert "one of this model's training records" in proc.stderr and "Traceback" not in proc.stderr
    assert "episode(s) over" in proc.stdout and "agreement" not in proc.stdout
    for name in ("episodes.csv", "records.csv", "endpoints.csv", "model.json"):
        assert (tmp_path / "p" / name).is_file()
    assert not (tmp_path / "p" / "agreement.json").exists()


def test_a_zero_or_negative_stride_is_a_clear_error(rhythm_model, tmp_path):
    for stride in ("0", "-1"):
        proc = cli("predict", "--model", str(rhythm_model["model"]), str(rhythm_model["tmp"] / "a" / "rec"),
                   "--stride-s", stride, "--out", str(tmp_path / "p"))
        assert proc.returncode == 2 and "--stride-s" in proc.stderr and "positive" in proc.stderr


@pytest.fixture
def full_disk(tmp_path):
    """A real 256-KiB file system (tmpfs; the tests run as root, as CI does)."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_leaves_no_half_written_file(full_disk):
    from ecgpipe.location import Location

    out = Location(str(full_disk))
    out.write_text("small.json", "{}")
    with pytest.raises(OSError) as err:
        out.write_text("big.json", "x" * (1 << 20))
    assert err.value.errno == errno.ENOSPC
    assert sorted(p.name for p in full_disk.iterdir()) == ["small.json"]  # no .tmp-* left, nothing half-written


def test_a_run_on_a_full_disk_says_so_and_leaves_no_stray_file(full_disk, tmp_path, physionet):
    copy_records(physionet, tmp_path / "data", "vfdb", ["418", "426"])
    cfg = tmp_path / "slice.toml"
    cfg.write_text(SLICE)
    proc = cli("run", "--config", str(cfg), "--data-dir", str(tmp_path / "data"), "--out", str(full_disk / "out"), timeout=300)
    assert proc.returncode != 0
    assert "No space left on device" in proc.stderr
    assert not list(full_disk.rglob(".tmp-*"))
    if not (full_disk / "out" / "run.json").exists():  # the message never points at a file that is not there
        assert "run.json;" not in proc.stderr


def test_a_record_shorter_than_one_window_still_gets_an_answer(rhythm_model, tmp_path):
    out = tmp_path / "pred"
    proc = cli("predict", "--model", str(rhythm_model["model"]), str(rhythm_model["tmp"] / "c" / "short"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    header, row = (out / "records.csv").read_text().splitlines()
    assert header.endswith(",note,error") and "shorter (1.5 s) than one window (2 s)" in row
    fields = dict(zip(header.split(","), row.split(",")))
    assert fields["class"] in ("normal", "afib", "vt", "vf")  # a class, not empty
    assert fields["scored_s"] == fields["duration_s"] == "1.500" and fields["error"] == ""  # it spans the record


def test_status_after_a_run_stopped_by_a_class_without_segments_shows_the_records_done(tmp_path, physionet):
    """A class whose labels occur nowhere stops the run after the records were read; `status` then shows those
    records done and says why nothing after them can be planned, instead of only repeating the error."""
    copy_records(physionet, tmp_path / "data", "vfdb", ["418", "419"])
    cfg = tmp_path / "typo.toml"
    cfg.write_text(SLICE + 'afib = ["(AF"]\n')  # a typo: the label is (AFIB
    proc = cli("run", "--config", str(cfg), "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "class(es) ['afib'] have no segments" in proc.stderr
    assert "labels found: ['(N', '(NOISE', '(VFL']" in proc.stderr  # what the records hold: the typo shows
    run_json = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run_json["status"] == "failed" and run_json["records"]["records"] == run_json["records"]["used"] + \
        run_json["records"]["no_window_of_a_class"] == 2  # the records read are accounted for even so
    proc = cli("status", "--out", str(tmp_path / "out"), "--json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["stages"]["segments"]["done"] == status["stages"]["segments"]["total"] == 2
    assert "class(es) ['afib'] have no segments" in status["note"]
    assert status["stages"]["table"]["rerun_computes"] == "after the fix"


def test_a_class_without_segments_names_the_records_that_failed_and_status_during_a_run_does_not_blame_the_config(
        tmp_path, physionet):
    """A lead misspelt for one database: its records fail, and the class only they hold has no segments. The error
    blamed the class labels; the records' own error was in run.json only. `status` of a run still reading records
    said to fix a correct config."""
    from ecgpipe.config import load_config
    from ecgpipe.status import run_status

    copy_records(physionet, tmp_path / "data", "vfdb", ["418"])
    copy_records(physionet, tmp_path / "data", "mitdb", ["201"])
    cfg = tmp_path / "lead.toml"
    cfg.write_text(SLICE.replace("[classes]", '[databases.mitdb]\nlead = ["MLIII"]\n[classes]') + 'afib = ["(AFIB"]\n')
    proc = cli("run", "--config", str(cfg), "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "class(es) ['afib'] have no segments" in proc.stderr
    assert ("1 record(s) could not be read, and may hold them: 1 x no lead matching ['MLIII'] (the record has "
            "['MLII', 'V1']; a channel index chooses a lead whatever its name: databases.<db>.lead = [0], ecgpipe "
            "predict --lead 0) (e.g. ") in proc.stderr and "mitdb/201)" in proc.stderr, proc.stderr
    # status with the records read so far (here: one of the two, as during a run) says what it waits for
    (tmp_path / "data" / "mitdb" / "RECORDS").write_text("201\n")
    fixed = load_config(cfg, {"databases": {"mitdb": {"lead": ["MLII"]}}})
    status = run_status(fixed, str(tmp_path / "data"), str(tmp_path / "out"))
    assert "the records read so far (1 of 2) do not yet give every class" in status["note"], status["note"]
    assert status["stages"]["table"]["rerun_computes"] == "after the records"


def test_a_protocol_the_windows_cannot_support_is_named_before_any_spectrogram(tmp_path, physionet):
    """Leave-one-database-out on databases that share one class failed in the classification stage, after every
    feature was computed, with sklearn-like text and advice to run again."""
    copy_records(physionet, tmp_path / "data", "vfdb", ["418"])
    copy_records(physionet, tmp_path / "data", "mitdb", ["201"])
    cfg = tmp_path / "lodo.toml"
    cfg.write_text(SLICE.replace("[classes]", '[databases.mitdb]\nlead = ["MLII"]\n[classes]') + 'afib = ["(AFIB"]\n'
                   '[sampling]\nmax_per_class = 20\n[cv]\nprotocols = ["stratified_10fold", "leave_one_database_out"]\n')
    proc = cli("run", "--config", str(cfg), "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert ("cv.protocols: leave_one_database_out: the databases ['mitdb', 'vfdb'] share fewer than two classes, so "
            "leave_one_database_out cannot be run on this run's windows") in proc.stderr
    stages = json.loads((tmp_path / "out" / "run.json").read_text())["stages"]
    assert stages.get("spectrograms", {}).get("computed", 0) == 0 and "features" not in stages or \
        stages["features"]["computed"] == 0


def test_a_two_patient_pilot_whose_grouped_fold_trains_on_one_class_still_gets_its_report(tmp_path, physionet):
    """mitdb 203 holds AF only among these classes: the grouped fold that tests 201 trains on 203 alone. The run
    crashed in classification (sklearn: "The number of classes has to be greater than one"), with no report for any
    protocol; now every protocol is reported and the fold is named."""
    copy_records(physionet, tmp_path / "data", "mitdb", ["201", "203"])
    cfg = tmp_path / "pilot.toml"
    cfg.write_text('name = "pilot"\n[databases.mitdb]\nlead = ["MLII"]\n[classes]\nnormal = ["(N"]\nafib = ["(AFIB"]\n'
                   "[sampling]\nmax_per_class = 40\n[features]\nimage_size = 32\n[cv]\nn_splits = 2\n")
    proc = cli("run", "--config", str(cfg), "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    grouped = report["protocols"]["grouped_by_subject"]
    assert "folds train on one class only" in grouped["note"] and "afib" in grouped["note"]
    assert "some folds trained on one class only" in report["warning"] and "stratified_10fold" in report["protocols"]
    assert "some folds trained on one class only" in proc.stdout
