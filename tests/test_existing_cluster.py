"""`--scheduler`: the flow runs on a Dask cluster that already exists (real `dask scheduler` / `dask worker` processes)."""

from __future__ import annotations

import json

import pytest

from ecgpipe.config import load_config

from conftest import VFDB_SLICE_TOML as TOML
from conftest import copy_records, start_scheduler, start_worker, stop, wait_for_workers

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
    finally:
        stop(procs)
