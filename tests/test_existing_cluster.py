"""`--scheduler`: the flow runs on a Dask cluster that already exists (real `dask scheduler` / `dask worker` processes)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from ecgpipe.config import load_config

from conftest import DASK, copy_records, start_scheduler, start_worker, stop, wait_for_workers
from conftest import VFDB_SLICE_TOML as TOML

# a system test: real Prefect flows, Dask clusters, torch models or processes (`make check` leaves it out)
pytestmark = pytest.mark.system


@pytest.fixture
def dask_cluster(tmp_path):
    scheduler, sched_file = start_scheduler(tmp_path)
    # one plain CPU worker and one advertising a GPU (it computes on the CPU here: placement is what is tested)
    procs = [scheduler, start_worker(sched_file), start_worker(sched_file, "--resources", "GPU=1")]
    try:
        yield wait_for_workers(sched_file, 2), sched_file
    finally:
        stop(procs)


def test_flow_runs_on_an_existing_scheduler(tmp_path, physionet, prefect_server, dask_cluster):
    from distributed import Client

    from flows.ecg_pipeline import run_pipeline

    address, sched_file = dask_cluster
    data = tmp_path / "data"
    copy_records(physionet, data, "vfdb", ["418", "426", "430"])
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(TOML)
    report = run_pipeline(load_config(cfg_path), str(data), str(tmp_path / "out"), scheduler=address)
    assert report["n_segments"] == sum(report["class_counts"].values()) > 0
    assert (tmp_path / "out" / "report.json").exists()
    with Client(scheduler_file=str(sched_file)) as client:
        keys = client.run_on_scheduler(lambda dask_scheduler: {str(t[0]) for t in dask_scheduler.transition_log})
        info = client.scheduler_info(n_workers=-1)["workers"]
    gpu_worker = [a for a, w in info.items() if (w.get("resources") or {}).get("GPU")]
    assert len(info) == 2 and len(gpu_worker) == 1
    n_chunks = -(-report["n_segments"] // 16)
    # 3 record tasks + spectrogram and feature chunks + width probe + classification all went through this scheduler
    assert len(keys) >= 3 + 2 * n_chunks + 2
    assert report["feature_placement"].startswith("1 GPU worker")
    markers = tmp_path / "out" / "markers"
    ran_on = lambda stage: [json.loads(p.read_text())["worker"] for p in (markers / stage).rglob("*.json")]  # noqa: E731
    assert set(ran_on("features")) == set(gpu_worker)  # feature tasks only on the GPU worker
    assert set(ran_on("spectrograms")) | set(ran_on("segments")) == set(info)  # the rest spread over both


def test_workers_that_cannot_see_the_store_fail_early(tmp_path, physionet):
    """A worker in its own mount namespace (a tmpfs over the run's folder) does not see the store: clear error."""
    from ecgpipe.errors import StoreUnreachable
    from ecgpipe.orchestration.cluster import check_store_reachable

    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "data").mkdir()
    (hidden / "data" / "RECORDS").write_text("100\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "RECORDS").write_text("100\n")
    untouched = data.stat().st_mtime_ns  # a file written and deleted there would change it
    scheduler, sched_file = start_scheduler(tmp_path)
    in_own_mounts = lambda cmd: ["unshare", "-m", "sh", "-c", f"mount -t tmpfs none {hidden} && exec " + " ".join(cmd)]  # noqa: E731
    procs = [scheduler, start_worker(sched_file, wrap=in_own_mounts)]
    try:
        address = wait_for_workers(sched_file, 1)
        check_store_reachable(address, str(tmp_path / "visible"), database_dirs=(str(data),))  # folders it does see
        assert data.stat().st_mtime_ns == untouched  # the data folder was read, never written into
        with pytest.raises(StoreUnreachable, match=r"cannot see .*hidden/out.*same path on every worker"):
            check_store_reachable(address, str(hidden / "out"))
        with pytest.raises(StoreUnreachable, match=r"cannot see the data folder .*hidden/data \(<FileNotFoundError"):
            check_store_reachable(address, str(tmp_path / "visible"), database_dirs=(str(hidden / "data"),))
        # a folder without RECORDS (a labels-CSV dataset): "no RECORDS" on the worker that sees no folder at all
        # matched "no RECORDS" here; the names in the folder are compared instead
        (hidden / "data" / "RECORDS").unlink()
        (hidden / "data" / "REFERENCE.csv").write_text("100,N\n")
        (data / "RECORDS").unlink()
        (data / "REFERENCE.csv").write_text("100,N\n")
        check_store_reachable(address, str(tmp_path / "visible"), database_dirs=(str(data),))
        with pytest.raises(StoreUnreachable, match=r"cannot see the data folder .*hidden/data \(<FileNotFoundError"):
            check_store_reachable(address, str(tmp_path / "visible"), database_dirs=(str(hidden / "data"),))
    finally:
        stop(procs)


def test_workers_running_other_ecgpipe_code_are_refused_before_they_compute_anything(tmp_path):
    """A long-lived `dask worker` runs the ecgpipe it imported: after an edit (or on a machine with another checkout)
    its results were stored under the new code's keys, and trusted by every later run. Each worker's code is
    compared with the run's: the same files pass, and so does a module imported after its file changed; a module
    imported before its file changed, or other code, is refused, naming the worker."""
    import shutil

    from distributed import Client

    from ecgpipe.errors import StoreUnreachable
    from ecgpipe.orchestration.cluster import check_store_reachable
    from ecgpipe.orchestration.worker_code import CLOCK_SLACK_S

    package = Path(__file__).resolve().parent.parent / "ecgpipe"
    copies = {}
    for name in ("same", "other"):
        copies[name] = tmp_path / name
        shutil.copytree(package, copies[name] / "ecgpipe", ignore=shutil.ignore_patterns("__pycache__"))
    other_code = copies["other"] / "ecgpipe" / "spectrogram.py"
    other_code.write_text(other_code.read_text() + "\nTIME_REVERSED = True\n")

    def touch(module: str) -> None:  # same bytes, a new time: the file changed, its code did not
        path = copies["same"] / "ecgpipe" / f"{module}.py"
        path.write_text(path.read_text())

    def imported(client, module: str) -> str:  # as a task's unpickling would import it
        (path,) = client.run(lambda: __import__(f"ecgpipe.{module}", fromlist=["x"]).__file__).values()
        return path

    scheduler, sched_file = start_scheduler(tmp_path)
    with_package = lambda copy: lambda cmd: ["env", f"PYTHONPATH={copy}", *cmd]  # noqa: E731
    procs = [scheduler, start_worker(sched_file, wrap=with_package(copies["same"]))]
    try:
        address = wait_for_workers(sched_file, 1)
        time.sleep(CLOCK_SLACK_S + 0.5)
        touch("rhythm")  # changed after the worker started, before it imported it: no stale code
        check_store_reachable(address, str(tmp_path / "out"))  # the same code, from another folder: fine
        with Client(address) as client:
            assert imported(client, "rhythm") == str(copies["same"] / "ecgpipe" / "rhythm.py")
            imported(client, "spectrogram")
        check_store_reachable(address, str(tmp_path / "out"))  # rhythm was imported after its change: fine still
        time.sleep(CLOCK_SLACK_S + 0.5)
        touch("spectrogram")  # imported before this change: what the worker runs may not be what the file says
        with pytest.raises(StoreUnreachable, match=r"do not run this ecgpipe's code: tcp://127\.0\.0\.1:\d+ runs <imported "
                                                   r"ecgpipe\.spectrogram before its file changed>\. Restart them"):
            check_store_reachable(address, str(tmp_path / "out"))
        procs.append(start_worker(sched_file, wrap=with_package(copies["other"])))
        stop(procs[1:2])
        wait_for_workers(sched_file, 1)
        with pytest.raises(StoreUnreachable, match=r"runs other ecgpipe code \(another version or checkout\)"):
            check_store_reachable(address, str(tmp_path / "out"))
    finally:
        stop(procs)
    assert not (tmp_path / "out" / "markers").exists()  # refused before any work


def test_a_worker_that_joins_mid_run_with_other_code_leaves_and_the_check_ends_with_the_run(tmp_path):
    """On SLURM or Kubernetes most workers join after the run started, past the check before the first record: the
    run registers a worker plugin that compares each joining worker's code with the run's; a worker of other code
    leaves the cluster, saying why in its log, before it takes a task (its results would be stored under this code's
    keys; a task it refused would have failed records as bad input). The plugin goes when the run ends: a worker of
    another ecgpipe (or none) can join the cluster again."""
    import shutil

    from distributed import Client

    from ecgpipe.orchestration.cluster import late_workers_checked

    package = Path(__file__).resolve().parent.parent / "ecgpipe"
    other = tmp_path / "other"
    shutil.copytree(package, other / "ecgpipe", ignore=shutil.ignore_patterns("__pycache__"))
    edited = other / "ecgpipe" / "spectrogram.py"
    edited.write_text(edited.read_text() + "\nTIME_REVERSED = True\n")
    scheduler, sched_file = start_scheduler(tmp_path)
    procs = [scheduler, start_worker(sched_file)]
    log = tmp_path / "stale-worker.log"

    def plugins(client) -> list[str]:
        return [n for n in client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins)) if "ecgpipe" in n]

    try:
        address = wait_for_workers(sched_file, 1)
        with Client(address, timeout=30) as client:
            with late_workers_checked(address):
                assert len(plugins(client)) == 1
                with open(log, "w") as fh:
                    stale = subprocess.Popen(["env", f"PYTHONPATH={other}", DASK, "worker", address, "--nthreads", "1",
                                              "--dashboard-address", ":0"], stdout=fh, stderr=fh, start_new_session=True)
                procs.append(stale)
                assert stale.wait(timeout=120) is not None  # it left: its process ended
                assert "runs other ecgpipe code than the run that registered this check" in log.read_text()
                assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1  # the checked worker stays
            assert plugins(client) == []  # gone with the run
            procs.append(start_worker(sched_file, wrap=lambda cmd: ["env", f"PYTHONPATH={other}", *cmd]))
            client.wait_for_workers(2, timeout=120)  # no run, no check: another ecgpipe's worker joins and stays
            time.sleep(2)
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2
    finally:
        stop(procs)
    from ecgpipe.orchestration.tasks import is_transient, may_pass_on_retry
    from ecgpipe.orchestration.worker_code import StaleWorkerCode

    # a task that reached it in the moment before it left is retried elsewhere, no unit blamed
    assert is_transient(StaleWorkerCode("x")) and may_pass_on_retry(StaleWorkerCode("x"))


def test_a_closed_client_means_the_scheduler_is_gone_not_a_key_error(monkeypatch):
    """A scheduler killed mid-stage: the client closes, its tasks end cancelled, and the next stage asked it for its
    workers (KeyError: 'workers', the run's only message). Now the stage says the scheduler is gone."""
    from distributed import Client, LocalCluster

    from ecgpipe.orchestration import cluster

    local = LocalCluster(n_workers=1, processes=False, dashboard_address=None)
    client = Client(local)
    monkeypatch.setattr(cluster, "cluster_client", lambda: client)
    try:
        assert not cluster.scheduler_gone() and cluster.gpu_workers_in_cluster() == 0
        local.close()
        deadline = time.time() + 30
        while client.status == "running" and time.time() < deadline:
            time.sleep(0.2)
        assert cluster.scheduler_gone() and cluster.gpu_workers_in_cluster() == 0
    finally:
        client.close()


def test_a_scheduler_without_workers_or_none_at_all_is_refused_with_what_to_do(tmp_path, monkeypatch):
    """With no worker every reachability check would pass vacuously and the run would wait for ever; with no
    scheduler the error said to rerun, which cannot help."""
    import socket

    from ecgpipe.errors import StoreUnreachable
    from ecgpipe.orchestration import cluster

    monkeypatch.setattr(cluster, "CLUSTER_WAIT_S", 3.0)
    data = tmp_path / "data"
    data.mkdir()
    (data / "RECORDS").write_text("100\n")
    scheduler, sched_file = start_scheduler(tmp_path)
    try:
        address = json.loads(sched_file.read_text())["address"]
        with pytest.raises(StoreUnreachable, match=r"has no worker \(waited 3 s\): start one, `dask worker tcp://"):
            cluster.check_store_reachable(address, str(tmp_path / "out"), database_dirs=(str(data),))
    finally:
        stop([scheduler])
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreUnreachable, match=r"scheduler at tcp://127.0.0.1:\d+ cannot be reached .*start it"):
        cluster.check_store_reachable(f"tcp://127.0.0.1:{port}", str(tmp_path / "out"))


def test_a_stage_left_without_workers_says_so_every_few_seconds(monkeypatch):
    """A worker lost mid-stage with no other: the run used to wait in silence. Now a progress line comes while
    nothing finishes, and says the cluster has no worker left."""
    import logging
    import threading
    import time
    from types import SimpleNamespace

    from distributed import Client, LocalCluster

    from ecgpipe.orchestration import bookkeeping

    monkeypatch.setattr(bookkeeping, "PROGRESS_EVERY_S", 0.5)
    lines = []
    logger = logging.getLogger("stall-test")
    logger.setLevel(logging.INFO)
    logger.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: lines.append((r.levelno, r.getMessage()))})())
    # a client of a scheduler it did not start, as with --scheduler
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as lc, \
            Client(lc.scheduler_address) as client:
        quick, slow = client.submit(lambda: 1), client.submit(time.sleep, 10)
        futures = [SimpleNamespace(wrapped_future=f, result=f.result) for f in (quick, slow)]
        got = {}
        waiter = threading.Thread(target=lambda: got.update(r=bookkeeping.wait_all(futures, "features", logger)))
        waiter.start()
        deadline = time.time() + 30
        while not any("no task finished" in m for _, m in lines) and time.time() < deadline:
            time.sleep(0.1)
        assert any(lvl == logging.INFO and "features: 1/2" in m for lvl, m in lines)  # a healthy wait: progress
        lc.scale(0)  # the only worker leaves; the sleeping task is left waiting for one
        while not any("no worker left" in m for _, m in lines) and time.time() < deadline:
            time.sleep(0.1)
        assert any(lvl == logging.WARNING and "no worker left" in m and "dask worker" in m for lvl, m in lines)
        slow.cancel()
        waiter.join(30)
        assert not waiter.is_alive() and len(got["r"][1]) == 1  # the cancelled task: one failure, the wait ends


def test_gpu_tasks_left_without_a_gpu_worker_say_so_while_cpu_workers_remain(tmp_path, monkeypatch):
    """The feature stage's tasks need the GPU resource once the cluster has a GPU worker: if that worker leaves (a
    job's walltime, a preemption) they wait for ever beside idle CPU workers. The wait now says so, naming the cure."""
    import logging
    import threading
    from types import SimpleNamespace

    from distributed import Client

    from ecgpipe.orchestration import bookkeeping

    monkeypatch.setattr(bookkeeping, "PROGRESS_EVERY_S", 0.5)
    lines = []
    logger = logging.getLogger("gpu-gone-test")
    logger.setLevel(logging.INFO)
    logger.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: lines.append((r.levelno, r.getMessage()))})())
    scheduler, sched_file = start_scheduler(tmp_path)
    procs = [scheduler, start_worker(sched_file), start_worker(sched_file, "--resources", "GPU=1")]
    try:
        address = wait_for_workers(sched_file, 2)
        with Client(address, timeout=30) as client:
            first = client.submit(time.sleep, 0.1, resources={"GPU": 1}, pure=False)
            first.result(timeout=60)
            gpu_only = [SimpleNamespace(wrapped_future=first, result=first.result)]
            assert bookkeeping.idle_reason(gpu_only, gpu_only=True) == ""  # a GPU worker is there
            stop(procs[2:])  # the GPU worker's job ends
            deadline = time.time() + 60
            while len(client.scheduler_info(n_workers=-1)["workers"]) > 1 and time.time() < deadline:
                time.sleep(0.2)
            waiting = client.submit(time.sleep, 0.1, resources={"GPU": 1}, pure=False)
            futures = [SimpleNamespace(wrapped_future=waiting, result=waiting.result)]
            waiter = threading.Thread(target=lambda: bookkeeping.wait_all(futures, "features", logger, gpu_only=True))
            waiter.start()
            while not any("GPU resource" in m for _, m in lines) and time.time() < deadline:
                time.sleep(0.1)
            assert any(lvl == logging.WARNING and "no worker with the GPU resource is left" in m and "--resources GPU=1" in m
                       for lvl, m in lines)
            assert bookkeeping.idle_reason(futures, gpu_only=False) == ""  # tasks that any worker takes: nothing to say
            waiting.cancel()
            waiter.join(30)
            assert not waiter.is_alive()
    finally:
        stop(procs)


def test_waiting_for_one_task_hears_ctrl_c_and_says_when_the_local_cluster_has_no_worker(monkeypatch):
    """A single task's result (the extractor's description, the model's fit) was a bare future.result(): with the
    cluster's only worker gone, the run waited for ever and a Ctrl-C did not end it. Now the wait warns, naming the
    local cluster, and a stop request ends it."""
    import logging
    import threading
    import time
    from types import SimpleNamespace

    from distributed import Client, LocalCluster

    from ecgpipe.orchestration import bookkeeping, interrupt

    monkeypatch.setattr(bookkeeping, "PROGRESS_EVERY_S", 0.5)
    lines = []
    logger = logging.getLogger("one-task-test")
    logger.setLevel(logging.INFO)
    logger.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: lines.append((r.levelno, r.getMessage()))})())
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None) as lc, Client(lc) as client:
        quick = client.submit(lambda: 7)
        assert bookkeeping.result_of(SimpleNamespace(wrapped_future=quick, result=quick.result), "features", logger) == 7
        lc.scale(0)
        deadline = time.time() + 30
        while client.scheduler_info()["workers"] and time.time() < deadline:
            time.sleep(0.1)
        slow = client.submit(time.sleep, 60)
        got = {}

        def wait():
            try:
                bookkeeping.result_of(SimpleNamespace(wrapped_future=slow, result=slow.result), "features", logger)
            except interrupt.RunInterrupted as exc:
                got["stopped"] = str(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        while not lines and time.time() < deadline:
            time.sleep(0.1)
        assert any(lvl == logging.WARNING and "the local Dask cluster has no worker at the moment" in m for lvl, m in lines)
        monkeypatch.setattr(interrupt, "_depth", [1])  # inside a run's interruptible() block
        monkeypatch.setattr(interrupt, "_received", [2])  # what Ctrl-C's handler records
        waiter.join(10)
        assert not waiter.is_alive() and "interrupted by SIGINT" in got["stopped"]


def test_stages_cut_into_tasks_per_thread_count_the_clusters_threads_not_the_local_default(monkeypatch):
    """The segment table is cut into 4 tasks per thread: it counted `run.n_workers` (2, what a local cluster starts),
    so an existing cluster of any size got 8 tasks (71 min of a 10-million-window table on 8 cores of 64)."""
    from distributed import Client, LocalCluster

    from ecgpipe.orchestration import cluster

    with LocalCluster(n_workers=3, processes=False, threads_per_worker=2, dashboard_address=None) as lc, Client(lc) as client:
        monkeypatch.setattr(cluster, "cluster_client", lambda: client)  # the flow run's client (its task runner's)
        assert cluster.task_slots(2) == 6
        assert cluster.task_slots(8) == 8  # a cluster still gathering its workers: the configured count at least
    monkeypatch.setattr(cluster, "cluster_client", lambda: None)  # outside a flow run on Dask
    assert cluster.task_slots(2) == 2


def test_a_long_wait_follows_each_future_once_however_many_passes_it_takes():
    """Each pass of a stage's wait while nothing finished called distributed.wait(FIRST_COMPLETED) on every pending
    future, which left a watcher per future on the client's event loop until that future finished: watchers grew
    with passes x pending (3.4 GB for 4000 tasks; a 300 000-record run's stages have tens of thousands). Now one
    watcher per future for the whole wait, and every future is yielded once, each key's wrappers all, the failed
    ones too (tests/benchmarks/bench_wait.py measures the memory and time side by side)."""
    import asyncio
    import threading
    import time
    from types import SimpleNamespace

    from distributed import Client, Event, LocalCluster

    from ecgpipe.orchestration import bookkeeping

    def gated(i):
        Event("go").wait(60)
        if i == 3:
            raise ValueError("one bad task")
        return i

    async def watchers():
        return len(asyncio.all_tasks())

    n = 300
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=2, dashboard_address=None) as lc, Client(lc) as client:
        inner = [client.submit(gated, i, pure=False) for i in range(n)]
        futures = [SimpleNamespace(wrapped_future=f, result=f.result) for f in inner]
        futures.append(SimpleNamespace(wrapped_future=inner[5], result=inner[5].result))  # one task wrapped twice
        yielded = []
        waiter = threading.Thread(target=lambda: yielded.extend(bookkeeping._completed(futures)))
        waiter.start()
        time.sleep(1)
        early = client.sync(watchers)
        time.sleep(2)  # four more passes of the old wait, each leaving 300 watchers
        late = client.sync(watchers)
        assert late - early < n / 2, (early, late)
        Event("go", client=client).set()
        waiter.join(60)
        assert not waiter.is_alive() and sorted(map(id, yielded)) == sorted(map(id, futures))
        assert sum(f.wrapped_future.status == "error" for f in yielded) == 1


@pytest.mark.parametrize("stage", ["spectrograms", "features"])
def test_a_scheduler_that_goes_away_mid_run_is_named_and_a_rerun_on_a_new_one_computes_only_what_is_missing(
        tmp_path, physionet, prefect_server, stage):
    """The scheduler process is killed (SIGKILL) as a stage starts: the run stops saying the scheduler went away (it
    said "FutureCancelledError ... scheduler-connection-lost" in the features stage, and "KeyError: 'workers'" in the
    spectrograms stage, whose cancelled chunks the next stage met with a closed client), and a rerun on a new
    scheduler keeps every record (and spectrogram chunk) already done."""
    import os
    import subprocess
    import sys

    data = tmp_path / "data"
    copy_records(physionet, data, "vfdb", ["418", "419", "420"])
    (tmp_path / "cfg.toml").write_text(TOML)
    out = tmp_path / "out"

    def ecgpipe_run(address: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "ecgpipe.cli", "run", "--config", str(tmp_path / "cfg.toml"),
                                 "--data-dir", str(data), "--out", str(out), "--scheduler", address],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))

    scheduler, sched_file = start_scheduler(tmp_path)
    worker = start_worker(sched_file)
    try:
        run = ecgpipe_run(wait_for_workers(sched_file, 1))
        lines = []
        for line in run.stdout:  # the scheduler goes when the stage starts
            lines.append(line)
            if f"{stage}:" in line:
                stop([scheduler])
        assert run.wait(timeout=300) == 1, "".join(lines)[-3000:]
    finally:
        stop([worker, scheduler])
    text = "".join(lines)
    assert "went away during the run: start it and its workers again" in text, text[-3000:]
    assert "KeyError" not in text, text[-3000:]
    first = json.loads((out / "run.json").read_text())
    assert first["status"] == "failed" and first["stages"]["segments"]["computed"] == 3

    (tmp_path / "again").mkdir()
    scheduler, sched_file = start_scheduler(tmp_path / "again")
    worker = start_worker(sched_file)
    try:
        rerun = ecgpipe_run(wait_for_workers(sched_file, 1))
        text = rerun.communicate(timeout=600)[0]
        assert rerun.returncode == 0, text[-3000:]
    finally:
        stop([worker, scheduler])
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert stages["segments"] == {**stages["segments"], "computed": 0, "skipped": 3}
    if stage == "features":
        assert stages["spectrograms"]["computed"] == 0 and stages["spectrograms"]["skipped"] > 0
    spectrograms = stages["spectrograms"]["computed"] + stages["spectrograms"]["skipped"]
    assert stages["features"]["computed"] + stages["features"]["skipped"] == spectrograms > 0


def test_a_scheduler_on_another_machine_with_the_prefect_api_on_loopback_is_warned_of():
    """prefect-dask hands the client's PREFECT_API_URL to every worker: 127.0.0.1 (or the temporary server) with a
    scheduler on another host points remote workers' task runs at their own loopback."""
    from ecgpipe.orchestration.cluster import api_unreachable_from_workers

    remote = "tls://scheduler.example.org:8786"
    assert "takes workers from other machines" in api_unreachable_from_workers(remote, "http://127.0.0.1:4200/api")
    assert "temporary Prefect server" in api_unreachable_from_workers(remote, None)
    assert api_unreachable_from_workers(remote, "http://prefect.example.org:4200/api") == ""
    assert api_unreachable_from_workers("tcp://127.0.0.1:8786", None) == ""  # all on this machine
    assert api_unreachable_from_workers("localhost:8786", "http://127.0.0.1:4200/api") == ""
