"""`--scheduler`: the flow runs on a Dask cluster that already exists (real `dask scheduler` / `dask worker` processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecgpipe.config import load_config
from conftest import copy_records

TOML = """
name = "cluster-slice"
[databases.vfdb]
lead = [0]
[classes]
normal = ["(N"]
vt = ["(VT"]
vf = ["(VF", "(VFL"]
[sampling]
max_per_class = 12
[cv]
n_splits = 3
[run]
chunk_size = 16
"""


@pytest.fixture
def dask_cluster(tmp_path):
    sched_file = tmp_path / "scheduler.json"
    dask = Path(sys.executable).with_name("dask")
    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            [str(dask), "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(sched_file)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
    ]
    deadline = time.time() + 60
    while not sched_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert sched_file.exists(), "dask scheduler did not start"
    procs.append(
        subprocess.Popen(
            [str(dask), "worker", "--scheduler-file", str(sched_file), "--nworkers", "2", "--nthreads", "1",
             "--dashboard-address", ":0", "--local-directory", str(tmp_path / "w")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
    )
    from distributed import Client

    with Client(scheduler_file=str(sched_file), timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
        address = client.scheduler.address
    yield address, sched_file
    for p in reversed(procs):
        os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        p.wait(timeout=30)


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
        workers = client.run(os.getpid)
    n_chunks = -(-report["n_segments"] // 16)
    # 3 record tasks + spectrogram and feature chunks + width probe + classification all went through this scheduler
    assert len(keys) >= 3 + 2 * n_chunks + 2
    assert len(workers) == 2
