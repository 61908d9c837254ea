"""``ecgpipe predict --scheduler`` and ``ecgpipe evaluate --scheduler``: records predicted on the workers of an
existing Dask cluster (real `dask scheduler` / `dask worker` processes on 127.0.0.1, working in another directory),
on real mitdb and CinC 2017 records as PhysioNet ships them: the same files as one local process, the work done by
the workers, and a cluster that cannot read the model refused before any record."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_predict_many import OUTPUTS, _model
from test_reliability import cli

from conftest import copy_cinc, copy_records, start_scheduler, start_worker, stop, wait_for_workers

pytestmark = pytest.mark.system  # real Dask scheduler and worker processes (`make check` leaves it out)


def _elsewhere(folder):
    """Run a command in ``folder``: the worker's working directory is not the command's."""
    return lambda cmd: ["sh", "-c", f"cd {folder} && exec " + " ".join(cmd)]


def _with_tests_importable() -> dict:
    """The environment of a scheduler and workers that unpickle tasks of this module's functions."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    (tmp / "worker-cwd").mkdir()
    before = dict(os.environ)
    os.environ.update(_with_tests_importable())
    try:
        scheduler, sched_file = start_scheduler(tmp)
        # one worker with two threads (two records at once on one loaded model), one with one advertising a GPU (it
        # computes on the CPU here: where a CNN's records go is what is tested)
        procs = [scheduler, start_worker(sched_file, "--nthreads", "2", wrap=_elsewhere(tmp / "worker-cwd")),
                 start_worker(sched_file, "--resources", "GPU=1", wrap=_elsewhere(tmp / "worker-cwd"))]
    finally:
        os.environ.clear()
        os.environ.update(before)
    try:
        yield wait_for_workers(sched_file, 2), sched_file
    finally:
        stop(procs)


def _task_keys(sched_file) -> set[str]:
    from distributed import Client

    with Client(scheduler_file=str(sched_file), timeout=60) as client:
        return client.run_on_scheduler(lambda dask_scheduler: {str(t[0]) for t in dask_scheduler.transition_log})


def test_predict_on_a_cluster_gives_the_files_one_process_gives(cluster, physionet, tmp_path):
    """Records and --out given relative to the command's folder (the workers work in another): the tables,
    annotation files and agreement are those of `--jobs 1`, byte for byte (103 without its reference annotations:
    the reason names it as given), and every record went through the cluster's scheduler."""
    address, sched_file = cluster
    here = tmp_path / "here"
    copy_records(physionet, here / "data", "mitdb", ["100", "103", "201"])
    (here / "data" / "mitdb" / "103.atr").unlink()
    with open(here / "data" / "mitdb" / "201.dat", "ab") as fh:  # read anyway, with a warning
        fh.write(b"\0\0\0")
    _model(here / "model.skops", physionet)
    records = ["data/mitdb/100", "data/mitdb/103", "data/mitdb/201"]
    before = {k for k in _task_keys(sched_file) if k.startswith("ecgpipe-predict_one-")}
    for out, where in (("one", ["--jobs", "1"]), ("cluster", ["--scheduler", address])):
        proc = cli("predict", "--model", "model.skops", *records, "--out", out, "--compare", "atr", *where, cwd=here)
        assert proc.returncode == 0, proc.stderr
    for name in (*OUTPUTS, "agreement.json", "outputs.csv", "100.pred", "103.pred", "201.pred"):
        assert (here / "one" / name).read_bytes() == (here / "cluster" / name).read_bytes(), name
    assert "data/mitdb/100: " in proc.stdout and "-> cluster/100.pred" in proc.stdout  # as given, not absolute
    assert "data/mitdb/103.atr" in proc.stdout and str(here) not in (here / "cluster" / "agreement.json").read_text()
    # what a worker read anyway is said by the command (not left in the worker's log), the record named as given
    assert proc.stderr.count("ecgpipe: warning: data/mitdb/201: signal file data/mitdb/201.dat holds 3 bytes more") == 1
    assert "holds 3 bytes more" in (here / "cluster" / "records.csv").read_text()
    ran = {k for k in _task_keys(sched_file) if k.startswith("ecgpipe-predict_one-")} - before
    assert len(ran) == len(records)


def test_evaluate_on_a_cluster_gives_the_results_one_process_gives(cluster, cinc, tmp_path):
    """CinC records labelled in REFERENCE-v3.csv, one truncated (its error carried back from the worker); quick
    records go several to a task once the first ones are timed."""
    address, sched_file = cluster
    labels = dict(line.split(",") for line in (cinc / "REFERENCE-v3.csv").read_text().split())
    names = (cinc / "RECORDS").read_text().split()
    chosen = [n for n in names if labels[n] == "N"][:16] + [n for n in names if labels[n] == "A"][:8]
    data = copy_cinc(cinc, tmp_path / "data", chosen)
    dat = data / f"{chosen[1]}.mat"
    dat.write_bytes(dat.read_bytes()[:200])  # truncated: fails alone
    with open(data / f"{chosen[2]}.mat", "ab") as fh:  # read anyway, with a warning
        fh.write(b"\0\0\0")
    model = _model(tmp_path / "model.skops", cinc)
    before = {k for k in _task_keys(sched_file) if k.startswith("ecgpipe-read_and_predict-")}
    for out, where in (("one", ["--jobs", "1"]), ("cluster", ["--scheduler", address])):
        proc = cli("evaluate", "--model", str(model), "--config", "cinc2017", "--data-dir", str(data.parent),
                   "--out", str(tmp_path / out), "--map", "normal=normal", "afib=afib", *where)
        assert proc.returncode == 1, proc.stderr  # one record failed (below): exit 1, as predict's, the others scored
    one, two = (json.loads((tmp_path / out / "evaluation.json").read_text()) for out in ("one", "cluster"))
    assert one.pop("wall_s") > 0 and two.pop("wall_s") > 0
    assert one == two
    assert one["accounting"]["scored"] == len(chosen) - 1 and one["accounting"]["failed"] == 1
    assert chosen[1] in one["failed"][0]["record"]
    assert one["accounting"]["read_with_warnings"] == 1 and "holds 3 bytes more" in one["records"][2]["note"]
    assert proc.stderr.count(f"ecgpipe: warning: {data / chosen[2]}: signal file") == 1  # from the worker, said here
    for name in ("evaluation_records.csv", "evaluation.md"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "cluster" / name).read_bytes(), name
    ran = {k for k in _task_keys(sched_file) if k.startswith("ecgpipe-read_and_predict-")} - before
    assert 6 <= len(ran) < len(chosen)  # the first 2 per thread alone (3 threads), then batches


def test_a_cluster_that_cannot_read_the_model_is_refused_before_any_record(physionet, tmp_path):
    """A worker in its own mount namespace (a tmpfs over the model's folder) cannot read it: refused, naming the
    worker and the model, nothing predicted; and --jobs with --scheduler is refused."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    model = _model(hidden / "model.skops", physionet)
    scheduler, sched_file = start_scheduler(tmp_path)
    in_own_mounts = lambda cmd: ["unshare", "-m", "sh", "-c", f"mount -t tmpfs none {hidden} && exec " + " ".join(cmd)]  # noqa: E731
    procs = [scheduler, start_worker(sched_file, wrap=in_own_mounts)]
    try:
        address = wait_for_workers(sched_file, 1)
        record = copy_records(physionet, tmp_path / "data", "mitdb", ["100"]) / "100"
        proc = cli("predict", "--model", str(model), str(record), "--out", str(tmp_path / "out"), "--scheduler", address)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"cannot read the model {model}" in proc.stderr and "FileNotFoundError" in proc.stderr
        assert not (tmp_path / "out" / "records.csv").exists()
        proc = cli("predict", "--model", str(model), str(record), "--out", str(tmp_path / "out2"), "--scheduler", address,
                   "--jobs", "2")
        assert proc.returncode == 2 and "--jobs and --scheduler: give one" in proc.stderr
        assert not (tmp_path / "out2").exists()
    finally:
        stop(procs)
        shutil.rmtree(tmp_path / "data", ignore_errors=True)


def _pid_unless(model, i: int, die_at: int) -> tuple[int, int]:
    """Run on a worker (this module on its path): item ``die_at`` kills the worker process, as running out of memory does."""
    if i == die_at:
        os._exit(1)
    return os.getpid(), i


def test_a_record_whose_workers_die_fails_alone_and_the_others_go_on(physionet, tmp_path, monkeypatch):
    """Dask gives up on a task after its workers died (here at once: allowed-failures 0): its items are tried one
    per task, the one that kills its worker again is reported through ``killed``, and the others run on the
    workers its nanny restarted, in order. Quick items go several to a task once the first ones are timed."""
    from ecgpipe import model_cluster
    from ecgpipe.model import load_model

    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES", "0")
    # the scheduler and the worker unpickle the tasks: this module must import there
    monkeypatch.setenv("PYTHONPATH", _with_tests_importable()["PYTHONPATH"])
    scheduler, sched_file = start_scheduler(tmp_path)
    procs = [scheduler, start_worker(sched_file)]
    try:
        address = wait_for_workers(sched_file, 1)
        model = load_model(_model(tmp_path / "model.skops", physionet))
        with model_cluster.ModelCluster(address, model) as cluster:
            results = list(cluster.in_order(_pid_unless, [(i, 2) for i in range(8)],
                                            killed=lambda item, why: ("killed", item[0], why)))
        keys = _task_keys(sched_file)
    finally:
        stop(procs)
    assert [r[1] for r in results] == list(range(8))
    assert results[2][0] == "killed" and "2: the Dask workers that took it died on it" in results[2][2]
    # 3 to 7 on the worker restarted after 2 killed it again, not 0's (1's result, on the worker the batch killed
    # before it was gathered, may have been computed again: Dask does so)
    last = {r[0] for r in results[3:]}
    assert len(last) == 1 and results[0][0] not in last and os.getpid() not in last | {results[0][0]}
    # [0] and [1] alone, [2..7] in one task (died), then 2, 3, ..., 7 one per task: 2 + 1 + 6
    assert len([k for k in keys if k.startswith("ecgpipe-_pid_unless-")]) == 9


def test_a_cluster_with_no_worker_left_gets_a_warning_while_the_command_waits(physionet, tmp_path, monkeypatch, capfd):
    """Dask waits for a worker rather than fail: the command says so once, and goes on when one joins."""
    import threading

    from ecgpipe import model_cluster
    from ecgpipe.model import load_model

    monkeypatch.setattr(model_cluster, "NO_WORKER_CHECK_S", 1.0)
    monkeypatch.setenv("PYTHONPATH", _with_tests_importable()["PYTHONPATH"])
    scheduler, sched_file = start_scheduler(tmp_path)
    procs = [scheduler, start_worker(sched_file)]
    try:
        address = wait_for_workers(sched_file, 1)
        model = load_model(_model(tmp_path / "model.skops", physionet))
        with model_cluster.ModelCluster(address, model) as cluster:  # checked with its worker, which then goes
            stop([procs.pop()])
            joins = threading.Timer(4.0, lambda: procs.append(start_worker(sched_file)))
            joins.start()
            results = list(cluster.in_order(_pid_unless, [(i, -1) for i in range(3)]))
            joins.join()
    finally:
        stop(procs)
    assert [r[1] for r in results] == [0, 1, 2]
    err = capfd.readouterr().err
    assert err.count(f"the Dask cluster at {address} has no worker left; waiting for one") == 1


def _cnn_model(path):
    from ecgpipe.classify import fit_classifier
    from ecgpipe.config import load_config
    from ecgpipe.model import save_model

    cfg = load_config("paper4", {"features": {"weights": "random", "image_size": 64}, "classifier": {"inputs": "cnn"}})
    y = np.repeat(np.arange(4), 30)
    model, _ = fit_classifier(np.random.default_rng(0).normal(size=(120, 1280)) + y[:, None], y, cfg.classifier, n_cnn=1280)
    save_model(path, model, cfg, weights_source="test", n_cnn=1280, training={"n_segments": 120})
    return path


def test_a_cnn_model_goes_to_the_gpu_worker_and_gives_the_files_one_process_gives(cluster, cinc, tmp_path):
    """A CNN model (EfficientNet-Lite0, random weights, 64-px inputs) on CinC records: every task on the worker that
    advertises a GPU, the files those of one process; without a GPU worker the threads of a worker share one model
    and one extractor (next test)."""
    from ecgpipe.model import load_model

    address, sched_file = cluster
    _cnn_model(tmp_path / "cnn.skops")
    names = (cinc / "RECORDS").read_text().split()[:6]
    data = copy_cinc(cinc, tmp_path / "data", names)
    records = [str(data / n) for n in names]
    for out, where in (("one", ["--jobs", "1"]), ("cluster", ["--scheduler", address])):
        proc = cli("predict", "--model", str(tmp_path / "cnn.skops"), *records, "--out", str(tmp_path / out), "--lead", "0",
                   *where)
        assert proc.returncode == 0, proc.stderr
    for name in (*OUTPUTS, *(f"{n}.pred" for n in names)):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "cluster" / name).read_bytes(), name
    assert "the CNN's records on its 1 GPU worker(s)" in proc.stdout

    from distributed import Client

    from ecgpipe.model_cluster import ModelCluster
    from ecgpipe.orchestration.cluster import gpu_workers

    with Client(scheduler_file=str(sched_file), timeout=60) as client:
        pids, (gpu,) = client.run(os.getpid), gpu_workers(client)
    with ModelCluster(address, load_model(tmp_path / "cnn.skops")) as on_cluster:
        ran = {pid for pid, _ in on_cluster.in_order(_pid_unless, [(i, -1) for i in range(12)])}
    assert ran == {pids[gpu]}


def test_a_workers_threads_share_one_model_and_one_cnn_extractor_built_once(tmp_path, monkeypatch):
    """Threads of a worker asking for a CNN model at once: one load, one extractor (built under the model's lock:
    built side by side, torch.fx would trace the CNN twice at once, patching torch's Module class for both)."""
    import threading

    from ecgpipe import features, model_cluster
    from ecgpipe.model import load_model

    path = str(_cnn_model(tmp_path / "cnn.skops"))
    digest, code = load_model(path).digest, "code"
    monkeypatch.setattr(model_cluster, "_CHECKED", {(code, None, ())})  # as a worker that passed the command's checks
    monkeypatch.setattr(model_cluster, "_LOADED", model_cluster.OrderedDict())
    features._cached_extractor.cache_clear()
    built = features._cached_extractor.cache_info().misses
    got, start = [], threading.Barrier(3)

    def ask() -> None:
        start.wait()
        got.append(model_cluster._model_here(path, digest, code, None))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 3 and got[0] is got[1] is got[2]
    assert features._cached_extractor.cache_info().misses == built + 1
    features._cached_extractor.cache_clear()  # no CNN left cached for the session's other tests
