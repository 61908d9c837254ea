"""A record that kills its worker process (the out-of-memory killer, a crash in native code) fails alone, by name;
the run completes with every other record. Real processes: the LocalCluster's worker is SIGKILLed each time it
starts that record, as the kernel would kill it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecgpipe.config import load_config
from ecgpipe.orchestration.attempts import DEATHS_ALLOWED, DIE_ENV, RecordAttempts

from conftest import copy_cinc


def test_attempt_files_count_deaths_and_a_finished_record_leaves_none(tmp_path):
    attempts = RecordAttempts(str(tmp_path), "segments")
    assert attempts.begin("db__r1", "db/r1") is None  # first attempt
    attempts.end("db__r1")  # done (or failed in Python): no death
    assert attempts.begin("db__r1", "db/r1") is None and not list(tmp_path.rglob("*.tmp*"))
    # ... and its process died: the file stays, each later start counts one death more
    for _ in range(DEATHS_ALLOWED - 1):
        assert attempts.begin("db__r1", "db/r1") is None
    problem = attempts.begin("db__r1", "db/r1")
    assert problem and f"died {DEATHS_ALLOWED} times" in problem and "--memory-limit" in problem
    assert not (tmp_path / "markers" / "attempts" / "segments" / "db__r1.json").exists()  # a rerun tries it afresh
    assert attempts.begin("db__r1", "db/r1") is None

    # a file cut short by the death itself is one death; clear() forgets every attempt of the stage only
    (tmp_path / "markers" / "attempts" / "segments" / "db__r2.json").write_text('{"dea')
    other = RecordAttempts(str(tmp_path), "recordings")
    assert other.begin("db__r1", "db/r1") is None
    attempts.clear()
    assert not (tmp_path / "markers" / "attempts" / "segments").exists()
    assert (tmp_path / "markers" / "attempts" / "recordings" / "db__r1.json").exists()
    attempts.clear()  # nothing to clear: no error


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
    assert list(skipped) == [f"cinc2017/{killer}"]
    assert f"died {DEATHS_ALLOWED} times" in skipped[f"cinc2017/{killer}"]
    used = {r["record"] for r in report["protocols"]["grouped_by_subject"]["per_record"]["records"]}
    assert used == {f"cinc2017/{n}" for n in names if n != killer}  # every other record, none lost with its batch
    assert report["record_accounting"]["failed"] == 1
    assert not list((out / "markers" / "attempts").rglob("*.json"))  # nothing left to count against a rerun
    assert "died" in (out / "report.md").read_text()

    # the cause gone (more memory, say), a rerun computes that record alone and uses it
    monkeypatch.delenv(DIE_ENV)
    report = run_pipeline(cfg, str(tmp_path / "data"), str(out))
    assert report["skipped_records"] == []
    assert json.loads((out / "run.json").read_text())["stages"]["segments"]["computed"] == 1
    assert len(report["protocols"]["grouped_by_subject"]["per_record"]["records"]) == len(names)


def test_the_hook_kills_only_the_named_record(monkeypatch):
    from ecgpipe.orchestration.attempts import injected_death

    monkeypatch.setenv(DIE_ENV, "segments:cinc2017/A00001,recordings:mitdb/100")
    injected_death("segments", "cinc2017/A00002")  # another record: this process lives on
    injected_death("recordings", "cinc2017/A00001")  # another stage
    assert Path(".").exists()
