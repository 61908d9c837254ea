"""Input digests kept beside a run's results: a rerun's plan reads only the records whose files changed, and a
changed file is always read again, whatever the change."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path

import pytest

from ecgpipe import input_digests
from ecgpipe.config import load_config
from ecgpipe.input_digests import CACHE, InputDigests
from ecgpipe.keys import file_digest, record_files, signal_digest
from ecgpipe.stages.segments import plan_records

from conftest import copy_records

MITDB = ["100", "201", "207"]


@pytest.fixture(autouse=True)
def fresh_process():
    """Each test starts as a new process would: no preflight's digests waiting for a plan."""
    input_digests._PREFLIGHT.clear()
    yield
    input_digests._PREFLIGHT.clear()


def record_file_lists(folder: Path, records: list[str]) -> list[list[Path]]:
    return [record_files(folder, r, "atr") for r in records]


def digests_of(out: Path | None, lists, verify: str = "stamp") -> tuple[list[str], InputDigests]:
    digests = InputDigests(out, verify)
    found = [digests(files) for files in lists]
    digests.save()
    return found, digests


def test_a_rerun_reads_no_unchanged_record_and_gets_the_same_digests(physionet, tmp_path):
    lists = record_file_lists(physionet / "mitdb", MITDB)
    first, cold = digests_of(tmp_path, lists)
    assert first == [file_digest(files) for files in lists]
    assert cold.hashed == len(MITDB)
    kept = json.loads((tmp_path / CACHE).read_text())
    assert sum(len(v) for v in kept["digests"].values()) == len(MITDB)
    again, warm = digests_of(tmp_path, lists)
    assert again == first and warm.hashed == 0
    # a model's provenance: the recordings without their annotations, kept the same way
    assert [warm.signal(physionet / "mitdb", r) for r in MITDB] == [signal_digest(physionet / "mitdb", r) for r in MITDB]
    assert warm.hashed == len(MITDB)
    warm.save()
    later = InputDigests(tmp_path)
    assert later.signal(physionet / "mitdb", "100") == signal_digest(physionet / "mitdb", "100") and later.hashed == 0
    content, verified = digests_of(tmp_path, lists, verify="content")  # --verify reads every input again
    assert content == first and verified.hashed == len(MITDB)


def test_a_job_on_another_node_reads_no_unchanged_record(physionet, tmp_path, monkeypatch):
    """NFS and Lustre give each client mount its own device number (autofs a new one per mount): the same files
    seen from another node must keep their digests, or every job there reads the whole corpus again."""
    lists = record_file_lists(physionet / "mitdb", MITDB)
    first, _ = digests_of(tmp_path, lists)
    real_stat = os.stat

    def from_another_node(path, *args, **kwargs):
        st = real_stat(path, *args, **kwargs)
        return os.stat_result((st.st_mode, st.st_ino, st.st_dev + 17, st.st_nlink, st.st_uid, st.st_gid, st.st_size,
                               int(st.st_atime), int(st.st_mtime), int(st.st_ctime), st.st_atime, st.st_mtime, st.st_ctime,
                               st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns))

    monkeypatch.setattr(os, "stat", from_another_node)
    assert os.stat(lists[0][0]).st_dev != real_stat(lists[0][0]).st_dev
    again, elsewhere = digests_of(tmp_path, lists)
    assert again == first and elsewhere.hashed == 0


def test_the_digests_of_records_no_longer_there_are_not_kept(physionet, tmp_path, monkeypatch):
    """A record deleted (or a database folder moved) leaves no entry behind once new digests are saved: the file
    would otherwise grow with every corpus ever planned into the folder. A record merely left out (a pilot) stays."""
    monkeypatch.setattr(input_digests, "SETTLE_S", 0.0)  # the copies were just written
    folder = copy_records(physionet, tmp_path / "data", "mitdb", MITDB)
    digests_of(tmp_path / "out", record_file_lists(folder, MITDB[:2]))
    for f in folder.glob("201.*"):
        f.unlink()
    _, later = digests_of(tmp_path / "out", record_file_lists(folder, MITDB[2:]))
    assert later.hashed == 1
    kept = json.loads((tmp_path / "out" / CACHE).read_text())["digests"][str(folder)]
    assert sorted(names.split(".")[0] for names in kept) == ["100", "207"]
    moved = folder.rename(tmp_path / "unmounted")  # a folder out of reach keeps its digests: hashing it again is slow
    digests_of(tmp_path / "out", record_file_lists(copy_records(physionet, tmp_path / "data2", "mitdb", MITDB[:1]), MITDB[:1]))
    assert json.loads((tmp_path / "out" / CACHE).read_text())["digests"][str(folder)] == kept and moved.is_dir()


def test_every_kind_of_change_is_read_again(physionet, tmp_path, monkeypatch):
    monkeypatch.setattr(input_digests, "SETTLE_S", 0.0)  # the copies were just written; see the next test
    data = copy_records(physionet, tmp_path / "data", "mitdb", MITDB)
    lists = record_file_lists(data, MITDB)
    before, _ = digests_of(tmp_path / "out", lists)

    os.utime(data / "100.dat")  # touched, same bytes: read again, same digest
    # 201's signal changed in place with its size and modification time put back: the inode's change time differs
    dat = data / "201.dat"
    st = dat.stat()
    raw = bytearray(dat.read_bytes())
    raw[1000] ^= 0xFF
    dat.write_bytes(bytes(raw))
    os.utime(dat, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert dat.stat().st_size == st.st_size and dat.stat().st_mtime_ns == st.st_mtime_ns
    (data / "207.atr").unlink()  # an annotation file gone
    after, warm = digests_of(tmp_path / "out", lists)
    assert warm.hashed == 3
    assert after == [file_digest(files) for files in lists]
    assert after[0] == before[0] and after[1] != before[1] and after[2] != before[2]

    shutil.copy2(physionet / "mitdb" / "201.dat", dat)  # put back, times and all: a new inode, read again
    restored, again = digests_of(tmp_path / "out", lists)
    assert again.hashed == 1 and restored[1] == before[1]


def test_files_changed_moments_ago_are_not_trusted_yet(physionet, tmp_path):
    # a write within the file system's time resolution of the stamp could leave it unchanged (git's "racy clean")
    data = copy_records(physionet, tmp_path / "data", "mitdb", MITDB[:1])
    lists = record_file_lists(data, MITDB[:1])
    digests_of(tmp_path / "out", lists)
    _, warm = digests_of(tmp_path / "out", lists)
    assert warm.hashed == 1


def test_a_damaged_or_older_digest_file_is_ignored(physionet, tmp_path):
    lists = record_file_lists(physionet / "mitdb", MITDB)
    truth, _ = digests_of(tmp_path, lists)
    path = tmp_path / CACHE
    kept = json.loads(path.read_text())
    path.write_text(path.read_text()[:50])  # half a file
    again, warm = digests_of(tmp_path, lists)
    assert again == truth and warm.hashed == len(MITDB)
    # digests kept by another version of file_digest: worthless, even where the stamps match
    wrong = {folder: {names: [stamp, "0" * 64] for names, (stamp, _) in entries.items()}
             for folder, entries in kept["digests"].items()}
    path.write_text(json.dumps({"version": "an older ecgpipe", "digests": wrong}))
    again, warm = digests_of(tmp_path, lists)
    assert again == truth and warm.hashed == len(MITDB)


def test_a_file_that_fails_to_read_is_read_again_next_time(tmp_path, monkeypatch):
    # /proc/self/mem is a regular file whose first bytes raise EIO, even for root: an I/O error, not content
    monkeypatch.setattr(input_digests, "SETTLE_S", 0.0)
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "r.hea").write_text("r 1 360 10\n")
    (folder / "r.dat").symlink_to("/proc/self/mem")
    lists = [[folder / "r.hea", folder / "r.dat"]]
    _, first = digests_of(tmp_path / "out", lists)
    _, again = digests_of(tmp_path / "out", lists)
    assert first.hashed == again.hashed == 1 and not (tmp_path / "out" / CACHE).exists()


def test_a_malformed_digest_file_is_never_trusted(physionet, tmp_path):
    lists = record_file_lists(physionet / "mitdb", MITDB[:2])
    truth, _ = digests_of(tmp_path, lists)
    folder = os.path.abspath(physionet / "mitdb")
    good = json.loads((tmp_path / CACHE).read_text())
    for doc in (None, [], {"version": good["version"], "digests": None},
                {"version": good["version"], "digests": {folder: {n: ["x"] for n in good["digests"][folder]}}}):
        (tmp_path / CACHE).write_text(json.dumps(doc))
        again, warm = digests_of(tmp_path, lists)
        assert again == truth and warm.hashed == 2


def test_one_run_reads_each_changed_record_once(physionet, tmp_path, monkeypatch):
    """The preflight check and the flow's plan of one run share what they read: a changed record is hashed once."""
    from ecgpipe.orchestration.preflight import preflight
    from ecgpipe.plan import RunPlan

    monkeypatch.setattr(input_digests, "SETTLE_S", 0.0)
    data = tmp_path / "data"
    copy_records(physionet, data, "mitdb", MITDB)
    copy_records(physionet, data, "vfdb", ["418", "419"])
    out = tmp_path / "out"
    for verify in ("stamp", "content"):
        cfg = load_config("paper4", {"run": {"verify": verify}})
        preflight(cfg, data, out_dir=str(out))
        plan = RunPlan.create(cfg, data, str(out), download=False)
        assert plan.inputs.hashed == 5 and not input_digests._PREFLIGHT  # the plan took the preflight's
        plan.inputs.save()
    cfg = load_config("paper4")
    os.utime(data / "mitdb" / "100.atr")
    preflight(cfg, data, out_dir=str(out))
    assert RunPlan.create(cfg, data, str(out), download=False).inputs.hashed == 1
    assert RunPlan.create(cfg, data, str(out), download=False).inputs.hashed == 1  # no preflight, nothing saved
    status = RunPlan.create(cfg, data, str(out), download=False)  # as `ecgpipe status`: reads, never writes
    before = (out / CACHE).stat().st_mtime_ns
    assert status.inputs.hashed == 1 and (out / CACHE).stat().st_mtime_ns == before


def test_an_output_folder_that_cannot_keep_them_costs_only_the_hashing(physionet, tmp_path, caplog):
    (tmp_path / "inputs").write_text("a file where the folder would go")
    lists = record_file_lists(physionet / "mitdb", MITDB[:1])
    with caplog.at_level(logging.WARNING):
        found, _ = digests_of(tmp_path, lists)
    assert found == [file_digest(lists[0])]
    assert "input digests not kept" in caplog.text and str(tmp_path) in caplog.text


def test_planned_units_are_the_same_with_kept_digests(physionet, tmp_path):
    cfg = load_config("paper4", {"databases": {"mitdb": {"records": MITDB}, "vfdb": {"records": ["418", "419"]}}})
    plain = plan_records(cfg, physionet, download=False)
    digests = InputDigests(tmp_path)
    plan_records(cfg, physionet, download=False, digest_of=digests)
    digests.save()
    warm = InputDigests(tmp_path)
    kept = plan_records(cfg, physionet, download=False, digest_of=warm)
    assert warm.hashed == 0 and digests.hashed == len(plain) == 5
    assert [(u.key, u.signal_key, u.files_sha256) for u in kept] == [(u.key, u.signal_key, u.files_sha256) for u in plain]


KILLED_WHILE_HASHING = """
import os, signal, sys
from ecgpipe import input_digests
from ecgpipe.config import load_config
from ecgpipe.orchestration.preflight import preflight

real, calls = input_digests.InputDigests.__call__, []

def hashed(self, paths):  # the job's node is lost as it reaches the fifth record: SIGKILL, nothing runs after it
    calls.append(paths)
    if len(calls) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, paths)

input_digests.InputDigests.__call__ = hashed
cfg = load_config("paper4", {"databases": {"mitdb": {"records": sys.argv[3].split(",")}}})
preflight(cfg, sys.argv[1], False, sys.argv[2])
"""


@pytest.mark.parametrize("every_s, kept", [("0", 4), (None, 0)])
def test_a_job_killed_outright_while_its_checks_hash_keeps_what_it_read_minutes_before(physionet, tmp_path, every_s, kept):
    """A SIGKILL with no SIGTERM before it (a node lost, the OOM killer) during the checks: the digests written every
    few minutes (``ECGPIPE_KEEP_DIGESTS_EVERY_S``, here after every record) are on disk, and the next run reads only
    the others. Before 0.20.0 a corpus was hashed from its first record again (the default's five minutes here)."""
    import subprocess
    import sys

    out, records = tmp_path / "out", ["100", "101", "103", "105", "106", "108"]
    env = {k: v for k, v in os.environ.items() if k != "ECGPIPE_KEEP_DIGESTS_EVERY_S"} | ({"ECGPIPE_KEEP_DIGESTS_EVERY_S": every_s} if every_s else {})
    done = subprocess.run([sys.executable, "-c", KILLED_WHILE_HASHING, str(physionet), str(out), ",".join(records)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    assert not (out / ".ecgpipe.lock").exists()  # never taken by the checks: a run starting then is not refused
    on_disk = json.loads((out / CACHE).read_text())["digests"] if kept else {}
    assert sum(len(v) for v in on_disk.values()) == kept and (out / CACHE).exists() == bool(kept)
    cfg = load_config("paper4", {"databases": {"mitdb": {"records": records}}})
    digests = InputDigests(out)
    planned = plan_records(cfg, physionet, download=False, digest_of=digests)
    assert digests.hashed == len(planned) - kept  # vfdb's 22 and mitdb's records from the fifth on


def test_kept_every_writes_when_its_time_has_come_and_digests_wait(physionet, tmp_path):
    lists = record_file_lists(physionet / "mitdb", MITDB)
    digests, writes = InputDigests(tmp_path), []
    never = digests.kept_every(3600.0, lambda: writes.append(digests.save()))
    assert [never(files) for files in lists] == [file_digest(files) for files in lists] and writes == []
    digests, writes = InputDigests(tmp_path / "b"), []
    always = digests.kept_every(0.0, lambda: writes.append(digests.save()))
    [always(files) for files in lists + lists]  # the second pass computes nothing new: nothing to write
    assert writes == [True] * len(MITDB) and digests.computed == len(MITDB) and digests.new == 0


def test_status_keeps_the_digests_it_read_in_an_earlier_runs_folder_only(physionet, tmp_path, monkeypatch):
    """`ecgpipe status` before a rerun over new records reads them; the run after it does not read them again (before
    0.20.0 both did). Nothing is written into a folder no run has used, nor while a run holds the folder."""
    from ecgpipe.lock import RunLock
    from ecgpipe.status import run_status

    out = tmp_path / "out"
    earlier = load_config("paper4", {"databases": {"mitdb": {"records": ["100"]}, "vfdb": {"records": ["418"]}}})
    digests = InputDigests(out)
    plan_records(earlier, physionet, download=False, digest_of=digests)
    digests.save()  # an earlier run's folder: its inputs/ holds the digests of its two records
    more = load_config("paper4", {"databases": {"mitdb": {"records": MITDB}, "vfdb": {"records": ["418"]}}})

    def read_by_the_next_run() -> int:
        digests = InputDigests(out)
        plan_records(more, physionet, download=False, digest_of=digests)
        return digests.hashed

    with RunLock(out):  # a run holds the folder: status reports it and writes nothing
        held = run_status(more, physionet, str(out))
    assert "running" in held and not held.get("input_digests_kept") and read_by_the_next_run() == 2
    # a killed run's lock left behind: status says so, writes the digests, and leaves the lock as it found it
    lock = out / ".ecgpipe.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 7, "started": "2026-12-07T00:00:00"}))
    before = lock.read_text()

    def refused(self):  # status never takes the lock: a run starting at that moment would be refused
        raise AssertionError("status took the run's lock")

    monkeypatch.setattr(RunLock, "acquire", refused)
    status = run_status(more, physionet, str(out))
    assert "unfinished" in status and lock.read_text() == before
    assert "the input digests of the 2 record(s) read here are kept" in status["input_digests_kept"]
    assert read_by_the_next_run() == 0
    unused = tmp_path / "never-run"
    assert "input_digests_kept" not in run_status(more, physionet, str(unused)) and not unused.exists()


def test_a_run_s_plan_hashing_afresh_keeps_its_digests_every_few_minutes_and_the_setting_is_checked(physionet, tmp_path, monkeypatch):
    """The flow's own plan (a deployment's run, no preflight in its process) writes what it read as it goes, as the
    checks do: stopped at its fourth record with no chance to save (no SIGTERM), three records' digests are kept."""
    from ecgpipe.errors import PipelineError
    from ecgpipe.plan import RunPlan

    class NodeLost(BaseException):  # what the plan cannot catch: nothing runs after it, as after a SIGKILL
        pass

    real, calls = InputDigests.__call__, []

    def hashed(self, paths):
        calls.append(paths)
        if len(calls) == 4:
            raise NodeLost
        return real(self, paths)

    monkeypatch.setattr(InputDigests, "__call__", hashed)
    monkeypatch.setenv("ECGPIPE_KEEP_DIGESTS_EVERY_S", "0")
    cfg = load_config("paper4", {"databases": {"mitdb": {"records": MITDB + ["203"]}}})
    out = tmp_path / "out"
    with pytest.raises(NodeLost):
        RunPlan.create(cfg, physionet, str(out), download=False, keep_digests=True)
    kept = json.loads((out / CACHE).read_text())["digests"]
    assert sum(len(v) for v in kept.values()) == 3
    with pytest.raises(NodeLost):  # as `ecgpipe status` plans: it writes nothing as it goes
        calls.clear()
        RunPlan.create(cfg, physionet, str(tmp_path / "status"), download=False)
    assert not (tmp_path / "status").exists()
    for bad in ("", "soon", "-1", "nan", "inf"):
        monkeypatch.setenv("ECGPIPE_KEEP_DIGESTS_EVERY_S", bad)
        with pytest.raises(PipelineError, match="ECGPIPE_KEEP_DIGESTS_EVERY_S=.*give the seconds between writes"):
            input_digests.keep_every_s()
