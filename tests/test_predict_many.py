"""``ecgpipe predict`` and ``ecgpipe evaluate`` over many records, on real mitdb records as PhysioNet ships them:
worker processes (``--jobs``) give the same files as one process, a stopped or partly failed prediction is resumed
(``--resume``) without predicting its finished records again, and many records get progress lines instead of a line
each."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_reliability import cli

from conftest import REPO, copy_cinc, copy_records

RECORDS = ["100", "101", "103"]
OUTPUTS = ("records.csv", "episodes.csv", "endpoints.csv")


def _model(path, physionet, smooth_seed: int = 0, training: dict | None = None):
    """A rhythm-block-only model (no CNN: a 30-min record in about a second) with paper4's classes and endpoints."""
    from ecgpipe.classify import fit_classifier
    from ecgpipe.config import load_config
    from ecgpipe.model import save_model

    cfg = load_config("paper4", {"rhythm": {"enabled": True}, "classifier": {"inputs": "rhythm"}})
    y = np.repeat(np.arange(4), 30)
    model, _ = fit_classifier(np.random.default_rng(smooth_seed).normal(size=(120, 8)) + y[:, None], y, cfg.classifier)
    save_model(path, model, cfg, weights_source="test", n_cnn=None, training={"n_segments": 120, **(training or {})})
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, physionet):
    tmp = tmp_path_factory.mktemp("many")
    from ecgpipe.keys import signal_digest

    # mitdb 100 and 101 are "training records" of this model: flagged in records.csv and on stderr
    training = {"recordings_sha256": {f"mitdb/{r}": signal_digest(physionet / "mitdb", r) for r in ("100", "101")}}
    return {"tmp": tmp, "model": _model(tmp / "model.skops", physionet, training=training),
            "records": [str(physionet / "mitdb" / r) for r in RECORDS]}


def _rows(out, name):
    with open(out / name, newline="") as fh:
        return list(csv.reader(fh))


def test_jobs_give_the_files_one_process_gives(setup, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for out, jobs in ((one, "1"), (two, "2")):
        proc = cli("predict", "--model", str(setup["model"]), *setup["records"], "--out", str(out), "--compare", "atr",
                   "--jobs", jobs)
        assert proc.returncode == 0, proc.stderr
    for name in (*OUTPUTS, "agreement.json", *(f"{r}.pred" for r in RECORDS)):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    records = _rows(one, "records.csv")
    assert [r[0] for r in records[1:]] == setup["records"]  # in the order given, whatever finished first
    note = dict(zip(records[0], records[1]))["note"]
    assert note == "one of this model's training records (mitdb/100)"  # kept with the row, not only on stderr
    assert [dict(zip(records[0], r))["lead"] for r in records[1:]] == ["MLII"] * 3  # the lead read, per record
    assert json.loads((two / "model.json").read_text())["options"]["compare"] == "atr"


def test_resume_predicts_only_what_a_stopped_or_failed_prediction_left(setup, physionet, tmp_path):
    """A record that failed (its files missing) and a prediction killed after its first record are both taken up
    where they stopped; the finished files equal those of one uninterrupted prediction, byte for byte."""
    folder = tmp_path / "later"  # 103's files arrive after the first prediction
    paths = [*setup["records"][:2], str(folder / "mitdb" / "103")]
    args = ["predict", "--model", str(setup["model"]), *paths, "--compare", "atr"]
    first = cli(*args, "--out", str(tmp_path / "p"))
    assert first.returncode == 1 and "103" in first.stderr
    copy_records(physionet, folder, "mitdb", ["103"])
    resumed = cli(*args, "--out", str(tmp_path / "p"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 2 of 3 record(s) already predicted" in resumed.stdout and "predicting the other 1" in resumed.stdout
    assert f"{paths[0]}: " not in resumed.stdout and f"{paths[2]}: " in resumed.stdout  # only 103 predicted again
    whole = cli(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr

    def same_as_whole(out):
        for name in (*OUTPUTS, "agreement.json", "outputs.csv"):
            assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name

    same_as_whole(tmp_path / "p")  # the failed record's row, first written last, back in its place

    # what a prediction killed while writing its second record leaves: the first record's rows, a torn line, no
    # agreement.json, the first record's agreement in the partial file
    out = tmp_path / "killed"
    shutil.copytree(tmp_path / "whole", out)
    rows = (out / "records.csv").read_text().splitlines(keepends=True)
    (out / "records.csv").write_text("".join(rows[:2]) + rows[2][:25])
    agreement = json.loads((out / "agreement.json").read_text())
    (out / "agreement.json").unlink()
    (out / "agreement.partial.jsonl").write_text(json.dumps(["100", agreement["100"]]) + "\n" + '["101", {"annot')
    again = cli(*args, "--out", str(out), "--resume", "--jobs", "2")
    assert again.returncode == 0, again.stderr
    assert "resuming: 1 of 3 record(s)" in again.stdout
    same_as_whole(out)
    assert not (out / "agreement.partial.jsonl").exists()

    # a table that cannot be read says nothing of which records are complete: every record is predicted again
    (out / "endpoints.csv").unlink()
    again = cli(*args, "--out", str(out), "--resume")
    assert again.returncode == 0 and "resuming" not in again.stdout and f"{paths[0]}: " in again.stdout
    same_as_whole(out)

    # another model, or other options, would mix two predictions in one folder: refused, nothing written over
    before = (out / "records.csv").read_bytes()
    other = _model(tmp_path / "other.skops", physionet, smooth_seed=1)
    refused = cli("predict", "--model", str(other), *paths, "--compare", "atr", "--out", str(out), "--resume")
    assert refused.returncode == 2 and "another model" in refused.stderr, refused.stderr
    refused = cli(*args, "--out", str(out), "--resume", "--smooth", "3")
    assert refused.returncode == 2 and "other options (smooth" in refused.stderr, refused.stderr
    assert (out / "records.csv").read_bytes() == before


def test_resume_keeps_a_record_only_under_the_output_name_it_had(setup, physionet, tmp_path):
    """Records of one name in several folders are numbered by their place among the records given (1-mitdb/100,
    2-mitdb/100, mitdb/100): given fewer of them, a name can pass to another record, whose annotation file it is not."""
    paths = [str(copy_records(physionet, tmp_path / f, "mitdb", ["100"]) / "100") for f in "pqr"]
    out = tmp_path / "pred"
    assert cli("predict", "--model", str(setup["model"]), *paths, "--out", str(out)).returncode == 0
    names = dict(_rows(out, "outputs.csv")[1:])
    assert names[paths[1]] == "2-mitdb/100.pred" and names[paths[2]] == "mitdb/100.pred"
    fewer = cli("predict", "--model", str(setup["model"]), *paths[1:], "--out", str(out), "--resume")
    assert fewer.returncode == 0, fewer.stderr
    assert "resuming: 1 of 2" in fewer.stdout and f"{paths[1]}: " in fewer.stdout  # 2-mitdb/100 is now 1-mitdb/100
    assert dict(_rows(out, "outputs.csv")[1:]) == {paths[1]: "1-mitdb/100.pred", paths[2]: "mitdb/100.pred"}
    assert [r[0] for r in _rows(out, "records.csv")[1:]] == paths[1:]  # the records not given are not listed


def test_sigterm_stops_a_prediction_that_resume_then_finishes(setup, physionet, tmp_path):
    """A batch system's SIGTERM mid-way: exit 130, a line saying how to go on, every finished record kept; the
    resumed prediction predicts only the others and ends with the files of an uninterrupted one."""
    paths = [str(physionet / "mitdb" / r) for r in ("100", "101", "103", "105", "106", "107", "108", "109")]
    args = [sys.executable, "-m", "ecgpipe.cli", "predict", "--model", str(setup["model"]), *paths]
    out = tmp_path / "p"
    proc = subprocess.Popen([*args, "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while (not (out / "records.csv").exists() or len(_rows(out, "records.csv")) < 3) and time.monotonic() < deadline:
        time.sleep(0.2)  # until two records are done
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr and "Traceback" not in stderr
    done = len(_rows(out, "records.csv")) - 1
    assert 2 <= done < len(paths)
    resumed = cli(*args[3:], "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {done} of {len(paths)} record(s)" in resumed.stdout
    assert cli(*args[3:], "--out", str(tmp_path / "whole")).returncode == 0
    for name in (*OUTPUTS, "outputs.csv"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_what_a_worker_process_read_anyway_is_said_by_the_command_and_kept_in_records_csv(setup, physionet, tmp_path):
    """A signal file longer than its header says is read as the header says, with a warning: printed once by the
    command (whichever process read it), and in the record's note, where a log of thousands of records keeps it;
    said too of a record that fails after it was read (201: the reference annotations compared with are empty)."""
    folder = copy_records(physionet, tmp_path / "data", "mitdb", ["103", "100", "201"])
    for name in ("100", "201"):
        with open(folder / f"{name}.dat", "ab") as fh:
            fh.write(b"\0\0\0")
    (folder / "201.ref").write_bytes(b"")  # the others have no .ref: not compared, a reason given
    proc = cli("predict", "--model", str(setup["model"]), *(str(folder / n) for n in ("103", "100", "201")),
               "--out", str(tmp_path / "p"), "--jobs", "2", "--compare", "ref")
    assert proc.returncode == 1, proc.stderr  # 201 failed
    for name in ("100", "201"):
        assert proc.stderr.count(f"ecgpipe: warning: {folder / name}: signal file {folder / name}.dat holds 3 bytes more") == 1
    rows = {r[0]: r for r in _rows(tmp_path / "p", "records.csv")[1:]}
    columns = _rows(tmp_path / "p", "records.csv")[0]
    notes = {path: dict(zip(columns, r))["note"] for path, r in rows.items()}
    assert "holds 3 bytes more" in notes[str(folder / "100")] and notes[str(folder / "103")] == ""
    assert "201.ref is empty" in dict(zip(columns, rows[str(folder / "201")]))["error"]


def test_many_records_get_progress_lines_and_one_training_warning(setup, tmp_path, monkeypatch, capsys):
    """Past PER_RECORD_LINES records a line per record would flood a log of 300 000: progress lines (done/total, rate,
    ETA) instead, failures still named, and the training-record warnings summed up."""
    from ecgpipe import predict_many
    from ecgpipe.cli import main

    monkeypatch.setattr(predict_many, "PER_RECORD_LINES", 1)
    code = main(["predict", "--model", str(setup["model"]), *setup["records"], str(tmp_path / "missing" / "104"),
                 "--out", str(tmp_path / "p")])
    out, err = capsys.readouterr()
    assert code == 1
    assert "predict: 4/4 (100 %)" in out and "1 failed" in out and "episode(s) over" not in out
    assert "104" in err and "could not be predicted" in err
    assert err.count("is mitdb/1") == 1  # the first named, then summed up
    assert "2 of the records are this model's training records" in err
    assert len(_rows(tmp_path / "p", "records.csv")) == 5  # every record accounted for, the failed one too


def test_a_full_disk_stops_the_prediction_and_resume_finishes_it(setup, tmp_path, monkeypatch, capsys):
    """--out's disk full (ENOSPC) while the second record's annotations are written: every record after would fail the
    same way, so the command stops (exit 1, the disk's words, --resume) with the first record kept, rather than
    failing the rest one by one; a --resume once there is room predicts the other two."""
    import errno

    from ecgpipe import predict_many
    from ecgpipe.cli import main

    real, written = predict_many.write_annotations, []

    def full_disk(pred, out, extension, name):
        if written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(out, f"{name}.{extension}"))
        written.append(name)
        return real(pred, out, extension, name)

    monkeypatch.setattr(predict_many, "write_annotations", full_disk)
    out = tmp_path / "p"
    code = main(["predict", "--model", str(setup["model"]), *setup["records"], "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 1
    assert "No space left on device, stopped" in err and "101.pred" in err and "--resume" in err, err
    assert [r[0] for r in _rows(out, "records.csv")[1:]] == setup["records"][:1]  # 103 was not tried, nor failed
    monkeypatch.setattr(predict_many, "write_annotations", real)
    code = main(["predict", "--model", str(setup["model"]), *setup["records"], "--out", str(out), "--resume"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "resuming: 1 of 3" in captured.out
    assert [r[0] for r in _rows(out, "records.csv")[1:]] == setup["records"]
    assert all(r[-1] == "" for r in _rows(out, "records.csv")[1:])  # no error column filled


def test_a_record_that_fails_now_loses_its_earlier_annotations(setup, physionet, tmp_path):
    """Predicted again into an earlier prediction's folder, a record that now fails (its signal file truncated) keeps
    no annotation file of the earlier prediction (it would pass for this one's output beside its error row), and
    outputs.csv names no annotation file for it; the others' files are this prediction's."""
    folder = copy_records(physionet, tmp_path / "data", "mitdb", RECORDS)
    paths = [str(folder / r) for r in RECORDS]
    out = tmp_path / "p"
    args = ["predict", "--model", str(setup["model"]), *paths, "--out", str(out)]
    assert cli(*args).returncode == 0
    assert (out / "103.pred").exists()
    dat = folder / "103.dat"
    dat.write_bytes(dat.read_bytes()[:1000])
    again = cli(*args)
    assert again.returncode == 1 and "103" in again.stderr
    assert not (out / "103.pred").exists() and (out / "100.pred").exists() and (out / "101.pred").exists()
    assert dict(_rows(out, "outputs.csv")[1:]) == {paths[0]: "100.pred", paths[1]: "101.pred", paths[2]: ""}
    rows = {r[0]: r for r in _rows(out, "records.csv")[1:]}
    assert rows[paths[2]][-1] != "" and rows[paths[0]][-1] == ""  # its error, and none for the others
    # a record that fails after its annotation file was written (its reference annotations empty) keeps none either
    (folder / "101.atr").write_bytes(b"")
    fresh = cli("predict", "--model", str(setup["model"]), paths[1], "--compare", "atr", "--out", str(tmp_path / "fresh"))
    assert fresh.returncode == 1 and "101.atr is empty" in fresh.stderr, fresh.stderr
    assert not (tmp_path / "fresh" / "101.pred").exists()


def test_evaluate_jobs_give_the_results_one_process_gives(setup, physionet, tmp_path):
    """`ecgpipe evaluate --jobs 2`: the same evaluation.json (but its wall time), records CSV and report as one
    process, a broken record's error carried back from its worker process."""
    data = tmp_path / "data"
    folder = copy_records(physionet, data, "mitdb", ["100", "201", "203", "210"])
    dat = folder / "210.dat"
    dat.write_bytes(dat.read_bytes()[:1000])  # truncated: fails alone
    dataset = tmp_path / "mitdb.toml"
    dataset.write_text('name = "mitdb-af"\n[databases.mitdb]\nlead = ["MLII"]\n[classes]\nnormal = ["(N"]\n'
                       'afib = ["(AFIB"]\n[endpoints.af]\nclasses = ["afib"]\n')
    for jobs in ("1", "2"):
        proc = cli("evaluate", "--model", str(setup["model"]), "--config", str(dataset), "--data-dir", str(data),
                   "--out", str(tmp_path / f"ev{jobs}"), "--jobs", jobs)
        assert proc.returncode == 1, proc.stderr  # one record failed (below): exit 1, as predict's, the others scored
    one, two = (json.loads((tmp_path / f"ev{j}" / "evaluation.json").read_text()) for j in "12")
    assert one.pop("wall_s") > 0 and two.pop("wall_s") > 0
    assert one == two
    assert one["accounting"]["scored"] == 3 and one["accounting"]["failed"] == 1
    assert "210" in one["failed"][0]["record"] and "truncated" in one["failed"][0]["error"]
    assert one["recordings"]["af"]["hours"] == pytest.approx(1.5, abs=0.02)  # 100, 201, 203: 30 min each
    for name in ("evaluation_records.csv", "evaluation.md"):
        assert (tmp_path / "ev1" / name).read_bytes() == (tmp_path / "ev2" / name).read_bytes(), name
    # a record that kills its worker process fails alone too, the others scored as before
    proc = subprocess.run([sys.executable, "-m", "ecgpipe.cli", "evaluate", "--model", str(setup["model"]), "--config",
                           str(dataset), "--data-dir", str(data), "--out", str(tmp_path / "ev_killed"), "--jobs", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "ECGPIPE_INJECT_DEATH": "evaluate:mitdb/201"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    killed = json.loads((tmp_path / "ev_killed" / "evaluation.json").read_text())
    assert killed["accounting"]["scored"] == 2 and killed["accounting"]["failed"] == 2
    assert any(f["record"] == "mitdb/201" and "died on it twice" in f["error"] for f in killed["failed"])


def _pid_and_double(model, i: int) -> tuple[int, int]:
    return os.getpid(), 2 * i


def test_in_order_runs_work_in_worker_processes_and_keeps_the_order(setup):
    """What the --jobs tests above would not see: that the records went to other processes at all."""
    from ecgpipe.model import load_model
    from ecgpipe.model_pool import IN_FLIGHT_PER_JOB, in_order

    model = load_model(setup["model"])
    items = [(i,) for i in range(3 * IN_FLIGHT_PER_JOB * 2)]  # more than are ever in flight
    results = list(in_order(_pid_and_double, items, model, jobs=2))
    assert [r[1] for r in results] == [2 * i for (i,) in items]
    assert os.getpid() not in {pid for pid, _ in results}
    assert {pid for pid, _ in in_order(_pid_and_double, items[:3], model, jobs=1)} == {os.getpid()}


def _die_on(model, i: int, killer: int) -> int:
    if i == killer:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
    return 2 * i


def test_a_record_that_kills_its_worker_process_fails_alone_and_the_others_go_on(setup):
    """A process that dies takes every record in flight with it: they are tried again one at a time, the one that
    dies again alone fails by name, the others (before, beside and after it) come back in order."""
    from ecgpipe.errors import PipelineError
    from ecgpipe.model import load_model
    from ecgpipe.model_pool import IN_FLIGHT_PER_JOB, in_order

    model = load_model(setup["model"])
    items = [(i, 5) for i in range(3 * IN_FLIGHT_PER_JOB * 2)]
    results = list(in_order(_die_on, items, model, jobs=2, killed=lambda item, why: ("killed", item[0], why)))
    assert [r for r in results if isinstance(r, tuple)] == [("killed", 5, results[5][2])]
    assert "5: a worker process died on it twice, the second time with it alone" in results[5][2]
    assert [r for k, r in enumerate(results) if k != 5] == [2 * i for i, _ in items if i != 5]
    with pytest.raises(PipelineError, match=r"^\d+: a worker process died on it or on a record beside it.*; kept"):
        list(in_order(_die_on, items, model, jobs=2, lost="; kept"))  # without ``killed``: the command stops, naming it


def test_predict_jobs_leave_out_a_record_that_kills_its_worker_process(setup, tmp_path):
    out = tmp_path / "p"
    proc = subprocess.run([sys.executable, "-m", "ecgpipe.cli", "predict", "--model", str(setup["model"]), *setup["records"],
                           "--out", str(out), "--jobs", "2"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "ECGPIPE_INJECT_DEATH": "predict:101"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "a worker process died on it twice, the second time with it alone" in proc.stderr
    rows = {r[0]: dict(zip(_rows(out, "records.csv")[0], r)) for r in _rows(out, "records.csv")[1:]}
    assert set(rows) == set(setup["records"])
    failed = rows[setup["records"][1]]
    assert "died on it twice" in failed["error"] and all(not rows[r]["error"] for r in (setup["records"][0], setup["records"][2]))
    assert (out / "100.pred").exists() and (out / "103.pred").exists() and not (out / "101.pred").exists()


def test_evaluate_jobs_on_records_labelled_per_record(setup, cinc, tmp_path):
    """CinC records labelled in REFERENCE-v3.csv, some not scored (an excluded label, no row in the CSV) between
    the scored ones: the same rows, in the same order, with and without worker processes."""
    labels = dict(line.split(",") for line in (cinc / "REFERENCE-v3.csv").read_text().split())
    names = (cinc / "RECORDS").read_text().split()
    chosen = [n for n in names if labels[n] == "N"][:2] + [n for n in names if labels[n] == "~"][:1] + \
             [n for n in names if labels[n] == "A"][:2] + [n for n in names if labels[n] == "O"][:2]
    data = copy_cinc(cinc, tmp_path / "data", chosen, labelled=[n for n in chosen if n != chosen[3]])  # one row gone
    with open(data / f"{chosen[4]}.mat", "ab") as fh:  # read anyway, with a warning
        fh.write(b"\0\0\0")
    for jobs in ("1", "2"):
        proc = cli("evaluate", "--model", str(setup["model"]), "--config", "cinc2017", "--data-dir", str(data.parent),
                   "--out", str(tmp_path / f"ev{jobs}"), "--map", "normal=normal", "afib=afib", "--jobs", jobs)
        assert proc.returncode == 0, proc.stderr
        # said once, by the command, whichever process read it; kept with its row
        assert proc.stderr.count(f"ecgpipe: warning: {data / chosen[4]}: signal file") == 1, proc.stderr
        assert "scored records read with a warning" in proc.stdout
    one, two = (json.loads((tmp_path / f"ev{j}" / "evaluation.json").read_text()) for j in "12")
    assert one.pop("wall_s") > 0 and two.pop("wall_s") > 0
    assert one == two
    accounting = one["accounting"]
    assert (accounting["scored"], accounting["excluded_label"], accounting["no_label_row"]) == (5, 1, 1)
    assert accounting["read_with_warnings"] == 1 and "holds 3 bytes more" in one["records"][4]["note"]
    assert [r["record"] for r in one["records"]] == [f"cinc2017/{n}" for n in chosen]
    assert (tmp_path / "ev1" / "evaluation_records.csv").read_bytes() == (tmp_path / "ev2" / "evaluation_records.csv").read_bytes()


def test_evaluate_calls_a_patient_new_only_when_none_of_its_records_was_learnt_from(setup, physionet, tmp_path):
    """The model learnt from mitdb 100's recording (its artifact lists no training subjects): 103 declared the same
    patient is no new patient, in every result; declared apart it is, in every result."""
    for name, same in (("same", 'same_subject = { "103" = "100" }\n'), ("apart", "")):
        dataset = tmp_path / f"{name}.toml"
        dataset.write_text('name = "mitdb-af"\n[databases.mitdb]\nlead = ["MLII"]\nrecords = ["100", "103"]\n' + same
                           + '[classes]\nnormal = ["(N"]\nafib = ["(AFIB"]\n[endpoints.af]\nclasses = ["afib"]\n')
        proc = cli("evaluate", "--model", str(setup["model"]), "--config", str(dataset), "--data-dir", str(physionet),
                   "--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
    same, apart = (json.loads((tmp_path / n / "evaluation.json").read_text()) for n in ("same", "apart"))
    assert (same["accounting"]["training_records"], same["accounting"]["training_patients"]) == (1, 1)
    assert "windows_new_patients" not in same["results"] and "new_patients" not in same["recordings"]["af"]
    assert (apart["accounting"]["training_records"], apart["accounting"]["training_patients"]) == (1, 0)
    rows = {r["record"]: r for r in apart["records"]}
    assert apart["results"]["windows_new_patients"]["n"] == rows["mitdb/103"]["windows"]
    assert apart["recordings"]["af"]["new_patients"]["hours"] == pytest.approx(0.5, abs=0.01)


def test_a_model_carries_its_software_and_predict_and_evaluate_name_what_differs(physionet, tmp_path, monkeypatch):
    """A model records the Python and library versions it was trained with; predicting with other versions of a
    library that computes its numbers (here scikit-learn) says so on stderr and in model.json; the same versions say
    nothing."""
    import ecgpipe.model
    from ecgpipe.environment import numeric_differences, software_versions
    from ecgpipe.model import load_model

    here = software_versions()
    assert {"python", "numpy", "scipy", "scikit-learn", "wfdb", "ecgpipe"} <= set(here)
    same = load_model(_model(tmp_path / "same.skops", physionet))
    assert same.environment == here and numeric_differences(same.environment) == []
    monkeypatch.setattr(ecgpipe.model, "software_versions", lambda: {**here, "scikit-learn": "0.0.1", "prefect": "0.0.1"})
    older = load_model(_model(tmp_path / "older.skops", physionet))
    # prefect moves data, not values: recorded, not compared
    assert numeric_differences(older.environment) == [f"scikit-learn 0.0.1 -> {here['scikit-learn']}"]
    record = str(physionet / "mitdb" / "100")
    for name, warned in (("same", False), ("older", True)):
        proc = cli("predict", "--model", str(tmp_path / f"{name}.skops"), record, "--out", str(tmp_path / f"p_{name}"))
        assert proc.returncode == 0, proc.stderr
        assert ("trained with other versions of software that computes its numbers (scikit-learn 0.0.1 -> " in proc.stderr) == warned
        note = json.loads((tmp_path / f"p_{name}" / "model.json").read_text())
        assert note["software_differences"] == ([f"scikit-learn 0.0.1 -> {here['scikit-learn']}"] if warned else [])
    data = tmp_path / "data"
    copy_records(physionet, data, "mitdb", ["100"])
    dataset = tmp_path / "mitdb.toml"
    dataset.write_text('name = "mitdb-n"\n[databases.mitdb]\nlead = ["MLII"]\n[classes]\nnormal = ["(N"]\nafib = ["(AFIB"]\n')
    proc = cli("evaluate", "--model", str(tmp_path / "older.skops"), "--config", str(dataset), "--data-dir", str(data),
               "--out", str(tmp_path / "ev"))
    assert proc.returncode == 0, proc.stderr
    assert "trained with other versions of software that computes its numbers (scikit-learn 0.0.1" in proc.stderr
    ev = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert ev["software_differences"] == [f"scikit-learn 0.0.1 -> {here['scikit-learn']}"]
    assert "software that differs from the model's training: scikit-learn 0.0.1" in (tmp_path / "ev" / "evaluation.md").read_text()
