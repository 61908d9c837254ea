"""The command line on inputs that used to end in a traceback or quietly do the wrong thing: bare record names with
--compare, corrupt files a run wrote, a second `data fetch` into a database folder, out-of-range numbers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil

import numpy as np
import pytest

# Prefect sets its logging up when first imported, on the sys.stderr of that moment: here, pytest's session-long
# capture, not the capsys stream of a test below (closed after it: every later test's log line would fail)
import flows.ecg_pipeline  # noqa: F401
from ecgpipe.cli import main
from ecgpipe.records import RecordError

from conftest import copy_records, write_edf_plus


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    """``ecgpipe ARGV`` in this process: its exit code, stdout and stderr (an exception escaping main fails the test)."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------------------- predict
@pytest.fixture(scope="module")
def rhythm_model(tmp_path_factory):
    """A rhythm-block-only model (no CNN: predicting a 30-min record takes about a second)."""
    from ecgpipe.classify import fit_classifier
    from ecgpipe.config import load_config
    from ecgpipe.model import save_model

    cfg = load_config("paper4", {"rhythm": {"enabled": True}, "classifier": {"inputs": "rhythm"}})
    y = np.repeat(np.arange(4), 30)
    model, _ = fit_classifier(np.random.default_rng(0).normal(size=(120, 8)) + y[:, None], y, cfg.classifier)
    path = tmp_path_factory.mktemp("model") / "model.skops"
    save_model(path, model, cfg, weights_source="test", n_cnn=None, training={"n_segments": 120})
    return path


@pytest.mark.parametrize("spelling", ["100", "./100", "100.hea", "here//100"])
def test_predict_compare_with_a_bare_or_unnormalised_record_name(spelling, rhythm_model, physionet, tmp_path, monkeypatch, capsys):
    """`ecgpipe predict 100 --compare atr` in the record's folder used to die with KeyError('./100')."""
    here = tmp_path / "here"
    here.mkdir()
    for ext in ("hea", "dat", "atr"):
        shutil.copy(physionet / "mitdb" / f"100.{ext}", here)
    monkeypatch.chdir(tmp_path if spelling.startswith("here/") else here)
    code, out, err = _run(capsys, "predict", "--model", str(rhythm_model), spelling, "--compare", "atr", "--out", "pred")
    assert code == 0, err
    pred = (tmp_path if spelling.startswith("here/") else here) / "pred"
    agreement = json.loads((pred / "agreement.json").read_text())
    assert list(agreement) == ["100"]
    # the reference annotation was found and read: mitdb 100 is normal sinus rhythm for its whole 30 minutes
    assert agreement["100"]["seconds_scored"] > 1700 and set(agreement["100"]["per_class"]) == {"normal"}
    assert (pred / "100.pred").is_file()
    expected = "here/100" if spelling.startswith("here/") else "100"
    assert {row.split(",")[0] for row in (pred / "episodes.csv").read_text().splitlines()[1:]} == {expected}
    assert "vs atr: per-second agreement" in out


def test_predict_reads_an_edf_file_as_it_reads_the_same_wfdb_record(rhythm_model, physionet, tmp_path, capsys):
    """EDF is what many recorders ship. mitdb 100 as EDF (wfdb's own converter) and as EDF+ with an annotation
    channel at its own rate (as recorders write it; wfdb's EDF reader would average every channel down to the rates'
    common divisor): the same millivolts and the same calls as the WFDB record, reference annotations found beside the
    file, outputs named after it; a truncated or foreign .edf is one line naming the file while the other records are
    still predicted."""
    import wfdb
    from wfdb.io.convert.edf import wfdb_to_edf

    from ecgpipe.config import DatabaseSettings
    from ecgpipe.model import load_model
    from ecgpipe.predict import predict_record
    from ecgpipe.records import read_edf_record, read_record

    wfdb_dir, edf_dir = tmp_path / "wfdb", tmp_path / "edf"
    copy_records(physionet, tmp_path, "mitdb", ["100"]).rename(wfdb_dir)
    edf_dir.mkdir()
    wfdb_to_edf(str(wfdb_dir / "100"), output_filename=str(edf_dir / "100.edf"))
    shutil.copy(wfdb_dir / "100.atr", edf_dir)  # a reference beside the EDF file, as --compare expects
    settings = DatabaseSettings(lead=["MLII"])
    wfdb_rec = read_record(wfdb_dir, "mitdb", "100", settings, require_annotations=False)
    n = wfdb_rec.signals.shape[1]
    edf = read_edf_record(str(edf_dir / "100.edf"), settings)
    assert edf.fs == wfdb_rec.fs == 360 and edf.leads == ["MLII"] and n <= edf.signals.shape[1] < n + 3600
    # the WFDB record's millivolts exactly (wfdb's own EDF reader is one step of 0.005 mV off on this file)
    assert np.abs(edf.signals[:, :n] - wfdb_rec.signals).max() < 1e-9

    header = wfdb.rdheader(str(wfdb_dir / "100"))
    raw = wfdb.rdrecord(str(wfdb_dir / "100"), channels=[0], physical=False).d_signal[:, 0]
    gain, base = header.adc_gain[0], header.baseline[0]
    written = write_edf_plus(edf_dir / "plus.edf", raw, 360, ((-2048 - base) / gain, (2047 - base) / gain), (-2048, 2047))
    plus = read_edf_record(str(edf_dir / "plus.edf"), settings)
    assert plus.fs == 360 and plus.leads == ["MLII"] and plus.signals.shape == (1, written)
    assert np.abs(plus.signals[0] - wfdb_rec.signals[0, :written]).max() < 1e-6
    with pytest.raises(RecordError, match="annotation channel"):
        read_edf_record(str(edf_dir / "plus.edf"), DatabaseSettings(lead=[1]))

    model = load_model(rhythm_model)
    from_wfdb = predict_record(model, str(wfdb_dir / "100"), smooth=1)
    away_from_end = from_wfdb.window_starts_s < written / 360 - 40  # beyond every window's RR context
    for path in ("100.edf", "plus.edf"):
        calls = predict_record(model, str(edf_dir / path), smooth=1).window_classes[: len(away_from_end)]
        assert away_from_end.sum() > 850 and (calls[away_from_end] == from_wfdb.window_classes[away_from_end]).mean() > 0.99

    (edf_dir / "cut.edf").write_bytes((edf_dir / "100.edf").read_bytes()[:-5000])
    (edf_dir / "notes.edf").write_text("not a recording")
    code, out, err = _run(capsys, "predict", "--model", str(rhythm_model), str(edf_dir / "100.edf"), str(edf_dir / "cut.edf"),
                          str(edf_dir / "notes.edf"), "--compare", "atr", "--out", str(tmp_path / "pred"))
    assert code == 1
    assert f"{edf_dir / 'cut.edf'}: truncated EDF file" in err and f"{edf_dir / 'notes.edf'}: not an EDF file" in err
    agreement = json.loads((tmp_path / "pred" / "agreement.json").read_text())
    # the reference beside the EDF file was found and read: mitdb 100 is sinus rhythm throughout
    assert list(agreement) == ["100"] and agreement["100"]["seconds_scored"] > 1700
    assert set(agreement["100"]["per_class"]) == {"normal"}
    assert (tmp_path / "pred" / "100.pred").is_file() and "100.edf" in out
    assert not (edf_dir / "100.pred").exists()  # nothing written beside the inputs
    # a folder of EDF files stands for them by their file names (an upper-case suffix too), each read once
    only_edf = tmp_path / "edf-only"
    only_edf.mkdir()
    (only_edf / "REC.EDF").write_bytes((edf_dir / "100.edf").read_bytes())
    code, out, err = _run(capsys, "predict", "--model", str(rhythm_model), str(only_edf), str(only_edf / "REC.EDF"),
                          "--out", str(tmp_path / "pred-edf"))
    assert code == 0, err
    rows = (tmp_path / "pred-edf" / "records.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == [str(only_edf / "REC.EDF")]
    (only_edf / "RECORDS").write_text("REC\n")  # a RECORDS line names an EDF record by its stem, as a run does
    code, out, err = _run(capsys, "predict", "--model", str(rhythm_model), str(only_edf), "--out", str(tmp_path / "pred-listed"))
    assert code == 0, err
    rows = (tmp_path / "pred-listed" / "records.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == [str(only_edf / "REC.EDF")]


@pytest.fixture(scope="module")
def af_model(physionet, tmp_path_factory):
    """A rhythm-block model fitted on the real windows of mitdb 201 and 202 (sinus rhythm and AF episodes)."""
    from ecgpipe.classify import fit_classifier
    from ecgpipe.config import load_config
    from ecgpipe.dataset import record_windows
    from ecgpipe.model import save_model
    from ecgpipe.records import read_record
    from ecgpipe.rhythm_block import window_rhythm_features

    cfg = load_config("paper4-best", {"classifier": {"inputs": "rhythm", "pca": None, "tune": False}})
    X, y, subjects = [], [], []
    for name in ("201", "202"):
        rec = read_record(physionet / "mitdb", "mitdb", name, cfg.database("mitdb"))
        found = record_windows(rec, cfg)
        X.append(window_rhythm_features(rec, found.starts, cfg))
        y.append(found.class_index)
        subjects += [name] * len(found.starts)  # paper4-best balances patients
    X, y = np.concatenate(X).astype(np.float64), np.concatenate(y).astype(np.int64)
    model, _ = fit_classifier(X, y, cfg.classifier, subjects=np.array(subjects))
    path = tmp_path_factory.mktemp("af-model") / "model.skops"
    # as runs record them: the subjects of the training windows (mitdb's 201 and 202 are one patient)
    training = {"n_segments": len(y), "subjects": ["mitdb:201"]}
    save_model(path, model, cfg, weights_source="test", n_cnn=None, training=training)
    # the same with an AF detector (as runs now train one per endpoint; no shockable one: no VT or VF windows)
    detector, _ = fit_classifier(X, (y == cfg.class_names.index("afib")).astype(np.int64), cfg.classifier,
                                 subjects=np.array(subjects), weight_classes=y)
    with_detector = path.with_name("with-detector.skops")
    save_model(with_detector, model, cfg, weights_source="test", n_cnn=None, training=training,
               detectors={"af": detector})
    return {"pooled": path, "detector": with_detector}


@pytest.mark.parametrize("how", ["pooled", "detector"])
def test_predict_writes_each_endpoint_s_episodes_and_burden(how, af_model, physionet, tmp_path, capsys):
    """endpoints.csv: the episodes of each endpoint of the model's config (shockable, af) by its pooled vote;
    records.csv: its burden, the share of the scored windows. On a record of its training data (mitdb 201: AF in
    about a third of it) the AF burden follows the annotations, and the episodes' time is the burden's share."""
    import csv

    from ecgpipe.config import load_config
    from ecgpipe.records import read_record

    for ext in ("hea", "dat"):
        shutil.copy(physionet / "mitdb" / f"201.{ext}", tmp_path)
    code, out, err = _run(capsys, "predict", "--model", str(af_model[how]), str(tmp_path / "201"), "--out",
                          str(tmp_path / "pred"), "--endpoint-smooth", "7", "--endpoint-smooth", "shockable=3")
    assert code == 0, err
    assert "endpoint episodes (shockable, af; their burden and episode count per record in records.csv)" in out
    with open(tmp_path / "pred" / "endpoints.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["record", "endpoint", "start_s", "end_s", "duration_s"]
    with open(tmp_path / "pred" / "records.csv") as fh:
        record = next(csv.DictReader(fh))
    scored = sum(int(v) for k, v in record.items() if k.startswith("windows_"))
    assert scored == 902 and float(record["scored_s"]) == 1804.0  # 2-s windows on 30 min 5.6 s
    rec = read_record(physionet / "mitdb", "mitdb", "201", load_config("paper4-best").database("mitdb"))
    annotated_af = sum(ep.end - ep.start for ep in rec.episodes if ep.label in ("(AFIB", "(AFL")) / len(rec.signal)
    burden = {}
    for endpoint in ("shockable", "af"):
        burden[endpoint] = float(record[f"burden_{endpoint}"])
        episodes = [r for r in rows if r["endpoint"] == endpoint]
        seconds = sum(float(r["duration_s"]) for r in episodes)
        assert seconds == pytest.approx(burden[endpoint] * scored * 2.0, abs=2.0)
        assert int(record[f"episodes_{endpoint}"]) == len(episodes)
        assert all(float(a["end_s"]) < float(b["start_s"]) for a, b in zip(episodes, episodes[1:]))  # runs apart
    assert 0.15 < annotated_af < 0.6 and abs(burden["af"] - annotated_af) < 0.1, (burden, annotated_af)
    assert burden["shockable"] < 0.05  # no VT or VF in its training windows, none annotated in 201


def test_predict_scores_a_multi_segment_record_around_its_gap_and_a_folder_of_segments_is_one_record(af_model, physionet, tmp_path, capsys):
    """A record with a gap (MIMIC's multi-segment layout; test_multi_segment builds it on real mitdb signal files:
    120 s of sinus rhythm, 10 s of gap, 120 s of AF) failed in predict with the training data's NaN policy and a hint
    to edit a config predict does not take. Now the windows touching the gap are left unscored and counted."""
    import csv

    from test_multi_segment import make_multi_segment

    folder = tmp_path / "mimicish"
    make_multi_segment(folder, physionet)
    code, out, err = _run(capsys, "predict", "--model", str(af_model["detector"]), str(folder), "--out", str(tmp_path / "p"))
    assert code == 0, err
    with open(tmp_path / "p" / "records.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["record"] for r in rows] == [str(folder / "pilot")]  # the record, not its segments' headers
    gap, *read_anyway = rows[0]["note"].split("; /")
    assert gap == "7 of 125 windows touch missing samples (NaN, e.g. gaps between segments): not scored"
    # its segments name parts of longer mitdb signal files: read as their headers say, and said so (and on stderr)
    assert len(read_anyway) == 2 and all("bytes more than the header's" in w for w in read_anyway)
    assert err.count("ecgpipe: warning: ") == 2 and "pilot_0001: signal file" in err
    assert float(rows[0]["scored_s"]) == 236.0
    with open(tmp_path / "p" / "episodes.csv") as fh:
        episodes = [(float(r["start_s"]), float(r["end_s"]), r["class"]) for r in csv.DictReader(fh)]
    assert all(end <= 120 or start >= 130 for start, end, _ in episodes)  # nothing called inside the gap
    assert {c for s, e, c in episodes if e <= 120} == {"normal"} and {c for s, e, c in episodes if s >= 130} == {"afib"}


def test_a_stride_of_no_whole_sample_count_still_gives_episodes_that_meet(af_model, physionet, tmp_path, capsys):
    """--stride-s 0.333 cuts every 83 samples at 250 Hz (0.332 s): episodes end where the next begins."""
    import csv

    for ext in ("hea", "dat"):
        shutil.copy(physionet / "mitdb" / f"201.{ext}", tmp_path)
    code, _, err = _run(capsys, "predict", "--model", str(af_model["pooled"]), str(tmp_path / "201"), "--out", str(tmp_path / "p"),
                        "--stride-s", "0.333")
    assert code == 0, err
    with open(tmp_path / "p" / "episodes.csv") as fh:
        episodes = list(csv.DictReader(fh))
    assert len(episodes) > 1
    assert all(a["end_s"] == b["start_s"] for a, b in zip(episodes, episodes[1:]))
    code, _, err = _run(capsys, "predict", "--model", str(af_model["pooled"]), str(tmp_path / "201"), "--out", str(tmp_path / "q"),
                        "--stride-s", "0.001")
    assert code == 1 and "stride_s 0.001 s is less than one sample at 250 Hz" in err and "Traceback" not in err


def test_an_endpoint_width_for_an_endpoint_the_model_lacks_is_refused(af_model, tmp_path, capsys):
    code, _, err = _run(capsys, "predict", "--model", str(af_model["pooled"]), "--endpoint-smooth", "afib=61", str(tmp_path / "201"),
                        "--out", str(tmp_path / "pred"))
    assert code == 2 and "--endpoint-smooth: the model has no endpoint afib (its endpoints: shockable, af)" in err
    assert not (tmp_path / "pred").exists()  # refused before anything is written
    code, _, err = _run(capsys, "predict", "--model", str(af_model["pooled"]), "--endpoint-smooth", "af=60", str(tmp_path / "201"))
    assert code == 2 and "argument --endpoint-smooth: must be an odd number of windows" in err


def test_record_path_gives_one_spelling_per_record(tmp_path):
    from ecgpipe.predict import record_path

    assert record_path("100") == record_path("./100") == record_path("100.hea") == "100"
    # a record named by its stem (a folder's listing, a RECORDS line) whose only file is EDF is read from that file
    (tmp_path / "a.EDF").write_bytes(b"")
    (tmp_path / "b.edf").write_bytes(b"")
    (tmp_path / "c.hea").write_text("c 1 250 10\n")
    (tmp_path / "c.edf").write_bytes(b"")
    assert record_path(str(tmp_path / "a")) == str(tmp_path / "a.EDF")
    assert record_path(str(tmp_path / "b")) == record_path(str(tmp_path / "b.edf")) == str(tmp_path / "b.edf")
    assert record_path(str(tmp_path / "c")) == str(tmp_path / "c")  # a WFDB header wins, as in a run
    (tmp_path / "d.Edf").write_bytes(b"")  # any case of the suffix, as a folder's listing finds it
    assert record_path(str(tmp_path / "d")) == str(tmp_path / "d.Edf")
    assert record_path("dir//100") == record_path("dir/./100.dat") == "dir/100"
    assert record_path("/data//mitdb/100.atr") == "/data/mitdb/100"
    assert record_path("link/../100") == "link/../100"  # '..' is not resolved by hand: it may leave a linked folder


def test_predict_tables_hold_each_record_s_rows_as_soon_as_it_is_done(tmp_path):
    """300 000 records stopped at the last one keep every row before it: rows are appended and flushed per record."""
    import csv

    from ecgpipe.predict import Episode, RecordPrediction
    from ecgpipe.predict_tables import PredictionTables

    starts = np.arange(6) * 2.0
    pred = RecordPrediction("d/100", 360.0, "MLII", 12.0, starts, np.array([0, 0, 1, 1, 1, -1]), 2.0,
                            [Episode(0.0, 4.0, "normal", "(N"), Episode(4.0, 12.0, "afib", "(AFIB")],
                            class_names=["normal", "afib"], endpoint_calls={"af": np.array([0, 0, 1, 1, 1, -1])})
    tables = PredictionTables(tmp_path, ["normal", "afib"], ["af"])
    tables.add(pred)
    tables.add_failed("d/bad", "d/bad: header file not found")

    def rows(name):  # read while the tables are still open, as after a crash
        with open(tmp_path / f"{name}.csv") as fh:
            return list(csv.DictReader(fh))

    records = rows("records")
    assert [r["record"] for r in records] == ["d/100", "d/bad"] and records[1]["error"].endswith("not found")
    assert records[0]["windows_afib"] == "3" and records[0]["burden_af"] == "0.6000" and records[0]["episodes_af"] == "1"
    assert [(r["class"], r["duration_s"]) for r in rows("episodes")] == [("normal", "4.000"), ("afib", "8.000")]
    assert [(r["start_s"], r["end_s"]) for r in rows("endpoints")] == [("4.000", "10.000")]
    tables.close()
    # no record done at all: the files still have their columns
    (tmp_path / "none").mkdir()
    PredictionTables(tmp_path / "none", ["normal"], []).close()
    assert (tmp_path / "none" / "records.csv").read_text().startswith("record,lead,duration_s,scored_s,class,windows_normal,note")


def test_output_names_are_unique_and_found_in_linear_time():
    from ecgpipe.predict_outputs import output_names

    paths = ["a/100", "b/100", "a/101", "c/x/101", "d/x/101", "e/x/101", "a/102.edf"]
    names = output_names(paths)
    assert names["a/100"] == "a/100" and names["b/100"] == "b/100"  # a repeated name: its folder's too
    # the folder repeats as well: numbered (the last keeps the bare name, as before)
    assert [names[p] for p in paths[2:6]] == ["a/101", "1-x/101", "2-x/101", "x/101"]
    assert names["a/102.edf"] == "102" and len(set(names.values())) == len(paths)
    # 200 000 records, half of them twice: counted once, not once per record (that took minutes at 60 000)
    many = [f"{d}/{i}" for d in ("p", "q") for i in range(100_000)]
    assert len(set(output_names(many).values())) == len(many)


# ------------------------------------------------------------------------------------------- corrupt input files
def test_a_config_that_is_not_utf8_is_one_line_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "mine.toml"
    bad.write_bytes(b"name = 'caf\xe9'\n[databases.mitdb]\n")
    code, _, err = _run(capsys, "config", str(bad))
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"ecgpipe: {bad}: not UTF-8 text") and "UnicodeDecodeError" not in err


def test_status_with_a_corrupt_config_json_names_the_file(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"config": {"name": "paper4", ')  # cut short, as by a full disk
    code, _, err = _run(capsys, "status", "--out", str(out))
    assert code == 2 and "Traceback" not in err
    assert f"{out}/config.json: the run's saved configuration is unreadable" in err and "give --config" in err
    (out / "config.json").write_text("[1, 2]")  # JSON, but not what a run writes
    code, _, err = _run(capsys, "status", "--out", str(out))
    assert code == 2 and f"{out}/config.json: not a run's saved configuration (no 'config' table or no 'data_dir')" in err


def test_status_with_a_corrupt_run_json_names_the_file(tmp_path, physionet, capsys):
    data = tmp_path / "data"
    copy_records(physionet, data, "mitdb", ["100"])
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_bytes(b'{"status": "completed", "failed": [\x00\xff')
    # --config and --data-dir given: the corrupt config.json beside it is not even needed
    (out / "config.json").write_text("{")
    code, _, err = _run(capsys, "status", "--out", str(out), "--config", "paper4", "--data-dir", str(data))
    assert code == 2 and "Traceback" not in err
    assert f"{out}/run.json: the last run's record is not valid JSON" in err and "delete it" in err
    # a run that wrote "running" and then neither finished nor holds the folder (killed, its lock deleted since)
    (out / "run.json").write_text('{"status": "running"}')
    mitdb_only = tmp_path / "mitdb.toml"
    mitdb_only.write_text('extends = "paper4"\nunset = ["databases.vfdb"]\n[cv]\nprotocols = ["stratified_10fold"]\n')
    code, printed, err = _run(capsys, "status", "--out", str(out), "--config", str(mitdb_only), "--data-dir", str(data))
    assert code == 0, err
    assert f"{out}: the last run did not finish (run.json says running, and no run holds the folder)" in printed


# ------------------------------------------------------------------------------------------------------ data fetch
@pytest.fixture
def mirror(tmp_path, physionet):
    """A local mirror holding three real mitdb records and the checksums of their files."""
    root = tmp_path / "mirror"
    copy_records(physionet, root, "mitdb", ["100", "101", "102"])
    upstream = (physionet / "mitdb" / "SHA256SUMS.upstream.txt").read_text().splitlines()
    mine = [line for line in upstream if line.split()[-1].split(".")[0] in ("100", "101", "102")]
    assert len(mine) >= 9  # .hea .dat .atr of each
    (root / "mitdb" / "SHA256SUMS.txt").write_text("\n".join(mine) + "\n")
    return root


def _records(folder) -> list[str]:
    return (folder / "mitdb" / "RECORDS").read_text().split()


def test_fetching_some_records_into_a_database_folder_adds_them_to_its_list(mirror, tmp_path, capsys):
    full = tmp_path / "full"
    assert _run(capsys, "data", "fetch", "mitdb", "--from", str(mirror), "--to", str(full))[0] == 0
    assert _records(full) == ["100", "101", "102"]
    code, out, err = _run(capsys, "data", "fetch", "mitdb", "--from", str(mirror), "--to", str(full), "--records", "101")
    assert code == 0, err
    assert _records(full) == ["100", "101", "102"]  # used to be ["101"]: later runs silently read one record
    assert "3 files verified" in out  # 101's .hea .dat .atr

    some = tmp_path / "some"
    for records in (["102"], ["100", "102"], ["101", "100"]):
        code, _, err = _run(capsys, "data", "fetch", "mitdb", "--from", str(mirror), "--to", str(some), "--records", *records)
        assert code == 0, err
    assert _records(some) == ["102", "100", "101"]  # first fetched first, each once
    assert sorted(p.name for p in (some / "mitdb").glob("*.dat")) == ["100.dat", "101.dat", "102.dat"]


def test_fetching_into_a_hand_made_records_list_keeps_its_comments_and_reads_it_as_runs_do(mirror, tmp_path, capsys):
    """RECORDS was read with str.split(): a comment line became three 'records' written back into the list."""
    mine = tmp_path / "mine" / "mitdb"
    mine.mkdir(parents=True)
    (mine / "RECORDS").write_text("# my pilot records\n100.hea\n")  # a comment and a name with its file's suffix
    code, _, err = _run(capsys, "data", "fetch", "mitdb", "--from", str(mirror), "--to", str(mine.parent), "--records", "100", "102")
    assert code == 0, err
    assert (mine / "RECORDS").read_text() == "# my pilot records\n100.hea\n102\n"  # 100 is listed already; nothing dropped
    from ecgpipe.records import list_records
    assert list_records(mine) == ["100", "102"]
    (mirror / "mitdb" / "RECORDS").write_text("# the mirror's comment\n" + (mirror / "mitdb" / "RECORDS").read_text())
    code, _, err = _run(capsys, "data", "fetch", "mitdb", "--from", str(mirror), "--to", str(tmp_path / "x"), "--records", "101")
    assert code == 0 and "listed in no RECORDS" not in err, err
    assert _records(tmp_path / "x") == ["101"]


def test_fetching_a_folder_onto_itself_copies_nothing_and_verifies_it(mirror, capsys):
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (mirror / "mitdb").iterdir()}
    for extra in ([], ["--records", "100"]):
        code, out, err = _run(capsys, "data", "fetch", "mitdb", "--from", str(mirror), "--to", str(mirror) + "/.", *extra)
        assert code == 0 and "Traceback" not in err and "SameFileError" not in err, err
        assert "nothing copied, verified in place" in out
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (mirror / "mitdb").iterdir()} == before
    # a damaged file is still found where it lies
    dat = mirror / "mitdb" / "101.dat"
    dat.write_bytes(dat.read_bytes()[:-10])
    code, _, err = _run(capsys, "data", "fetch", "mitdb", "--from", str(mirror), "--to", str(mirror))
    assert code == 1 and "101.dat: SHA-256 mismatch" in err and "removed" not in err and dat.is_file()  # never a mirror's


def test_fetching_removes_a_copied_file_that_fails_its_checksum_and_refuses_unknown_records(mirror, tmp_path, capsys):
    dat = mirror / "mitdb" / "101.dat"
    dat.write_bytes(dat.read_bytes()[:-10])  # the mirror itself is damaged
    code, _, err = _run(capsys, "data", "fetch", "mitdb", "--from", str(mirror), "--to", str(tmp_path / "got"))
    assert code == 1 and "101.dat: SHA-256 mismatch (altered or truncated); removed" in err
    assert not (tmp_path / "got" / "mitdb" / "101.dat").exists() and (tmp_path / "got" / "mitdb" / "100.dat").is_file()
    assert dat.is_file()  # the mirror's copy is left where it is
    code, out, err = _run(capsys, "data", "fetch", "mitdb", "--from", str(mirror), "--to", str(tmp_path / "none"),
                          "--records", "100", "999")
    assert code == 1 and "--records 999: listed in no RECORDS of mitdb" in err and not (tmp_path / "none").exists()


def test_fetching_some_records_of_a_csv_labelled_dataset_brings_its_labels(physionet, tmp_path, capsys):
    """--records on CinC 2017 copies the records asked for and the files of no record: the labels CSV a run needs."""
    code, out, err = _run(capsys, "data", "fetch", "cinc2017", "--from", str(physionet), "--to", str(tmp_path),
                          "--records", "A00002", "A00004")
    assert code == 0, err
    got = sorted(p.name for p in (tmp_path / "cinc2017").iterdir())
    assert got == ["A00002.hea", "A00002.mat", "A00004.hea", "A00004.mat", "MANIFEST.md", "RECORDS", "REFERENCE-v3.csv", "SHA256SUMS"]
    assert (tmp_path / "cinc2017" / "RECORDS").read_text().split() == ["A00002", "A00004"]


# --------------------------------------------------------------------------------------------- numbers in range
@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_workers_below_one_is_refused_before_anything_runs(value, tmp_path, capsys):
    code, _, err = _run(capsys, "run", "--workers", value, "--out", str(tmp_path / "out"))
    assert code == 2 and "argument --workers" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_workers_given_is_passed_on():
    from ecgpipe.cli import _overrides, build_parser

    args = build_parser().parse_args(["run", "--workers", "1", "--out", "x"])
    assert _overrides(args) == {"run": {"n_workers": 1}}


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_records_below_one_is_refused(value, tmp_path, capsys):
    code, _, err = _run(capsys, "evaluate", "--model", str(tmp_path / "m.skops"), "--config", "cinc2017",
                        "--out", str(tmp_path / "out"), "--max-records", value)
    assert code == 2 and "argument --max-records: must be at least 1" in err and "Traceback" not in err


@pytest.mark.parametrize(("value", "problem"), [("4", "must be an odd number of windows"), ("0", "must be at least 1"),
                                                ("-3", "must be at least 1")])
def test_a_smoothing_width_without_a_centre_is_refused(value, problem, tmp_path, capsys):
    code, _, err = _run(capsys, "predict", "--model", str(tmp_path / "m.skops"), "--smooth", value, str(tmp_path / "100"))
    assert code == 2 and f"argument --smooth: {problem}" in err and "Traceback" not in err


def test_evaluate_model_refuses_a_sample_size_below_one():
    from ecgpipe.errors import EcgpipeError
    from ecgpipe.evaluate import evaluate_model

    with pytest.raises(EcgpipeError, match="max_records .* at least 1, got -1"):
        evaluate_model(None, None, None, {}, max_records=-1)  # checked before anything is read


def test_the_change_penalty_keeps_endpoint_episodes_whole(af_model, physionet, tmp_path, capsys):
    """On mitdb 201 (AF in a few long episodes), calling AF from the detector's window scores with a change penalty
    gives fewer, longer episodes than the scores' sign alone (3 against 5), at about the same burden; bad penalties
    are refused."""
    import csv

    for ext in ("hea", "dat"):
        shutil.copy(physionet / "mitdb" / f"201.{ext}", tmp_path)
    found = {}
    for penalty in ("0", "4"):
        code, _, err = _run(capsys, "predict", "--model", str(af_model["detector"]), str(tmp_path / "201"), "--out",
                            str(tmp_path / penalty), "--endpoint-smooth", "1", "--endpoint-penalty", f"af={penalty}")
        assert code == 0, err
        with open(tmp_path / penalty / "endpoints.csv") as fh:
            episodes = [r for r in csv.DictReader(fh) if r["endpoint"] == "af"]
        with open(tmp_path / penalty / "records.csv") as fh:
            found[penalty] = len(episodes), float(next(csv.DictReader(fh))["burden_af"])
    (plain, plain_burden), (segmented, segmented_burden) = found["0"], found["4"]
    assert segmented < plain, found
    assert abs(segmented_burden - plain_burden) < 0.05, found
    for bad, message in (("af=-1", "must be a finite number >= 0"), ("x", "must be a finite number >= 0"),
                         ("1" + "0" * 400, "must be a finite number >= 0"), ("nan", "must be a finite number >= 0"),
                         ("afib=2", "--endpoint-penalty: the model has no endpoint afib")):
        code, _, err = _run(capsys, "predict", "--model", str(af_model["detector"]), "--endpoint-penalty", bad,
                            str(tmp_path / "201"), "--out", str(tmp_path / "bad"))
        assert code == 2 and message in err, err
    assert not (tmp_path / "bad").exists()


def test_evaluate_scores_endpoints_over_whole_recordings_as_predict_calls_them(af_model, physionet, tmp_path, capsys):
    """``ecgpipe evaluate`` on real rhythm-annotated records (mitdb 201 and 203, PhysioNet's files): besides the
    per-window classes, each endpoint both configs declare (af) is called as predict calls it and scored over whole
    recordings: windows, annotated runs detected, false alarms per hour; a change penalty never adds called runs."""
    import json

    dataset = tmp_path / "mitdb_af.toml"
    dataset.write_text('name = "mitdb-af"\n[databases.mitdb]\nlead = ["MLII"]\nrecords = ["201", "203"]\n'
                       '[classes]\nnormal = ["(N"]\nafib = ["(AFIB", "(AFL"]\n[segments]\nexclude_labels = ["(NOISE"]\n'
                       '[endpoints.af]\nclasses = ["afib"]\n')
    found = {}
    for penalty in ("0", "4"):
        code, out, err = _run(capsys, "evaluate", "--model", str(af_model["detector"]), "--config", str(dataset),
                              "--data-dir", str(physionet), "--out", str(tmp_path / penalty), "--endpoint-penalty", penalty)
        assert code == 0, err
        assert "endpoint af over whole recordings" in out
        found[penalty] = json.loads((tmp_path / penalty / "evaluation.json").read_text())["recordings"]
    af = found["4"]["af"]
    assert set(found["4"]) == {"af"}  # shockable: the dataset declares no such endpoint
    assert af["detector"] and af["width"] == 15 and af["penalty"] == 4.0
    assert af["positive_windows"] > 300 and af["negative_windows"] > 300  # 203 is mostly AF, 201 mostly sinus
    assert 0.5 < af["sensitivity"] <= 1 and 0 < af["specificity"] <= 1
    assert af["runs"] >= 3 and 1 <= af["runs_detected"] <= af["runs"] and af["long_runs_detected"] <= af["long_runs"]
    assert af["hours"] == pytest.approx(1.0, abs=0.02)  # two 30-min records
    assert af["false_alarms"] <= af["called_runs"] <= found["0"]["af"]["called_runs"]
    assert af["positive_windows"] == found["0"]["af"]["positive_windows"]  # the reference does not move with the decision
    md = (tmp_path / "4" / "evaluation.md").read_text()
    assert "## Endpoints over whole recordings, as `ecgpipe predict` calls them" in md
    assert "detector over 15 windows, change penalty 4" in md
    assert af["model_classes"] == af["dataset_classes"] == ["afib"] and af["note"] == ""
    # a mapping under which the model's af is not the dataset's: scored all the same, and said so
    code, _, err = _run(capsys, "evaluate", "--model", str(af_model["detector"]), "--config", str(dataset), "--data-dir",
                        str(physionet), "--out", str(tmp_path / "swapped"), "--map", "afib=normal", "normal=afib")
    assert code == 0 and "the model's af (afib) maps to normal, not to the dataset's af (afib)" in err
    assert "**Note: the model's af (afib) maps to normal" in (tmp_path / "swapped" / "evaluation.md").read_text()
    code, _, err = _run(capsys, "evaluate", "--model", str(af_model["detector"]), "--config", str(dataset), "--data-dir",
                        str(physionet), "--out", str(tmp_path / "bad"), "--endpoint-smooth", "afib=5")
    assert code == 2 and "--endpoint-smooth: the model has no endpoint afib" in err


def test_evaluate_bootstraps_over_the_patients_the_dataset_config_names(af_model, physionet, tmp_path, capsys):
    """Real CinC 2017 records with a labels CSV naming two patients (``subject = "labels_csv"``): the endpoints'
    intervals resample the two patients, not the six records, and the report says which; without a subject rule
    each record is its own subject. A record the rule gives no subject fails by name, the others are scored."""
    import json

    folder = tmp_path / "data" / "cinc"
    folder.mkdir(parents=True)
    names = ["A00002", "A00004", "A00005", "A00006", "A00007", "A00009"]  # N A A N N A
    for name in names:
        for ext in ("hea", "mat"):
            shutil.copy(physionet / "cinc2017" / f"{name}.{ext}", folder / f"{name}.{ext}")
    labels = dict(line.split(",") for line in (physionet / "cinc2017" / "REFERENCE-v3.csv").read_text().split())
    (folder / "REFERENCE.csv").write_text("record,label,subject\n" + "".join(
        f"{n},{labels[n]},{'p1' if i < 3 else 'p2'}\n" for i, n in enumerate(names)))
    text = ('name = "cinc-patients"\n[databases.cinc]\nfs = 300\nlabels_csv = "REFERENCE.csv"\n{rule}'
            '[classes]\nnormal = ["N"]\nafib = ["A"]\n[endpoints.af]\nclasses = ["afib"]\n')
    found = {}
    for rule in ('subject = "labels_csv"\n', "", 'subject_pattern = "A0000[2-7]"\n'):
        dataset = tmp_path / "dataset.toml"
        dataset.write_text(text.format(rule=rule))
        # the CSV names patients that a rule other than labels_csv leaves unused: said (a leak otherwise silent)
        unused = pytest.warns(UserWarning, match="names each record's subject") if not rule else contextlib.nullcontext()
        with unused:
            code, out, err = _run(capsys, "evaluate", "--model", str(af_model["detector"]), "--config", str(dataset),
                                  "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / str(len(found))))
        assert code == (1 if "subject_pattern" in rule else 0), err  # a record failed: exit 1, as predict's
        found[rule] = (json.loads((tmp_path / str(len(found)) / "evaluation.json").read_text()),
                       (tmp_path / str(len(found)) / "evaluation.md").read_text())
    doc, md = found['subject = "labels_csv"\n']
    assert doc["results"]["records"]["n"] == 6 and doc["results"]["records"]["n_subjects"] == 2
    assert doc["results"]["records"]["subject_word"] == "patient" and "95 % bootstrap over 2 patients" in md
    doc, md = found[""]
    assert doc["results"]["records"]["n_subjects"] == 6 and "95 % bootstrap over 6 records" in md
    doc, _ = found['subject_pattern = "A0000[2-7]"\n']  # A00009 has no subject under this rule: it alone fails
    assert doc["accounting"]["failed"] == 1 and doc["results"]["records"]["n"] == 5
    assert doc["results"]["records"]["n_subjects"] == 5


def test_evaluate_flags_records_of_the_patients_the_model_was_trained_on(af_model, physionet, tmp_path, capsys):
    """A record of a patient the model was trained on (its training subjects: mitdb:201; here 203 declared one patient
    with 201) is no test on a new patient: counted and said. (This model lists no training recordings, so 201 counts
    as its patient's record too.)"""
    import json

    dataset = tmp_path / "mitdb.toml"
    dataset.write_text('name = "mitdb-af"\n[databases.mitdb]\nlead = ["MLII"]\nrecords = ["201", "203"]\n'
                       'same_subject = { "203" = "201" }\n[classes]\nnormal = ["(N"]\nafib = ["(AFIB"]\n'
                       '[endpoints.af]\nclasses = ["afib"]\ngoal_sensitivity = 0.5\n')
    code, _, err = _run(capsys, "evaluate", "--model", str(af_model["pooled"]), "--config", str(dataset),
                        "--data-dir", str(physionet), "--out", str(tmp_path / "ev"))
    accounting = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["accounting"]
    assert code == 0 and (accounting["training_records"], accounting["training_patients"]) == (0, 2)
    warning = ("2 other scored record(s) are of patients the model was trained on (same subject id: same database, "
               "same subject rule): this is not an independent test")
    assert f"ecgpipe: warning: {warning}" in err
    report = (tmp_path / "ev" / "evaluation.md").read_text()
    assert f"**Warning: {warning}.**" in report
    assert "sensitivity ≥ 0.50 (no verdict: the model's own patients are among these)" in report  # no goal judged
    assert "new_patients" not in json.loads((tmp_path / "ev" / "evaluation.json").read_text())["recordings"]["af"]  # none
    dataset.write_text(dataset.read_text().replace('same_subject = { "203" = "201" }\n', ""))  # 203: a new patient
    code, out, _ = _run(capsys, "evaluate", "--model", str(af_model["pooled"]), "--config", str(dataset), "--data-dir",
                        str(physionet), "--out", str(tmp_path / "ev2"))
    assert code == 0 and "endpoint af over whole recordings, new patients only (0.5 h): " in out
    doc = json.loads((tmp_path / "ev2" / "evaluation.json").read_text())
    assert doc["accounting"]["training_patients"] == 1
    # the external test is what is left: the new patient's windows scored apart, beside every record's
    assert set(doc["results"]) == {"windows", "windows_new_patients"}
    # and the AF endpoint over whole recordings: every recording's, and the new patient's alone (203, 30 min)
    whole, new = doc["recordings"]["af"], doc["recordings"]["af"]["new_patients"]
    assert new["hours"] == pytest.approx(0.5, abs=0.01) and whole["hours"] == pytest.approx(1.0, abs=0.02)
    assert new["ci_subjects"] == 1 and new["positive_windows"] + new["negative_windows"] < whole["positive_windows"] + whole["negative_windows"]
    rows = {r["record"]: r for r in doc["records"]}
    assert doc["results"]["windows_new_patients"]["n"] == rows["mitdb/203"]["windows"] < doc["results"]["windows"]["n"]
    assert doc["results"]["windows_new_patients"]["n_subjects"] == 1
    report = (tmp_path / "ev2" / "evaluation.md").read_text()
    assert "## Per window, new patients only" in report
    assert "af (model: afib; dataset: afib), new patients only |" in report
    assert "The rows without 'new patients only' include the records of the model's own patients" in report
    new_patients = report[report.index("## Per window, new patients only"):]
    assert "sensitivity ≥ 0.50 (" in new_patients and "no verdict: the model's own" not in new_patients.split("## ")[1]
    # windows whose centre is in a rhythm of no configured class are counted, not dropped in silence (201: trigeminy...)
    assert doc["accounting"]["windows_without_reference"] > 0


def test_evaluate_takes_the_missing_samples_policy_of_the_dataset_it_scores(af_model, physionet, tmp_path, capsys):
    """The multi-segment record's gap (NaN) fails the record under the default policy, with the dataset config's key
    to change; the dataset config's nan_policy = "drop" scores it (it was the training config's, which evaluate's
    user cannot change)."""
    import json

    from test_multi_segment import make_multi_segment

    make_multi_segment(tmp_path / "data" / "mimicish", physionet)
    (tmp_path / "data" / "mimicish" / "RECORDS").write_text("pilot\n")
    text = ('name = "gaps"\n[databases.mimicish]\nlead = ["MLII"]\nfs = 360\n[classes]\nnormal = ["(N"]\n'
            'afib = ["(AFIB"]\n')
    found = {}
    for policy in ("error", "drop"):
        dataset = tmp_path / f"{policy}.toml"
        dataset.write_text(text + f'[segments]\nnan_policy = "{policy}"\n')
        code, out, err = _run(capsys, "evaluate", "--model", str(af_model["detector"]), "--config", str(dataset),
                              "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / policy))
        found[policy] = (code, err)
    code, err = found["error"]  # every record failed: the error says why (it printed the counts alone)
    assert code == 2 and "could be scored (records 1, failed 1); failed: 1 x <record>: 3600 NaN samples" in err, err
    assert 'NaN samples in lead MLII (first at sample 43200) (samples in the gaps between its segments have no signal: ' \
           'nan_policy = "drop" in [segments]' in err and f"(e.g. {tmp_path / 'data' / 'mimicish' / 'pilot'})" in err
    code, err = found["drop"]
    doc = json.loads((tmp_path / "drop" / "evaluation.json").read_text())
    assert code == 0 and doc["accounting"]["scored"] == 1 and doc["accounting"]["failed"] == 0, err


def test_compare_with_a_reference_of_no_configured_rhythm_is_reported_not_a_crash(af_model, physionet, tmp_path, capsys):
    """A reference annotation that holds only rhythms no class covers (here bigeminy): no second can be compared; the
    record is still predicted and every output written (the None agreement once broke the console line)."""
    import json

    import wfdb

    for ext in ("hea", "dat"):
        shutil.copy(physionet / "mitdb" / f"201.{ext}", tmp_path)
    wfdb.wrann("201", "atr", np.array([10]), symbol=["+"], aux_note=["(B"], write_dir=str(tmp_path), fs=360)
    code, out, err = _run(capsys, "predict", "--model", str(af_model["pooled"]), str(tmp_path / "201"), "--out",
                          str(tmp_path / "pred"), "--compare", "atr")
    assert code == 0, err
    assert "no second to compare" in out
    agreement = json.loads((tmp_path / "pred" / "agreement.json").read_text())
    assert agreement["201"]["per_second_agreement"] is None
    assert (tmp_path / "pred" / "endpoints.csv").is_file() and (tmp_path / "pred" / "records.csv").is_file()


def test_the_model_carries_its_endpoint_decisions(af_model, physionet, tmp_path, capsys):
    """``[endpoints.af] decision_windows`` and ``change_penalty`` travel in the model: predict without options calls AF
    as the same options given on the command line do; the command line overrides the model."""
    from ecgpipe.model import load_model, save_model

    model = load_model(af_model["detector"])
    cfg = model.config
    own = cfg.endpoints["af"].model_copy(update={"decision_windows": 1, "change_penalty": 0.0})
    custom = tmp_path / "custom.skops"
    save_model(custom, model.classifier, cfg.model_copy(update={"endpoints": {**cfg.endpoints, "af": own}}),
               weights_source="test", n_cnn=None, training=model.training, detectors=model.detectors)
    for ext in ("hea", "dat"):
        shutil.copy(physionet / "mitdb" / f"201.{ext}", tmp_path)
    runs = {"model": ["--model", str(custom)],
            "options": ["--model", str(af_model["detector"]), "--endpoint-smooth", "af=1", "--endpoint-penalty", "af=0"],
            "default": ["--model", str(af_model["detector"])],
            "override": ["--model", str(custom), "--endpoint-smooth", "15", "--endpoint-penalty", "4"]}
    found = {}
    for name, args in runs.items():
        code, _, err = _run(capsys, "predict", *args, str(tmp_path / "201"), "--out", str(tmp_path / name))
        assert code == 0, err
        found[name] = (tmp_path / name / "endpoints.csv").read_text()
    assert found["model"] == found["options"] != found["default"] == found["override"]


def test_predict_takes_a_folder_for_its_records_and_lists_failed_ones_in_records_csv(rhythm_model, physionet, tmp_path, capsys):
    """A folder stands for its records (its RECORDS file, else every header in it); a record that cannot be read is
    named on stderr and has a row of its own in records.csv with its error, while the others are predicted."""
    import csv

    folder = copy_records(physionet, tmp_path, "vfdb", ["418", "419"])
    (folder / "RECORDS").unlink()
    (folder / "broken.hea").write_text("broken 1 250 1000\nbroken.dat 212 200 12 0 0 0 0 ECG\n")  # no broken.dat
    code, out, err = _run(capsys, "predict", "--model", str(rhythm_model), str(folder), "--out", str(tmp_path / "pred"))
    assert code == 1, err
    assert "broken" in err and "1 of 3 record(s) could not be predicted" in err and "Traceback" not in err
    with open(tmp_path / "pred" / "records.csv") as fh:
        rows = {os.path.basename(r["record"]): r for r in csv.DictReader(fh)}
    assert sorted(rows) == ["418", "419", "broken"]
    assert rows["418"]["error"] == "" and rows["418"]["class"] in ("normal", "afib", "vt", "vf")
    assert "broken" in rows["broken"]["error"] and rows["broken"]["class"] == ""
    assert (tmp_path / "pred" / "418.pred").is_file() and (tmp_path / "pred" / "419.pred").is_file()

    (folder / "RECORDS").write_text("419\n")  # a RECORDS file says which records the folder holds
    code, out, err = _run(capsys, "predict", "--model", str(rhythm_model), str(folder), "--out", str(tmp_path / "listed"))
    assert code == 0, err
    assert [r.split(",")[0] for r in (tmp_path / "listed" / "records.csv").read_text().splitlines()[1:]] == [str(folder / "419")]

    (tmp_path / "empty").mkdir()
    code, out, err = _run(capsys, "predict", "--model", str(rhythm_model), str(tmp_path / "empty"), "--out", str(tmp_path / "p2"))
    assert code == 2 and "empty: a folder without records" in err and not (tmp_path / "p2").exists()


def test_predict_never_writes_over_a_folder_s_own_files_and_predicts_each_record_once(rhythm_model, physionet, tmp_path, capsys,
                                                                                      monkeypatch):
    """--out given as the records' own folder, which holds a study's records.csv: refused before anything is written.
    A record named by its files (a shell's ``data/418*``) and by its folder is predicted once; records in a
    subfolder, which a folder does not stand for, are named in a warning. An earlier prediction's folder is written
    over, as a rerun expects (its model.json says so; one written before 0.8.0 too)."""
    folder = copy_records(physionet, tmp_path, "vfdb", ["418"])
    (folder / "RECORDS").unlink()
    copy_records(physionet, folder, "site1", [])  # a subfolder with a record of its own
    for f in (physionet / "vfdb").glob("419.*"):
        shutil.copy(f, folder / "site1" / f.name)
    shutil.copy(folder / "418.atr", folder / "418.qrs")  # another annotator's file: a shell's 418* names it too
    mine = "record,age,sex\n418,61,F\n"
    (folder / "records.csv").write_text(mine)
    code, out, err = _run(capsys, "predict", "--model", str(rhythm_model), str(folder), "--out", str(folder))
    assert code == 2 and f"{folder / 'records.csv'}: refusing to write over a file that ecgpipe predict did not write" in err
    assert (folder / "records.csv").read_text() == mine
    assert not (folder / "418.pred").exists() and not (folder / "model.json").exists()

    pred = tmp_path / "pred"
    warned = "vfdb: 1 subfolder(s) of it hold records (site1), which a folder does not stand for"
    monkeypatch.chdir(tmp_path)  # the folder given relative, its files absolute: one record all the same
    with pytest.warns(UserWarning, match=re.escape(warned)):
        code, out, err = _run(capsys, "predict", "--model", str(rhythm_model), str(folder / "418.hea"),
                              str(folder / "418.dat"), str(folder / "418.qrs"), "vfdb", "--out", str(pred))
    assert code == 0, err
    assert [r.split(",")[0] for r in (pred / "records.csv").read_text().splitlines()[1:]] == [str(folder / "418")]
    assert out.count("418: ") == 1
    (pred / "model.json").write_text(json.dumps({"model": "m.skops", "sha256": "ab", "signed": False}))  # before 0.8.0
    code, _, err = _run(capsys, "predict", "--model", str(rhythm_model), str(folder / "418"), "--out", str(pred))
    assert code == 0, err
    assert json.loads((pred / "model.json").read_text())["written_by"] == "ecgpipe predict"
    # a prediction (or an evaluation) already writing into --out: another is refused before it writes a thing, as each
    # would rewrite the tables without the other's rows
    import socket

    before = (pred / "records.csv").read_text()
    (pred / ".ecgpipe.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": "now"}))
    for command in (["predict", "--model", str(rhythm_model), str(folder / "418")],
                    ["evaluate", "--model", str(rhythm_model), "--config", "paper4", "--data-dir", str(physionet)]):
        code, _, err = _run(capsys, *command, "--out", str(pred))
        assert code == 2 and f"{pred}: another ecgpipe run holds this output folder (PID {os.getpid()}" in err, err
    assert (pred / "records.csv").read_text() == before and not (pred / "evaluation.json").exists()
    # the lock is taken by the functions the commands call: a Python caller of them is refused too
    from ecgpipe.evaluate import write_outputs
    from ecgpipe.lock import LockHeld
    from ecgpipe.model import load_model
    from ecgpipe.predict_many import PredictOptions, predict_records
    from ecgpipe.results import EvaluationResult

    with pytest.raises(LockHeld, match="another ecgpipe run holds this output folder"):
        predict_records(load_model(rhythm_model), [str(folder / "418")], {str(folder / "418"): "418"}, pred, PredictOptions())
    with pytest.raises(LockHeld, match="another ecgpipe run holds this output folder"):
        write_outputs(EvaluationResult.model_construct(records=[]), pred)
    assert (pred / "records.csv").read_text() == before and not (pred / "evaluation.json").exists()
    (pred / ".ecgpipe.lock").unlink()
    empty = tmp_path / "only-subfolders"
    (empty / "a").mkdir(parents=True)
    shutil.copy(folder / "418.hea", empty / "a" / "418.hea")
    code, _, err = _run(capsys, "predict", "--model", str(rhythm_model), str(empty), "--out", str(tmp_path / "p3"))
    assert code == 2 and "a folder without records" in err and "1 subfolder(s) of it hold records (a)" in err


def test_run_never_writes_into_a_folder_of_someone_else_s_files(physionet, tmp_path):
    """`ecgpipe run --out` given as a database folder (or `.` inside one) would replace the user's own config.json and
    report.md there: refused before anything is written. An empty or new folder and an earlier run's are fine."""
    from ecgpipe.config import load_config
    from ecgpipe.errors import PipelineError
    from ecgpipe.orchestration.preflight import check_out_folder, preflight

    folder = copy_records(physionet, tmp_path, "mitdb", ["100"])
    (folder / "config.json").write_text('{"recorder": "H3+"}\n')
    (folder / "report.md").write_text("my notes\n")
    before = sorted(p.name for p in folder.iterdir())
    # what `ecgpipe run` does first (run_pipeline); not through main() here: a run imports Prefect, whose console
    # handler would keep this test's captured stderr, closed once the test ends, for every later flow's logs
    with pytest.raises(PipelineError, match=re.escape(f"--out {folder}: holds config.json, report.md, which a run "
                                                      "would write over, and nothing of an earlier run")):
        preflight(load_config("paper4"), tmp_path, out_dir=str(folder))
    assert sorted(p.name for p in folder.iterdir()) == before and (folder / "report.md").read_text() == "my notes\n"
    check_out_folder(str(tmp_path / "new"))
    (tmp_path / "empty").mkdir()
    check_out_folder(str(tmp_path / "empty"))
    (tmp_path / "unrelated").mkdir()  # files a run never writes: a log made beforehand, a desktop's .DS_Store
    (tmp_path / "unrelated" / "run.log").write_text("started\n")
    (tmp_path / "unrelated" / ".DS_Store").write_bytes(b"\0")
    check_out_folder(str(tmp_path / "unrelated"))
    for left_by_a_run in ("run.json", "store.zarr", ".ecgpipe.lock", "inputs", "markers"):
        earlier = tmp_path / f"earlier-{left_by_a_run}"
        earlier.mkdir()
        (earlier / "report.md").write_text("a run's report\n")
        (earlier / left_by_a_run).touch()
        check_out_folder(str(earlier))
    (tmp_path / "killed").mkdir()  # a run stopped right after writing its configuration
    (tmp_path / "killed" / "config.json").write_text('{"config": {}, "data_dir": null}')
    check_out_folder(str(tmp_path / "killed"))
    (tmp_path / "killed-sooner" / "inputs").mkdir(parents=True)  # stopped between its first two writes
    (tmp_path / "killed-sooner" / "report.md").write_text("an earlier run's report\n")
    check_out_folder(str(tmp_path / "killed-sooner"))


@pytest.mark.parametrize("command", ["run", "status", "predict", "evaluate"])
def test_an_out_that_is_a_file_is_refused_before_anything_runs(command, rhythm_model, tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("hi\n")
    argv = {"run": ["run", "--config", "paper4", "--data-dir", str(tmp_path)],
            "status": ["status"],
            "predict": ["predict", "--model", str(rhythm_model), str(tmp_path / "100")],
            "evaluate": ["evaluate", "--model", str(rhythm_model), "--config", "paper4"]}[command]
    code, out, err = _run(capsys, *argv, "--out", str(target))
    assert code == 2 and f"--out {target}: a file, not a folder" in err and "Traceback" not in err
    below = target / "runs" / "one"  # a folder below a file cannot be made (a run failed on it, after its checks)
    code, out, err = _run(capsys, *argv, "--out", str(below))
    assert code == 2 and f"--out {below}: {target} is a file, not a folder" in err and "Traceback" not in err
    code, out, err = _run(capsys, *argv, "--out", f"{target}/")  # written with a trailing slash
    assert code == 2 and f"--out {target}/: a file, not a folder" in err
    assert target.read_text() == "hi\n" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize(("argv", "problem"), [
    (["run", "--config", "paper4", "--scheduler", "tcp://127.0.0.1:1", "--workers", "4"],
     "--workers 4 sizes the local Dask cluster ecgpipe starts; with --scheduler"),
    (["evaluate", "--model", "MODEL", "--config", "paper4", "--seed", "3"],
     "--seed seeds the sample --max-records draws; without --max-records every record is scored"),
])
def test_options_that_would_be_ignored_together_are_refused(argv, problem, rhythm_model, tmp_path, capsys):
    """Both were ignored in silence: --workers beside --scheduler, --seed without --max-records."""
    argv = [str(rhythm_model) if a == "MODEL" else a for a in argv]
    code, out, err = _run(capsys, *argv, "--data-dir", str(tmp_path), "--out", str(tmp_path / "out"))
    assert code == 2 and problem in err and not (tmp_path / "out").exists()


def test_an_extension_of_record_files_is_refused_naming_the_option(rhythm_model, physionet, tmp_path, capsys):
    """--extension dat for a record stored as .mat: refused as the extension of record files, not as a clash with a
    file that does not exist."""
    copy_records(physionet, tmp_path, "vfdb", ["418"])
    code, out, err = _run(capsys, "predict", "--model", str(rhythm_model), str(tmp_path / "vfdb" / "418"), "--out",
                          str(tmp_path / "pred"), "--extension", "dat")
    assert code == 2 and "--extension dat: the extension of a record's own files" in err
    assert not (tmp_path / "pred").exists()


def test_a_model_class_mapped_twice_is_refused_naming_both():
    from ecgpipe.evaluate import MappingError, class_mapping

    model, dataset = ["normal", "afib", "vt", "vf"], ["normal", "afib", "other"]
    with pytest.raises(MappingError, match=r"maps model class 'normal' twice \(normal=normal and normal=afib\)"):
        class_mapping(model, dataset, ["normal=normal", "normal=afib"])
    assert class_mapping(model, dataset, ["normal=normal", "normal=normal", "afib=afib"]) == {"normal": "normal", "afib": "afib"}
    assert class_mapping(model, dataset, None) == {"normal": "normal", "afib": "afib"}


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback_and_ecgpipe_warnings_are_one_line():
    """`ecgpipe config paper4 | head` ended in a BrokenPipeError traceback; a lock taken over printed as
    "/…/ecgpipe/lock.py:174: UserWarning: …"."""
    import subprocess
    import sys

    from ecgpipe import cli

    proc = subprocess.Popen([sys.executable, "-m", "ecgpipe.cli", "config", "paper4"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
    import ecgpipe.lock

    line = cli._one_line_warning(UserWarning("taking over the lock of x"), UserWarning, ecgpipe.lock.__file__, 174)
    assert line == "ecgpipe: warning: taking over the lock of x\n"
    assert "numpy/x.py:1: UserWarning" in cli._one_line_warning(
        UserWarning("w"), UserWarning, "/site-packages/numpy/x.py", 1)  # a library's warning says where it is from


def test_classes_with_few_examples_are_named_on_the_console():
    """A class of 4 segments from one patient (recall 0 under every protocol) got no word on the console."""
    from ecgpipe.cli_checks import few_examples

    report = {"class_counts": {"normal": 400, "afib": 400, "vt": 4, "vf": 30},
              "subjects_per_class": {"normal": 3, "afib": 2, "vt": 1, "vf": 1}, "subject_word": "patient"}
    assert few_examples(report) == "vt 4 segments from 1 patient; vf 30 segments from 1 patient"
    report["subjects_per_class"]["vf"] = 2
    report["class_counts"]["vt"] = 1
    assert few_examples({**report, "subject_word": "record"}) == "vt 1 segment from 1 record"


def test_the_earlier_report_note_is_for_runs_that_got_going(tmp_path, capsys):
    """A run refused before it started (another run holds the folder, a layer the backbone lacks) printed that the
    folder's report and model are an earlier run's: true, but noise. A run that wrote its run.json and then failed
    still says it."""
    from ecgpipe.cli_checks import run_json_time, with_earlier_report_note

    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    assert with_earlier_report_note(str(out), 2, run_json_time(str(out))) == 2  # no run.json: nothing started
    (out / "run.json").write_text('{"status": "completed"}')
    before = run_json_time(str(out))
    assert with_earlier_report_note(str(out), 2, before) == 2
    assert "earlier run" not in capsys.readouterr().err  # run.json untouched: this run never got going
    os.utime(out / "run.json", ns=(before + 10**9, before + 10**9))  # this run wrote it, then failed
    assert with_earlier_report_note(str(out), 1, before) == 1
    assert f"note: report.html/.md/.json in {out} are still those of an earlier run" in capsys.readouterr().err


def test_a_misdirected_path_gets_a_message_that_says_what_to_give(tmp_path, capsys):
    """A run folder given for its model, a preset's name written as a file, a status of a folder that is not there:
    each said only "not found" (or "holds no run; give --config")."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.skops").write_bytes(b"")
    code, _, err = _run(capsys, "predict", "--model", str(run), str(tmp_path / "100"))
    assert code == 2 and f"{run}: a folder, not a model file: give {run / 'model.skops'}" in err, err
    code, _, err = _run(capsys, "run", "--config", "paper4.toml", "--out", str(tmp_path / "out"))
    assert code == 2 and "the preset of that name is given as 'paper4', without .toml" in err, err
    code, _, err = _run(capsys, "status", "--out", str(tmp_path / "nowhere"))
    assert code == 2 and "does not exist: no run was written there (a typo in --out?)" in err, err
    code, _, err = _run(capsys, "status", "--out", str(run))
    assert code == 2 and "holds no run (no config.json); give --config" in err, err


def test_a_stop_before_the_flow_does_not_send_anyone_to_a_run_json_it_did_not_write(tmp_path):
    """Ctrl-C or SIGTERM during the checks of the corpus (or while the Prefect server starts) writes no run.json:
    the console says so, and says that a run.json there is an earlier run's, instead of pointing at it."""
    from ecgpipe.cli_checks import run_json_time, where_a_stop_is_told
    from ecgpipe.orchestration.interrupt import LockLost, RunInterrupted

    out = str(tmp_path)
    assert where_a_stop_is_told(out, run_json_time(out)) == "; this run wrote no run.json"
    (tmp_path / "run.json").write_text("{}")
    before = run_json_time(out)
    assert where_a_stop_is_told(out, before, RunInterrupted("x")) == f"; this run wrote no run.json ({out}/run.json is an earlier run's)"
    os.utime(tmp_path / "run.json", ns=(before + 10**9, before + 10**9))  # the flow began and wrote its counts
    assert where_a_stop_is_told(out, before) == f"; see {out}/run.json"
    assert where_a_stop_is_told(out, before, LockLost("taken over")) == ""  # the run.json there is the other run's
    assert where_a_stop_is_told("s3://bucket/run/", None) == "; see s3://bucket/run/run.json"  # not looked at


def test_ctrl_c_before_the_flow_is_told_by_the_command_without_a_run_json(tmp_path, physionet, monkeypatch, capsys):
    """`ecgpipe run` stopped before its flow began: exit 130, and the line says no run.json was written."""
    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(flows.ecg_pipeline, "run_pipeline", stopped)
    # --verbose, and the quiet console left alone: it would set Prefect's logging up again on this test's captured
    # stderr (closed after it) and leave its environment variable set for the tests after it
    monkeypatch.setattr("ecgpipe.orchestration.console.quiet_console", lambda: None)
    argv = ["run", "--config", "paper4", "--data-dir", str(physionet), "--out", str(tmp_path / "out"), "--verbose"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "ecgpipe: interrupted; this run wrote no run.json" in err and "see " not in err


def test_evaluate_reads_the_lead_the_model_learnt_unless_the_dataset_names_one(rhythm_model, physionet, tmp_path):
    """An external dataset's config without a `lead` line read channel 0: V5 in mitdb 114, whose MLII the model
    learnt and `ecgpipe predict` reads, so evaluate measured the model on another lead than predict uses."""
    from ecgpipe.config import load_config
    from ecgpipe.evaluate import leads_as_predict_reads
    from ecgpipe.model import load_model
    from ecgpipe.records import read_record

    model = load_model(rhythm_model)
    toml = 'name = "external"\n[databases.mitdb]\nLEAD\n[classes]\nnormal = ["(N"]\nafib = ["(AFIB"]\n'
    (tmp_path / "plain.toml").write_text(toml.replace("LEAD", ""))
    (tmp_path / "named.toml").write_text(toml.replace("LEAD", 'lead = ["V5"]'))
    plain, named = (load_config(tmp_path / f"{n}.toml").database("mitdb") for n in ("plain", "named"))

    def lead_read(settings) -> list[str]:
        return read_record(physionet / "mitdb", "mitdb", "114", settings, require_annotations=False).leads

    assert lead_read(plain) == ["V5"]  # what evaluate read before: the default, channel 0
    assert lead_read(leads_as_predict_reads(plain, model)) == ["MLII"]  # the model's lead, as predict reads it
    assert lead_read(leads_as_predict_reads(named, model)) == ["V5"]  # a dataset that names its lead keeps it


def test_a_record_sampled_below_the_training_rates_is_predicted_with_a_note(rhythm_model, physionet, tmp_path, capsys):
    """Any rate is resampled to the model's, but a record below every training rate lacks the band its spectrograms
    and beats had in training (mitdb 201 given as 100 Hz changed 16 % of paper4-best's calls): said in its note."""
    low = tmp_path / "low"
    low.mkdir()
    shutil.copy(physionet / "mitdb" / "100.dat", low)
    header = (physionet / "mitdb" / "100.hea").read_text().splitlines()
    first = header[0].split()
    first[2] = "128"  # the published header, its sampling frequency alone changed
    (low / "100.hea").write_text("\n".join([" ".join(first), *header[1:]]) + "\n")
    code, _, err = _run(capsys, "predict", "--model", str(rhythm_model), str(low / "100"), "--out", str(tmp_path / "pred"))
    assert code == 0, err
    note = (tmp_path / "pred" / "records.csv").read_text()
    assert "sampled at 128 Hz, below the model's 250 Hz (the lowest of its training records' rates and its own)" in note
    code, _, err = _run(capsys, "predict", "--model", str(rhythm_model), str(physionet / "mitdb" / "100"), "--out", str(tmp_path / "p360"))
    assert code == 0 and "below the" not in (tmp_path / "p360" / "records.csv").read_text()
