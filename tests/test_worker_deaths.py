"""A record that kills its worker process (the out-of-memory killer, a crash in native code) fails alone, by name;
the run completes with every other record. Real processes: the LocalCluster's worker is SIGKILLed each time it
starts that record, as the kernel would kill it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ecgpipe.config import load_config
from ecgpipe.orchestration.attempts import DEATHS_ALLOWED, DIE_ENV, RecordAttempts

from conftest import copy_cinc


def test_attempt_files_count_deaths_and_a_finished_record_leaves_none(tmp_path):
    folder = tmp_path / "markers" / "attempts" / "segments"

    def task() -> RecordAttempts:  # each (re)started task makes its own, as record_batch does
        return RecordAttempts(str(tmp_path), "segments")

    first = task()
    assert first.begin("db__r1", "db/r1") is None
    first.end("db__r1")  # done (or failed in Python): no death, no file
    assert not (folder / "db__r1.json").exists() and not list(tmp_path.rglob(".tmp-*"))
    # ... its process died on it (no end): each later start counts one death more, up to the limit
    for _ in range(DEATHS_ALLOWED):
        assert task().begin("db__r1", "db/r1") is None
    problem = task().begin("db__r1", "db/r1")
    assert problem and f"died {DEATHS_ALLOWED} times" in problem and "--memory-limit" in problem
    # failed: a retry of its batch in the same run does not compute it again (nor die on it), the next run does
    assert task().begin("db__r1", "db/r1") == problem
    task().clear()
    assert not folder.exists()
    again = task()
    assert again.begin("db__r1", "db/r1") is None
    again.end("db__r1")

    # a death in company (another thread's record may have killed the process) is no death of its own; a file cut
    # short by the death itself is such a death too
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "db__r2.json").write_text('{"deaths": 1, "alone": false, "failed": false}')
    (folder / "db__r3.json").write_text('{"dea')
    for unit in ("db__r2", "db__r3"):
        assert task().begin(unit, unit) is None
    assert json.loads((folder / "db__r2.json").read_text()) == {"deaths": 1, "ends": 0, "alone": True, "failed": False, "nanny": None}
    assert json.loads((folder / "db__r3.json").read_text()) == {"deaths": 0, "ends": 0, "alone": True, "failed": False, "nanny": None}
    other = RecordAttempts(str(tmp_path), "recordings")  # clear() forgets one stage's attempts only
    assert other.begin("db__r1", "db/r1") is None
    task().clear()
    assert (tmp_path / "markers" / "attempts" / "recordings" / "db__r1.json").exists()
    task().clear()  # nothing to clear: no error


def test_a_death_counts_only_where_the_earlier_attempts_nanny_still_answers(tmp_path, monkeypatch):
    """A nanny outlives a worker it restarts (the memory limit, a crash) and ends with its job (preempted, its time
    limit, its node lost): an attempt whose nanny no longer answers is no death of the record's, but a record whose
    job ended three times is left out all the same (a batch system's memory limit ends the whole job)."""
    import socket

    from ecgpipe.orchestration import attempts

    monkeypatch.setattr(attempts, "NANNY_GONE_S", 0.5)
    folder = tmp_path / "markers" / "attempts" / "segments"
    folder.mkdir(parents=True)
    listening = socket.create_server(("127.0.0.1", 0))  # a nanny still there
    gone = socket.create_server(("127.0.0.1", 0))
    gone_port = gone.getsockname()[1]
    gone.close()  # a nanny that ended with its job: nothing listens there now
    try:
        alive = f"tcp://127.0.0.1:{listening.getsockname()[1]}"
        for unit, nanny in (("db__kept", alive), ("db__preempted", f"tcp://127.0.0.1:{gone_port}"), ("db__local", None)):
            (folder / f"{unit}.json").write_text(json.dumps({"deaths": 1, "alone": True, "failed": False, "nanny": nanny}))
        task = RecordAttempts(str(tmp_path), "segments")
        assert "died 2 times" in task.begin("db__kept", "db/kept")  # its nanny restarted it: the second death
        assert task.begin("db__preempted", "db/preempted") is None  # the job ended: one death still, tried again
        stored = json.loads((folder / "db__preempted.json").read_text())
        assert stored["deaths"] == 1 and stored["ends"] == 1 and stored["alone"]  # (one thread: alone anyway)
        for ends in (2, 3):  # ... and its next jobs end on it too
            (folder / "db__preempted.json").write_text(json.dumps({**stored, "ends": ends - 1, "nanny": f"tcp://127.0.0.1:{gone_port}"}))
            problem = task.begin("db__preempted", "db/preempted")
        assert problem.startswith("the worker's whole job ended 3 times while computing this record (preempted each time")
        assert task.begin("db__preempted", "db/preempted") == problem  # failed: a retry of its batch is told so again
        assert "died 2 times" in task.begin("db__local", "db/local")  # no nanny to ask: every death counts
        assert attempts._nanny_gone("inproc://10.0.0.1/1/2") is False  # not TCP: counted
        # in a worker of several threads: after a job's end the record is not made to run alone (the job took every
        # process's records: running alone would tell nothing), after a death in company it is
        monkeypatch.setattr(attempts, "_one_thread", lambda: False)
        for unit, nanny, alone in (("db__after_end", f"tcp://127.0.0.1:{gone_port}", False), ("db__after_death", alive, True)):
            (folder / f"{unit}.json").write_text(json.dumps({"deaths": 0, "alone": False, "failed": False, "nanny": nanny}))
            assert task.begin(unit, unit) is None and json.loads((folder / f"{unit}.json").read_text())["alone"] is alone
            task.end(unit)
        (folder / "db__odd.json").write_text("[]")  # JSON of another form: a death in company, as a file cut short
        assert task.begin("db__odd", "db/odd") is None
        task.end("db__odd")
    finally:
        listening.close()


def test_a_record_that_died_in_company_is_computed_alone_in_its_process(tmp_path, monkeypatch):
    """In a worker of several threads, a record retried after a death in company waits until the process's other
    records are done, and the others wait for it: its next death is its own."""
    import threading
    import time

    from ecgpipe.orchestration import attempts

    monkeypatch.setattr(attempts, "_one_thread", lambda: False)
    folder = tmp_path / "markers" / "attempts" / "segments"
    folder.mkdir(parents=True)
    (folder / "db__suspect.json").write_text('{"deaths": 0, "alone": false, "failed": false}')
    events = []
    busy = RecordAttempts(str(tmp_path), "segments")
    assert busy.begin("db__busy", "db/busy") is None  # another thread's record, in flight

    def suspect():
        task = RecordAttempts(str(tmp_path), "segments")
        assert task.begin("db__suspect", "db/suspect") is None
        events.append("suspect begins")
        later = threading.Thread(target=lambda: (RecordAttempts(str(tmp_path), "segments").begin("db__late", "db/late"),
                                                 events.append("late begins")))
        later.start()
        time.sleep(0.2)
        events.append("suspect ends")
        task.end("db__suspect")
        later.join(timeout=5)

    thread = threading.Thread(target=suspect)
    thread.start()
    time.sleep(0.2)
    assert events == []  # waits for the record in flight
    events.append("busy ends")
    busy.end("db__busy")
    thread.join(timeout=5)
    assert events == ["busy ends", "suspect begins", "suspect ends", "late begins"]  # and nobody ran beside it
    assert json.loads((folder / "db__late.json").read_text())["alone"] is False


@pytest.mark.system
def test_a_record_that_kills_its_worker_fails_alone_and_the_run_completes(tmp_path, cinc, prefect_server, monkeypatch):
    from flows.ecg_pipeline import run_pipeline

    labels = dict(line.split(",") for line in (cinc / "REFERENCE-v3.csv").read_text().split())
    by_label: dict[str, list[str]] = {}
    for name in (cinc / "RECORDS").read_text().split():
        by_label.setdefault(labels[name], []).append(name)
    names = sorted(by_label["N"][:5] + by_label["A"][:5] + by_label["O"][:5])
    killer = names[5]  # inside a batch: records before it in its task are kept, those after it still computed
    copy_cinc(cinc, tmp_path / "data", names)
    row = {"kind": "hgb", "inputs": "rhythm", "level": "record", "class_weight": "balanced", "min_samples_leaf": 2,
           "max_iter": 20}
    cfg = load_config("cinc2017", {"classifier": row, "sweep": {"classifiers": [row]}, "cv": {"n_splits": 2},
                                   "run": {"n_workers": 2, "records_per_task": 4, "signal_s_per_task": 1e6}})
    monkeypatch.setenv(DIE_ENV, f"segments:cinc2017/{killer}")  # inherited by the LocalCluster's worker processes
    out = tmp_path / "out"
    report = run_pipeline(cfg, str(tmp_path / "data"), str(out))

    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    skipped = {s["record"]: s["error"] for s in report["skipped_records"]}
    path = str(tmp_path / "data" / "cinc2017" / killer)  # its path, as other failed records are named
    assert list(skipped) == [path] and f"died {DEATHS_ALLOWED} times" in skipped[path]
    used = set(report["protocols"]["grouped_by_subject"]["per_record"]["records"]["record"])
    assert used == {f"cinc2017/{n}" for n in names if n != killer}  # every other record, none lost with its batch
    assert report["record_accounting"]["failed"] == 1
    # what is left: the failed record's attempt, marked (a retry of its batch in this run would not try it again);
    # the next run clears it before its segments start
    left = list((out / "markers" / "attempts").rglob("*.json"))
    assert [p.name for p in left] == [f"cinc2017__{killer}.json"] and json.loads(left[0].read_text())["failed"]
    assert "died" in (out / "report.md").read_text()

    # the cause gone (more memory, say), a rerun computes that record alone and uses it
    monkeypatch.delenv(DIE_ENV)
    report = run_pipeline(cfg, str(tmp_path / "data"), str(out))
    assert report["skipped_records"] == []
    assert json.loads((out / "run.json").read_text())["stages"]["segments"]["computed"] == 1
    assert len(report["protocols"]["grouped_by_subject"]["per_record"]["records"]["record"]) == len(names)


@pytest.mark.system
def test_a_record_in_flight_when_its_workers_job_ends_twice_is_computed_not_left_out(tmp_path, cinc, prefect_server,
                                                                                     monkeypatch):
    """Real `dask worker` processes, each in a session of its own as a batch job's: the record's task ends two
    workers' whole jobs with SIGTERM (nanny and worker) as it starts; a third worker, started once both are gone, computes
    it. Before 0.19.0 the second end counted as its second death and the record was left out of the run."""
    import threading

    from ecgpipe.orchestration.attempts import PREEMPT_ENV
    from flows.ecg_pipeline import run_pipeline

    from conftest import start_scheduler, start_worker, stop, wait_for_workers

    labels = dict(line.split(",") for line in (cinc / "REFERENCE-v3.csv").read_text().split())
    by_label: dict[str, list[str]] = {}
    for name in (cinc / "RECORDS").read_text().split():
        by_label.setdefault(labels[name], []).append(name)
    names = sorted(by_label["N"][:3] + by_label["A"][:3] + by_label["O"][:3])
    victim = names[3]
    copy_cinc(cinc, tmp_path / "data", names)
    row = {"kind": "logreg", "inputs": "rhythm", "level": "record", "class_weight": "balanced"}
    cfg = load_config("cinc2017", {"classifier": row, "sweep": {"classifiers": [row]}, "cv": {"n_splits": 2},
                                   "run": {"records_per_task": 2, "signal_s_per_task": 1e6}})
    scheduler, sched_file = start_scheduler(tmp_path)
    monkeypatch.setenv(PREEMPT_ENV, f"segments:cinc2017/{victim}")
    doomed = [start_worker(sched_file), start_worker(sched_file)]
    monkeypatch.delenv(PREEMPT_ENV)
    procs = [scheduler, *doomed]

    attempt = tmp_path / "out" / "markers" / "attempts" / "segments" / f"cinc2017__{victim}.json"
    seen, finished = [], threading.Event()

    def replace_them():  # a later job, once both ended (the run's tasks wait for a worker meanwhile)
        while any(p.poll() is None for p in doomed) and not finished.is_set():
            time.sleep(0.2)
        time.sleep(1)
        if finished.is_set():  # the test ended first: no worker after it
            return
        # the second attempt's file, as the second job wrote it when it began: the first job's end was told from a
        # death while its nanny was shutting down (the race the probe's wait covers)
        seen.append(json.loads(attempt.read_text()))
        procs.append(start_worker(sched_file))

    later = threading.Thread(target=replace_them, daemon=True)
    try:
        address = wait_for_workers(sched_file, 2)
        later.start()
        report = run_pipeline(cfg, str(tmp_path / "data"), str(tmp_path / "out"), scheduler=address)
        assert all(p.returncode is not None for p in doomed)  # both jobs ended on the record
        assert seen and seen[0]["deaths"] == 0 and seen[0]["ends"] == 1, seen
        assert report["skipped_records"] == []
        used = set(report["protocols"]["grouped_by_subject"]["per_record"]["records"]["record"])
        assert used == {f"cinc2017/{n}" for n in names}
        assert not list((tmp_path / "out" / "markers" / "attempts").rglob("*.json"))
    finally:
        finished.set()
        if later.is_alive():
            later.join(timeout=10)
        stop(procs)


def test_the_hook_kills_only_the_named_record(monkeypatch):
    from ecgpipe.orchestration.attempts import injected_death

    monkeypatch.setenv(DIE_ENV, "segments:cinc2017/A00001,recordings:mitdb/100")
    injected_death("segments", "cinc2017/A00002")  # another record: this process lives on
    injected_death("recordings", "cinc2017/A00001")  # another stage
    assert Path(".").exists()
