"""Incremental reruns and fault tolerance, with real processes: reruns, corrupted chunks, parameter changes, a record
fixed on disk, the whole run SIGKILLed mid-stage, a Dask worker SIGKILLed mid-stage."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from ecgpipe.config import load_config
from ecgpipe.stages.table import stored_segment_ids

from conftest import REPO, copy_records, start_scheduler, start_worker, stop, wait_for_workers

# a system test: real Prefect flows, Dask clusters, torch models or processes (`make check` leaves it out)
pytestmark = pytest.mark.system

RECORDS = ["418", "426", "430"]
CHUNK = 8
TOML = f"""
name = "incremental"
[databases.vfdb]
lead = [0]
[classes]
normal = ["(N"]
vt = ["(VT"]
vf = ["(VF", "(VFIB", "(VFL"]
[sampling]
max_per_class = 40
[cv]
n_splits = 3
[run]
chunk_size = {CHUNK}
n_workers = 2
"""


def run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def computed(out: Path, with_table: bool = False) -> dict:
    """Units computed per stage by the last run (the one-unit segment table only when asked)."""
    return {stage: c["computed"] for stage, c in run_json(out)["stages"].items() if with_table or stage != "table"}


def snapshot(out: Path) -> dict:
    """sha256 of every file of the store, and every marker's key and data digest (not its provenance: which worker
    ran a unit may differ between runs)."""
    files = {}
    for p in sorted((out / "store.zarr").rglob("*")):
        if p.is_file():
            files[str(p.relative_to(out))] = hashlib.sha256(p.read_bytes()).hexdigest()
    for p in sorted((out / "markers").rglob("*.json")):
        marker = json.loads(p.read_text())
        files[str(p.relative_to(out))] = (marker["key"], marker.get("digest"))
    return files


def features(out: Path) -> np.ndarray:
    report = json.loads((out / "report.json").read_text())
    return zarr.open_array(f"{out}/store.zarr/{report['features_array']}", mode="r")[...]


def config_file(tmp: Path, extra: str = "") -> Path:
    path = tmp / f"cfg-{abs(hash(extra))}.toml"
    path.write_text(TOML + extra)
    return path


def run(cfg_path: Path, data: Path, out: Path, **kw) -> dict:
    from flows.ecg_pipeline import run_pipeline

    return run_pipeline(load_config(cfg_path), str(data), str(out), **kw)


@pytest.fixture(scope="module")
def cold(tmp_path_factory, physionet, prefect_server):
    tmp = tmp_path_factory.mktemp("incremental")
    data = tmp / "data"
    copy_records(physionet, data, "vfdb", RECORDS)
    cfg = config_file(tmp)
    out = tmp / "cold"
    report = run(cfg, data, out)
    n_chunks = -(-report["n_segments"] // CHUNK)
    assert computed(out, with_table=True) == {"segments": 3, "table": 1, "spectrograms": n_chunks, "features": n_chunks, "classify": 1}
    return {"tmp": tmp, "data": data, "cfg": cfg, "out": out, "report": report, "n_chunks": n_chunks}


def copy_run(cold, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(cold["out"], out)
    return out


def test_no_change_rerun_computes_nothing_and_changes_no_byte(cold, tmp_path):
    out = copy_run(cold, tmp_path)
    before = snapshot(out)
    report = run(cold["cfg"], cold["data"], out)
    assert computed(out, with_table=True) == {"segments": 0, "table": 0, "spectrograms": 0, "features": 0, "classify": 0}
    skipped = {s: c["skipped"] for s, c in run_json(out)["stages"].items()}
    assert skipped == {"segments": 3, "table": 1, "spectrograms": cold["n_chunks"], "features": cold["n_chunks"], "classify": 1}
    assert run_json(out)["status"] == "completed"
    assert snapshot(out) == before
    assert report["protocols"] == cold["report"]["protocols"]
    # the plan kept each record's input digest for the next run (the data was copied a run's length ago: settled)
    # (and the recordings' signal-only digests, for the model's provenance, beside them); the flow's plan took the
    # preflight's digests (one read per changed record per run), none is left waiting
    from ecgpipe import input_digests

    assert not input_digests._PREFLIGHT
    kept = json.loads((out / "inputs" / "digests.json").read_text())["digests"]
    assert set(report["provenance"]["record_files_sha256"].values()) <= {d for e in kept.values() for _, d in e.values()}


def test_corrupted_chunk_and_deleted_marker_recompute_exactly_those(cold, tmp_path):
    out = copy_run(cold, tmp_path)
    report = cold["report"]
    spec_chunk = out / "store.zarr" / report["spectrograms_array"] / "c" / "2" / "0" / "0"
    assert spec_chunk.is_file()
    spec_chunk.write_bytes(b"\x00" * spec_chunk.stat().st_size)  # same size, wrong bytes
    feat_marker = out / "markers" / report["features_array"].rsplit("/", 1)[0] / "000005.json"
    feat_marker.unlink()
    (out / "model.skops").write_bytes((out / "model.skops").read_bytes()[:100])  # a truncated model artifact
    report = run(cold["cfg"], cold["data"], out)
    assert computed(out) == {"segments": 0, "spectrograms": 1, "features": 1, "classify": 0}
    assert snapshot(out) == snapshot(cold["out"])  # repaired to exactly the uninterrupted run's bytes
    from ecgpipe.model import load_model

    # the truncated artifact was refitted, not reused (its digest, in the report, could not even be read)
    assert load_model(out / "model.skops").class_names == load_model(cold["out"] / "model.skops").class_names


def test_parameter_changes_recompute_only_the_stages_they_touch(cold, tmp_path):
    out = copy_run(cold, tmp_path)
    n = cold["n_chunks"]
    tmp = cold["tmp"]
    from ecgpipe.status import run_status

    changed = config_file(tmp, "[classifier]\nC = 1.0\n")
    status = run_status(load_config(changed), cold["data"], str(out))["stages"]["classify"]
    assert (status["stale"], status["missing"], status["rerun_computes"]) == (1, 0, 1)  # the row's earlier result
    run(changed, cold["data"], out)
    assert computed(out) == {"segments": 0, "spectrograms": 0, "features": 0, "classify": 1}
    run(config_file(tmp, '[features]\nlayer = "_blocks.10"\n'), cold["data"], out)
    assert computed(out) == {"segments": 0, "spectrograms": 0, "features": n, "classify": 1}
    assert len(list(zarr.open_group(f"{out}/store.zarr/features", mode="r").group_keys())) == 2  # both layers kept
    run(config_file(tmp, "[spectrogram]\nnfft = 128\n"), cold["data"], out)
    assert computed(out) == {"segments": 0, "spectrograms": n, "features": n, "classify": 1}
    # back to the original settings: everything is still there
    run(cold["cfg"], cold["data"], out)
    assert computed(out) == {"segments": 0, "spectrograms": 0, "features": 0, "classify": 0}


def test_rhythm_block_changes_recompute_records_and_classifier_not_spectrograms_or_features(cold, tmp_path):
    """RR features and waveform descriptors are stored with a record's windows but keyed apart from them: turning
    them on (or changing their context) redoes the records and the classifier, never a spectrogram or CNN chunk."""
    out = copy_run(cold, tmp_path)
    fused = '[rhythm]\nenabled = true\nwaveform = true\ncontext_s = 8.0\n[classifier]\ninputs = "cnn+rhythm"\n'
    report = run(config_file(cold["tmp"], fused), cold["data"], out)
    assert computed(out) == {"segments": 3, "spectrograms": 0, "features": 0, "classify": 1}
    block = zarr.open_array(f"{out}/store.zarr/segments/rhythm_features", mode="r")
    assert block.shape == (report["n_segments"], 19) and len(block.attrs["columns"]) == 19
    assert np.isfinite(block[...]).all() and np.abs(block[:, 8:]).sum() > 0  # the waveform columns are filled
    assert "waveform descriptors" in report["features_description"] and report["classifier"].startswith("+RR+wave")
    run(config_file(cold["tmp"], fused.replace("8.0", "12.0")), cold["data"], out)
    assert computed(out) == {"segments": 3, "spectrograms": 0, "features": 0, "classify": 1}


def test_fixed_record_recomputes_only_its_downstream_chunks(cold, tmp_path, physionet):
    data = tmp_path / "data"
    copy_records(physionet, data, "vfdb", RECORDS)
    dat = data / "vfdb" / "426.dat"
    dat.write_bytes(dat.read_bytes()[:100000])
    out = tmp_path / "out"
    broken = run(cold["cfg"], data, out)
    assert [s["record"].endswith("426") for s in broken["skipped_records"]] == [True]
    assert run_json(out)["stages"]["segments"]["failed"] == 1
    uids_before = stored_segment_ids(f"{out}/store.zarr")

    shutil.copy(physionet / "vfdb" / "426.dat", dat)
    fixed = run(cold["cfg"], data, out)
    assert fixed["skipped_records"] == []
    uids_after = stored_segment_ids(f"{out}/store.zarr")
    chunks = lambda uids: [uids[i : i + CHUNK] for i in range(0, len(uids), CHUNK)]  # noqa: E731
    before, after = chunks(uids_before), chunks(uids_after)
    changed = sum(1 for i, c in enumerate(after) if i >= len(before) or before[i] != c)
    assert 0 < changed < len(after)
    c = computed(out)
    assert c["segments"] == 1 and run_json(out)["stages"]["segments"]["tasks"] == 1  # only its batch of one
    assert c["segments"] == 1 and run_json(out)["stages"]["segments"]["skipped"] == 2
    assert c["spectrograms"] == changed and c["features"] == changed and c["classify"] == 1
    # and the result is the same dataset a cold run on the fixed data selects (rows may sit elsewhere)
    assert sorted(uids_after) == sorted(stored_segment_ids(f"{cold['out']}/store.zarr"))


def _feature_markers(out: Path) -> int:
    return len(list((out / "markers" / "features").rglob("*.json"))) if (out / "markers" / "features").exists() else 0


def test_sigkill_of_the_whole_run_then_rerun_finishes_only_the_rest(cold, tmp_path):
    out = tmp_path / "out"
    with open(tmp_path / "console.txt", "w") as console:  # --verbose: Prefect's per-task lines reach the console
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecgpipe.cli", "run", "--config", str(cold["cfg"]), "--data-dir", str(cold["data"]),
             "--out", str(out), "--verbose"],
            cwd=REPO, env=dict(os.environ), stdout=console, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + 300
        while _feature_markers(out) < 1 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its Dask cluster and its workers
        proc.wait()
    # the segments stage had finished before the first feature chunk did: its tasks' lines were written by then
    # (the quiet default writes none: test_the_first_records_failing_alike_stop_the_run)
    lines = (tmp_path / "console.txt").read_text()
    assert "Task run 'segments" in lines and "Finished in state Completed()" in lines, lines[-3000:]
    done_at_kill = _feature_markers(out)
    assert 1 <= done_at_kill < cold["n_chunks"], f"not killed mid-stage ({done_at_kill} of {cold['n_chunks']} chunks done)"
    assert not (out / "report.json").exists()
    assert run_json(out)["status"] == "running"  # written as it began: no earlier run's "completed" outlives a kill
    status = subprocess.run([sys.executable, "-m", "ecgpipe.cli", "status", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    # the lock it left names the run that did not finish (status said "last run none")
    assert f"the last run did not finish (PID {proc.pid} on " in status.stdout, status.stdout + status.stderr

    # what writes cut short leave (a record bundle, a Zarr chunk, a marker): the rerun, holding the folder, removes them
    hexname = "0123456789abcdef" * 2  # uuid4().hex, as the writers name their temporary files
    leftovers = [next((out / "store.zarr" / "records").rglob("*.zip")).parent / f".tmp-{hexname}",
                 out / "markers" / f".tmp-{hexname}", out / "store.zarr" / f"c.{hexname}.partial"]
    an_hour_ago = time.time() - 3600  # a write at work, untouched for less than ten minutes, would be left alone
    for path in leftovers:
        path.write_bytes(b"half")
        os.utime(path, (an_hour_ago, an_hour_ago))
    run(cold["cfg"], cold["data"], out)
    assert not [path for path in leftovers if path.exists()]
    c = computed(out)
    assert c["segments"] == 0 and c["spectrograms"] == 0
    assert c["features"] == cold["n_chunks"] - done_at_kill
    assert np.array_equal(features(out), features(cold["out"]))


def test_killed_dask_worker_mid_stage_still_completes(cold, tmp_path):
    from distributed import Client

    scheduler, sched_file = start_scheduler(tmp_path)
    procs = [scheduler, start_worker(sched_file, "--nworkers", "2", "--local-directory", str(tmp_path / "w"))]
    try:
        address = wait_for_workers(sched_file, 2)
        with Client(scheduler_file=str(sched_file), timeout=60) as client:
            worker_pids = list(client.run(os.getpid).values())
        out = tmp_path / "out"
        killed = []

        def kill_one_worker_mid_stage():
            deadline = time.time() + 300
            while _feature_markers(out) < 1 and time.time() < deadline:
                time.sleep(0.02)
            os.kill(worker_pids[0], signal.SIGKILL)
            killed.append(_feature_markers(out))

        killer = threading.Thread(target=kill_one_worker_mid_stage, daemon=True)
        killer.start()
        run(cold["cfg"], cold["data"], out, scheduler=address)
        killer.join(timeout=10)
        assert killed and killed[0] < cold["n_chunks"], "the worker was not killed mid-stage"
        assert run_json(out)["status"] == "completed"
        assert np.allclose(features(out), features(cold["out"]), atol=1e-5)
    finally:
        stop(procs)


def test_failed_chunks_leave_the_stage_running_and_a_rerun_does_only_them(cold, tmp_path, monkeypatch):
    from flows.ecg_pipeline import FAULT_ENV

    out = tmp_path / "out"
    cfg = tmp_path / "retry.toml"
    cfg.write_text(TOML.replace("n_workers = 2", "n_workers = 2\nretries = 1\nretry_delay_s = [0.1]"))
    monkeypatch.setenv(FAULT_ENV, "spectrograms:2,features:5")  # inherited by the LocalCluster's worker processes
    with pytest.raises(Exception, match="chunk"):
        run(cfg, cold["data"], out)
    doc = run_json(out)
    assert doc["status"] == "failed"
    assert doc["stages"]["spectrograms"]["failed"] == 1 and doc["stages"]["spectrograms"]["computed"] == cold["n_chunks"] - 1
    # features: chunk 2 blocked by its spectrogram, chunk 5 failed itself; every other chunk still computed
    assert doc["stages"]["features"]["failed"] == 2 and doc["stages"]["features"]["computed"] == cold["n_chunks"] - 2
    failed = {f["unit"].rsplit("/", 1)[1]: f["error"] for f in doc["failed"] if f["stage"] != "classify"}
    assert "injected failure" in failed["000005"] and set(failed) == {"000002", "000005"}
    assert not (out / "report.json").exists()

    monkeypatch.delenv(FAULT_ENV)
    run(cfg, cold["data"], out)
    assert computed(out) == {"segments": 0, "spectrograms": 1, "features": 2, "classify": 1}
    assert np.array_equal(features(out), features(cold["out"]))


def test_a_row_stopped_with_some_folds_done_computes_only_the_others_again(cold, tmp_path, monkeypatch):
    """A row's folds are kept as they finish: one fold failing (here as by its data) fails the row and the run, and
    the rerun computes that fold alone (before 0.17.0 all of them: hours of nested CV at 300 000 records), with the
    results of a run that computed every fold at once; once the row's own marker holds them, the kept folds go."""
    from flows.ecg_pipeline import FAULT_ENV

    out = copy_run(cold, tmp_path)
    shutil.rmtree(out / "markers" / "classify")  # the classifier row is to be evaluated again, every fold of it
    monkeypatch.setenv(FAULT_ENV, "classify:grouped_by_subject:1:data")
    with pytest.raises(Exception, match="grouped_by_subject fold 1"):
        run(cold["cfg"], cold["data"], out)
    kept = sorted(p.name for p in (out / "markers" / "classify_folds").iterdir())
    assert len(kept) == 5 and not any("grouped_by_subject__1." in name for name in kept)  # 2 protocols x 3 folds - 1

    # a fold kept for a row this run does not have (its settings changed since): removed, never read
    orphan = out / "markers" / "classify_folds" / "features__other__0123456789abcdef__grouped_by_subject__0.json"
    shutil.copy(out / "markers" / "classify_folds" / kept[0], orphan)
    monkeypatch.delenv(FAULT_ENV)
    report = run(cold["cfg"], cold["data"], out)
    assert run_json(out)["stages"]["classify"]["tasks"] == 1 and computed(out)["classify"] == 1
    assert not list((out / "markers" / "classify_folds").iterdir())
    for protocol, result in cold["report"]["protocols"].items():  # every fold's answers as the cold run's
        for field in ("accuracy", "confusion_matrix", "folds", "per_subject"):
            assert report["protocols"][protocol][field] == result[field]


def test_a_segments_task_that_fails_for_good_keeps_the_records_it_finished(cold, tmp_path, monkeypatch):
    """One task of all three records fails like a flaky disk after its first record, with no retry left: that record
    is kept (marker and arrays), the other two are reported failed with the error, and a rerun computes only them."""
    from flows.ecg_pipeline import FAULT_ENV

    out = tmp_path / "out"
    cfg = tmp_path / "one-task.toml"
    cfg.write_text(TOML.replace("n_workers = 2", "n_workers = 2\nretries = 0\nrecords_per_task = 3\nsignal_s_per_task = 1e6"))
    monkeypatch.setenv(FAULT_ENV, "segments:0")  # inherited by the LocalCluster's worker processes
    # no bad input: the run ends as failed (it went on without them, to "not every class has segments", or worse, a
    # report and model missing those records), the finished record kept
    with pytest.raises(Exception, match=r"segments: 2 unit\(s\) failed for a reason a rerun may cure, not for bad input"):
        run(cfg, cold["data"], out)
    segments_stage = run_json(out)["stages"]["segments"]
    assert (segments_stage["tasks"], segments_stage["computed"], segments_stage["failed"]) == (1, 1, 2)
    failed = [f for f in run_json(out)["failed"] if f["stage"] == "segments"]
    assert len(failed) == 2 and all("injected failure" in f["error"] for f in failed)
    assert len(list((out / "markers" / "segments").rglob("*.json"))) == 1

    # a batch failing for good around its records (a ValueError: its markers' folder unwritable, say) is no transient
    # error: its unfinished records are named as failed, not lost from the accounting, and the run goes on as it can
    monkeypatch.setenv(FAULT_ENV, "segments:0:data")
    with pytest.raises(Exception, match="have no segments"):  # one record of three left: not every class has some
        run(cfg, cold["data"], tmp_path / "data-error")
    failed = [f for f in run_json(tmp_path / "data-error")["failed"] if f["stage"] == "segments"]
    assert len(failed) == 2 and all("ValueError: injected failure" in f["error"] for f in failed)

    # a full disk (or a quota, a read-only store) is no record's fault either: the run stops, saying so, rather than
    # report without the records it could not write
    monkeypatch.setenv(FAULT_ENV, "segments:0:full")
    with pytest.raises(Exception, match=r"segments: 2 unit\(s\) failed .*No space left on device.*free space first"):
        run(cfg, cold["data"], tmp_path / "full")
    assert not (tmp_path / "full" / "report.json").exists()
    assert len([f for f in run_json(tmp_path / "full")["failed"] if f["stage"] == "segments"]) == 2

    monkeypatch.delenv(FAULT_ENV)
    run(cfg, cold["data"], out)
    assert computed(out)["segments"] == 2
    assert np.array_equal(features(out), features(cold["out"]))


def test_features_do_not_depend_on_chunk_size_or_worker_count(cold, tmp_path):
    cfg = tmp_path / "c5.toml"
    cfg.write_text(TOML.replace(f"chunk_size = {CHUNK}", "chunk_size = 5").replace("n_workers = 2", "n_workers = 1"))
    out = tmp_path / "out"
    run(cfg, cold["data"], out)

    def by_uid(o):
        uids = stored_segment_ids(f"{o}/store.zarr")
        return dict(zip(uids, features(o)))

    a, b = by_uid(cold["out"]), by_uid(out)
    assert a.keys() == b.keys()
    assert np.allclose(np.stack([a[u] for u in a]), np.stack([b[u] for u in a]), atol=1e-4)


def test_output_location_as_an_fsspec_url(cold, tmp_path):
    """The whole run through fsspec (a file:// URL instead of a path): store, markers, run.json, reports, status."""
    out = tmp_path / "out"
    url = f"file://{out}"
    report = run(cold["cfg"], cold["data"], url)
    assert report["store"] == f"{url}/store.zarr"
    assert (out / "report.md").is_file() and (out / "confusion_stratified_10fold.png").is_file()
    assert np.array_equal(features(out), features(cold["out"]))
    run(cold["cfg"], cold["data"], url)
    assert computed(out) == {"segments": 0, "spectrograms": 0, "features": 0, "classify": 0}
    from ecgpipe.status import run_status

    status = run_status(load_config(cold["cfg"]), str(cold["data"]), url)
    assert all(s["rerun_computes"] == 0 and s["done"] == s["total"] for s in status["stages"].values())


def _session_processes(sid: int) -> list[int]:
    """PIDs of the processes of session ``sid`` (the CLI started with start_new_session: itself and what it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _start_cli(cold, out: Path, own_server: bool = False) -> subprocess.Popen:
    env = dict(os.environ)
    if own_server:  # the CLI starts its own temporary Prefect server, as for a user
        env.pop("PREFECT_API_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "ecgpipe.cli", "run", "--config", str(cold["cfg"]), "--data-dir", str(cold["data"]), "--out", str(out)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def test_the_local_clusters_workers_ignore_ctrl_c_so_the_runs_process_alone_stops_them(tmp_path):
    """Ctrl-C reaches every process of the terminal's group. A worker that died of it mid-task left its nanny, in the
    run's process, waiting: on a loaded machine the run then hung closing its cluster. The run's workers ignore SIGINT
    (cluster.task_runner's worker preload); the run's process stops them. A plain LocalCluster's workers do not."""
    from distributed import Client, LocalCluster

    from ecgpipe.orchestration.cluster import task_runner
    from ecgpipe.orchestration.interrupt import ignores_ctrl_c

    kwargs = {**task_runner(load_config("paper4-best"), str(tmp_path)).cluster_kwargs, "n_workers": 1}
    # as in a terminal: this process handles SIGINT (a test run in the background of a shell inherits it ignored, and
    # so would every worker process it starts)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
            assert list(client.run(ignores_ctrl_c).values()) == [True]
        kwargs.pop("preload")
        with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
            assert list(client.run(ignores_ctrl_c).values()) == [False]
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interruption_stops_within_seconds_leaves_nothing_running_and_a_rerun_resumes(cold, tmp_path, how):
    out = tmp_path / "out"
    proc = _start_cli(cold, out, own_server=True)
    deadline = time.time() + 300
    while _feature_markers(out) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()
    server = json.loads((out / ".ecgpipe.lock").read_text())["children"][0]
    t0 = time.time()
    if how == "ctrl-c":  # the terminal sends SIGINT to the whole foreground process group
        os.killpg(proc.pid, signal.SIGINT)
    else:  # a scheduler (SLURM, Kubernetes, systemd) sends SIGTERM to the main process
        os.kill(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired as exc:  # say where it hung: the run's last lines and its processes
        stuck = [(pid, Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:120])
                 for pid in _session_processes(proc.pid) if Path(f"/proc/{pid}/cmdline").exists()]
        os.killpg(proc.pid, signal.SIGKILL)
        tail = (exc.stderr or b"").decode(errors="replace")[-3000:]
        pytest.fail(f"the run did not stop within 60 s of {how}; processes still running: {stuck}\n{tail}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.time() - t0 < 60 and proc.returncode == 130, err[-2000:]
    assert "interrupted by SIG" in err and "Traceback" not in err.split("interrupted by")[-1]
    doc = run_json(out)
    assert doc["status"] == "interrupted" and doc["records"]["records"] == doc["records"]["used"] == 3  # accounted for
    # counts are of what the run saw done; a task already running as it stopped may still finish (its marker then
    # says so, and status and the rerun agree); nothing queued starts
    assert doc["stages"]["segments"]["computed"] == 3 and 1 <= doc["stages"]["features"]["computed"] <= _feature_markers(out)
    deadline = time.time() + 20
    while _session_processes(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert _session_processes(proc.pid) == [], "processes of the run are still running"
    deadline = time.time() + 20  # the temporary Prefect server (a session of its own) is stopped too
    while Path(f"/proc/{server}").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{server}").exists(), "the run's Prefect server is still running"
    assert not (out / ".ecgpipe.lock").exists()
    done = _feature_markers(out)
    from ecgpipe.status import run_status

    status = run_status(load_config(cold["cfg"]), str(cold["data"]), str(out))["stages"]
    assert status["features"]["done"] == done and status["features"]["rerun_computes"] == cold["n_chunks"] - done
    run(cold["cfg"], cold["data"], out)
    assert computed(out)["segments"] == 0 and computed(out)["features"] == cold["n_chunks"] - done
    assert np.array_equal(features(out), features(cold["out"]))


def test_after_a_kill_9_the_next_run_stops_the_server_the_dead_run_left(cold, tmp_path):
    out = tmp_path / "out"
    proc = _start_cli(cold, out, own_server=True)
    lock = out / ".ecgpipe.lock"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (lock.exists() and json.loads(lock.read_text()).get("children")):
        time.sleep(0.05)
    server = json.loads(lock.read_text())["children"][0]
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its Dask workers: the server (a session of its own) lives on
    proc.wait()
    time.sleep(1)

    def alive(pid):
        return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()

    try:
        assert alive(server), "the server should have outlived the killed CLI"
        with pytest.warns(UserWarning, match=rf"no longer running; stopped the Prefect server it left running \(PID {server}\)"):
            from ecgpipe.lock import RunLock

            with RunLock(out):
                pass
        deadline = time.time() + 20
        while alive(server) and time.time() < deadline:
            time.sleep(0.2)
        assert not alive(server)
    finally:
        if alive(server):
            os.kill(server, signal.SIGKILL)


def test_status_trusts_unchanged_stamps_and_verify_hashes_every_unit(cold, tmp_path, capsys):
    """A spectrogram chunk's bytes changed with its size and time put back: plain `ecgpipe status` (stamps) cannot see
    it, `--verify` (hashes) can, and `run --verify` recomputes exactly that chunk, back to the cold run's bytes."""
    from ecgpipe.cli import main
    from ecgpipe.store import Layout

    out = copy_run(cold, tmp_path)
    # a stamp sees what lies in the folder a marker names: for both chunked arrays that is the chunk's own files
    for array in (cold["report"]["spectrograms_array"], cold["report"]["features_array"]):
        folder = out / "store.zarr" / Layout.row_chunk(array.removesuffix("/data"), 1)
        assert [p for p in folder.rglob("*") if p.is_file()], folder
    spec_chunk = out / "store.zarr" / cold["report"]["spectrograms_array"] / "c" / "1" / "0" / "0"
    st = spec_chunk.stat()
    data = bytearray(spec_chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    spec_chunk.write_bytes(bytes(data))
    os.utime(spec_chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    stale = {}
    for flags in ([], ["--verify"]):
        assert main(["status", "--out", str(out), "--json", *flags]) == 0
        stale[bool(flags)] = json.loads(capsys.readouterr().out)["stages"]["spectrograms"]["stale"]
    assert stale == {False: 0, True: 1}
    assert main(["run", "--config", str(cold["cfg"]), "--data-dir", str(cold["data"]), "--out", str(out), "--verify"]) == 0
    assert computed(out) == {"segments": 0, "spectrograms": 1, "features": 0, "classify": 0}
    assert snapshot(out) == snapshot(cold["out"])


def test_a_corrupted_segment_table_is_rewritten_before_anything_reads_it(cold, tmp_path):
    """32 bytes overwritten in a chunk of segments/signal: status reports the table stale; the rerun rewrites it
    (from the records' windows) before any spectrogram is computed from it, and everything ends byte-identical."""
    out = copy_run(cold, tmp_path)
    chunk = out / "store.zarr" / "segments" / "signal" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[100:132] = os.urandom(32)
    chunk.write_bytes(bytes(data))
    from ecgpipe.status import run_status

    status = run_status(load_config(cold["cfg"]), str(cold["data"]), str(out))["stages"]
    assert status["table"]["stale"] == 1 and status["segments"]["rerun_computes"] == 0
    run(cold["cfg"], cold["data"], out)
    assert computed(out, with_table=True) == {"segments": 0, "table": 1, "spectrograms": 0, "features": 0, "classify": 0}
    assert snapshot(out) == snapshot(cold["out"])


def test_a_corrupted_record_array_recomputes_that_record(cold, tmp_path):
    out = copy_run(cold, tmp_path)
    import zipfile

    bundle = out / "store.zarr" / "records" / "vfdb" / "426.zip"  # the record's one file: its starts array's chunk
    with zipfile.ZipFile(bundle) as zf:
        entry = zf.getinfo("starts/c/0")
    end = entry.header_offset + 30 + len(entry.filename.encode()) + len(entry.extra) + entry.compress_size
    data = bytearray(bundle.read_bytes())
    data[end - 8:end] = b"\x01" * 8
    bundle.write_bytes(bytes(data))
    run(cold["cfg"], cold["data"], out)
    assert computed(out)["segments"] == 1 and computed(out)["spectrograms"] == 0
    assert snapshot(out) == snapshot(cold["out"])


def test_non_finite_spectrograms_are_never_stored(cold, tmp_path):
    """A chunk whose signal holds NaN (here written by hand, past every digest): the unit fails naming the chunk and
    what it was computed from, and stores nothing."""
    from ecgpipe.errors import PipelineError
    from ecgpipe.stages import spectrograms

    out = copy_run(cold, tmp_path)
    store = f"{out}/store.zarr"
    signal_array = zarr.open_array(f"{store}/segments/signal", mode="r+")
    signal_array[CHUNK + 2] = np.nan
    spec_array = cold["report"]["spectrograms_array"].rsplit("/", 1)[0]
    before = zarr.open_array(f"{store}/{spec_array}/data", mode="r")[CHUNK : 2 * CHUNK]
    with pytest.raises(PipelineError, match=rf"{spec_array} chunk 1: 1 spectrogram\(s\) with NaN or inf, computed from segments/signal chunk 1"):
        spectrograms.compute_chunk(store, spec_array, 1, load_config(cold["cfg"]))
    assert np.array_equal(zarr.open_array(f"{store}/{spec_array}/data", mode="r")[CHUNK : 2 * CHUNK], before)


@pytest.mark.parametrize("verbose", [False, True])
def test_the_first_records_failing_alike_stop_the_run(tmp_path, physionet, prefect_server, verbose):
    """A wrong setting makes every record fail the same way: the run stops after the first few, says why in one line
    (the traceback only with --verbose), and does not try the others."""
    cfg = tmp_path / "wrong-lead.toml"
    cfg.write_text(TOML.replace("lead = [0]", 'lead = ["MLII"]') + "fail_fast_after = 4\n")
    proc = subprocess.run([sys.executable, "-m", "ecgpipe.cli", "run", "--config", str(cfg), "--data-dir", str(physionet),
                           "--out", str(tmp_path / "out"), *(["--verbose"] if verbose else [])],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "the first 4 records all failed with the same error" in proc.stderr and "MLII" in proc.stderr
    assert ("Traceback" in proc.stderr) == verbose
    # quiet by default: no per-task line ever reaches the console. (With --verbose the workers' per-task lines race
    # the stop, which closes the cluster within moments of the fourth failure: on a loaded CI machine none had been
    # written yet, 2026-12-05, so their presence is not asserted here.)
    if not verbose:
        assert "Task run" not in proc.stdout + proc.stderr
    doc = run_json(tmp_path / "out")
    assert doc["status"] == "failed" and doc["stages"]["segments"]["failed"] < 22
    # every record still accounted for: the failed ones, and those the stop left unfinished
    records = doc["records"]
    assert records["failed"] == doc["stages"]["segments"]["failed"] >= 4 and records["used"] == 0
    assert records["unfinished"] == records["records"] - records["failed"] - records["absent"] > 0
