"""Who is one patient: the grouped protocol keeps a subject's records on one side of every fold, so a corpus whose
patients have several records (ptbdb's and Icentia11k's patient folders, MIMIC's patient ids in paths, PTB-XL's
patient_id column) needs its subjects said: ``databases.<db>.subject`` ('record', 'folder', 'labels_csv') or
``subject_pattern``. Real WFDB files as PhysioNet ships them (mitdb, CinC 2017), a real flow run."""

from __future__ import annotations

import json
import shutil

import pytest

from ecgpipe.config import ConfigError, config_from_dict, load_config
from ecgpipe.databases import subject_id
from ecgpipe.labels import LabelsError, read_labels_table, read_record_labels


def test_each_subject_rule_names_the_patient_and_says_why_a_record_has_none():
    assert subject_id("ptbdb", "patient001/s0010_re", {}, "folder") == "ptbdb:patient001"
    assert subject_id("icentia", "p00/p00000/p00000_s00", {}, "folder") == "icentia:p00/p00000"
    assert subject_id("ptbdb", "patient001/s0010_re", {}) == "ptbdb:patient001/s0010_re"  # default: the record
    path = "files/p1000/p10000032/s40689238/40689238"
    assert subject_id("mimic", path, {}, pattern="p[0-9]{8}") == "mimic:p10000032"  # the whole match
    assert subject_id("mimic", path, {}, pattern="files/p[0-9]+/([^/]+)/") == "mimic:p10000032"  # its first group
    assert subject_id("ptbxl", "00001_lr", {}, "labels_csv", csv_subject="15709") == "ptbxl:15709"
    # same_subject maps a record to its canonical record first, whatever the rule
    assert subject_id("db", "b/2", {"b/2": "a/1"}, "folder") == "db:a"
    # ... followed to the end of its chain, in any database (a ring is one subject, its first name)
    assert {subject_id("db", r, {"c": "b", "b": "a"}) for r in ("a", "b", "c")} == {"db:a"}
    assert {subject_id("db", r, {"a": "b", "b": "a"}) for r in ("a", "b")} == {"db:a"}
    # ... or to another database's subject: nstdb's noise-stressed copies of mitdb 118 are mitdb's patient 118
    assert subject_id("nstdb", "118e24", {"118e24": "mitdb:118"}) == subject_id("mitdb", "118", {}) == "mitdb:118"
    assert subject_id("nstdb", "118e24", {"118e24": "mitdb:118"}, "folder") == "mitdb:118"  # whatever the rule
    with pytest.raises(ValueError, match="lies in no folder"):
        subject_id("ptbdb", "s0010_re", {}, "folder")
    with pytest.raises(ValueError, match=r"subject_pattern 'p\[0-9\]\{8\}' does not match '100'"):
        subject_id("mitdb", "100", {}, pattern="p[0-9]{8}")
    with pytest.raises(ValueError, match="no 'subject' cell"):
        subject_id("cinc", "A00001", {}, "labels_csv", csv_subject=None)
    with pytest.raises(ValueError, match="matches 'x/1' with an empty first group"):
        subject_id("db", "x/1", {}, pattern="(q*)")


def test_subject_settings_are_validated_and_say_what_is_wrong():
    def db(**settings):
        return config_from_dict(load_config("paper4", {"databases": {"mitdb": settings}}).model_dump(mode="json")
                                | {"databases": {"mitdb": {"lead": ["MLII"], **settings}}})

    assert db(subject="folder").databases["mitdb"].subject == "folder"
    with pytest.raises(ConfigError, match="not a regular expression"):
        db(subject_pattern="p[0-9")
    with pytest.raises(ConfigError, match="keep one"):
        db(subject="folder", subject_pattern="p[0-9]+")
    with pytest.raises(ConfigError, match="needs labels_csv"):
        db(subject="labels_csv")
    with pytest.raises(ConfigError, match="did you mean 'subject'"):
        db(subjects="folder")
    assert db().database("mitdb").records_are_subjects is False  # mitdb's 201 and 202 are one patient
    assert db(subject="folder").databases["mitdb"].records_are_subjects is False


def test_a_labels_csv_with_a_subject_column_gives_each_record_its_patient(tmp_path):
    (tmp_path / "REFERENCE.csv").write_text("record,label,subject\nA1,N,p7\nA2.hea,A,p7\nA3,N,p9\n")
    table = read_labels_table(tmp_path, "REFERENCE.csv")
    assert table.labels == {"A1": "N", "A2": "A", "A3": "N"}
    assert table.subjects == {"A1": "p7", "A2": "p7", "A3": "p9"}
    assert read_record_labels(tmp_path, "REFERENCE.csv") == table.labels
    # a record named as another's copy (same_subject) takes that one's row; a record with no row has no subject
    assert table.subject_of("A3", {}) == "p9" and table.subject_of("B1", {"B1": "A1"}) == "p7"
    assert table.subject_of("B2", {}) is None
    # a row without its subject cell: read (since 0.19.0), and refused where the subjects are read from the CSV
    (tmp_path / "REFERENCE.csv").write_text("record,label,subject\nA1,N,p7\nA2,A\n")
    short = read_labels_table(tmp_path, "REFERENCE.csv")
    assert short.labels == {"A1": "N", "A2": "A"} and short.subjects == {"A1": "p7"}
    from ecgpipe.config import DatabaseSettings
    from ecgpipe.labels import check_subject_column

    with pytest.raises(LabelsError, match=r"REFERENCE.csv: 1 record\(s\) have an empty 'subject' cell \(e.g. A2\)"):
        check_subject_column(DatabaseSettings(labels_csv="REFERENCE.csv", subject="labels_csv"), short, tmp_path)
    (tmp_path / "REFERENCE.csv").write_text("record,label,subject\nA1,N,p7\nA1,N,p8\n")
    with pytest.raises(LabelsError, match="line 3: record 'A1' has two subjects"):
        read_labels_table(tmp_path, "REFERENCE.csv")
    (tmp_path / "REFERENCE.csv").write_text("A1,N\nA2,A\n")  # CinC's layout: no header, no subjects
    assert read_labels_table(tmp_path, "REFERENCE.csv").subjects == {}


def test_a_records_subject_is_in_its_key_and_not_in_its_signal_key(physionet):
    from ecgpipe.stages.segments import record_unit

    db_dir = str(physionet / "mitdb")
    base = record_unit(load_config("paper4"), "mitdb", "100", db_dir)
    assert (base.subject, base.subject_error) == ("mitdb:100", None)
    for settings in ({"subject": "folder"}, {"subject_pattern": "[0-9]"}, {"same_subject": {"100": "101"}}):
        other = record_unit(load_config("paper4", {"databases": {"mitdb": settings}}), "mitdb", "100", db_dir)
        assert other.key != base.key, settings  # the record's summary names another subject: recomputed
        assert other.signal_key == base.signal_key, settings  # its windows are the same: no spectrogram recomputed
    folder = record_unit(load_config("paper4", {"databases": {"mitdb": {"subject": "folder"}}}), "mitdb", "100", db_dir)
    assert folder.subject == "" and "lies in no folder" in folder.subject_error  # found at planning, fails in its task
    # a rule that gives this record the subject it had: its key stays, so a new rule recomputes only what it moves
    for settings in ({"subject_pattern": "^[0-9]+$"}, {"same_subject": {"202": "201", "124": "123"}}):
        same = record_unit(load_config("paper4", {"databases": {"mitdb": settings}}), "mitdb", "100", db_dir)
        assert same.key == base.key, settings


def test_real_cinc_records_take_their_patient_from_the_labels_csv(physionet, tmp_path):
    from ecgpipe import store as zs
    from ecgpipe.records import RecordError
    from ecgpipe.stages.segments import compute_record, plan_records
    from ecgpipe.store import Layout

    folder = tmp_path / "data" / "cinc"
    folder.mkdir(parents=True)
    for name in ("A00002", "A00004", "A00005"):
        for ext in ("hea", "mat"):
            shutil.copy(physionet / "cinc2017" / f"{name}.{ext}", folder / f"{name}.{ext}")
    (folder / "REFERENCE.csv").write_text("record,label,subject\nA00002,N,p1\nA00004,A,p1\nA00005,A,p2\n")
    doc = load_config("cinc2017").model_dump(mode="json")
    doc["databases"] = {"cinc": {"fs": 300.0, "labels_csv": "REFERENCE.csv", "subject": "labels_csv"}}
    cfg = config_from_dict(doc)
    units = plan_records(cfg, tmp_path / "data", download=False)
    assert [(u.record, u.subject) for u in units] == [("A00002", "cinc:p1"), ("A00004", "cinc:p1"), ("A00005", "cinc:p2")]
    store = str(tmp_path / "store.zarr")
    zs.ensure_groups(store, *Layout.GROUPS)
    summaries = [compute_record(store, u, cfg)[0] for u in units]
    assert [s.subject for s in summaries] == ["cinc:p1", "cinc:p1", "cinc:p2"]
    # the same CSV without its subject column: refused before any work, naming the file
    (folder / "REFERENCE.csv").write_text("A00002,N\nA00004,A\nA00005,A\n")
    with pytest.raises(LabelsError, match=r"cinc/REFERENCE.csv: subject = 'labels_csv' needs a 'subject' column"):
        plan_records(cfg, tmp_path / "data", download=False)
    # a record without a row is named for its missing row, not its missing subject
    (folder / "RECORDS").write_text("A00002\nA00004\nA00005\n")
    (folder / "REFERENCE.csv").write_text("record,label,subject\nA00002,N,p1\nA00004,A,p1\n")
    unit = plan_records(cfg, tmp_path / "data", download=False)[2]
    with pytest.raises(RecordError, match=r"cinc/A00005: no row for this record in REFERENCE.csv"):
        compute_record(store, unit, cfg)
    # a CSV that names subjects under a rule that ignores them: the leak is said, the run goes on
    doc["databases"]["cinc"]["subject"] = "record"
    with pytest.warns(UserWarning, match="names each record's subject, but databases.<db>.subject is 'record'"):
        units = plan_records(config_from_dict(doc), tmp_path / "data", download=False)
    assert [u.subject for u in units] == ["cinc:A00002", "cinc:A00004", "cinc:A00005"]


@pytest.mark.system
def test_patient_folders_keep_a_patients_records_on_one_side_of_every_grouped_fold(physionet, tmp_path, prefect_server):
    """Real mitdb records in two patient folders (subject = 'folder'), and one record beside them that lies in no
    folder: the grouped folds split patients, not records, the report counts patients, the record without a patient
    fails by name while the others' results stand; a new subject rule recomputes records, not spectrograms."""
    from flows.ecg_pipeline import run_pipeline

    data = tmp_path / "data" / "mitdb"
    layout = {"pA": ("201", "100"), "pB": ("203", "103"), ".": ("219",)}
    for folder, records in layout.items():
        (data / folder).mkdir(parents=True, exist_ok=True)
        for record in records:
            for ext in ("hea", "dat", "atr"):
                shutil.copy(physionet / "mitdb" / f"{record}.{ext}", data / folder / f"{record}.{ext}")
    (data / "RECORDS").write_text("pA/201\npA/100\npB/203\npB/103\n219\n")
    doc = load_config("paper4", {"sampling": {"max_per_class": 40}, "features": {"image_size": 64},
                                 "cv": {"n_splits": 2, "protocols": ["grouped_by_subject"]}}).model_dump(mode="json")
    doc |= {"databases": {"mitdb": {"lead": ["MLII"], "subject": "folder"}}, "endpoints": {},
            "classes": {"normal": ["(N"], "afib": ["(AFIB"]}}
    cfg = config_from_dict(doc)
    out = tmp_path / "out"
    report = run_pipeline(cfg, str(tmp_path / "data"), str(out))
    failed = {"/".join(f["record"].split("/")[-2:]): f["error"] for f in report["skipped_records"]}  # the file's path
    assert list(failed) == ["mitdb/219"] and "lies in no folder" in failed["mitdb/219"]
    assert report["record_accounting"]["used"] == 4
    assert report["n_subjects"] == 2 and report["subjects_per_class"] == {"normal": 2, "afib": 2}
    assert report["subject_word"] == "patient"
    grouped = report["protocols"]["grouped_by_subject"]
    assert set(grouped["per_subject"]["subject"]) == {"mitdb:pA", "mitdb:pB"}
    # each fold tests one patient folder, both of its records (never one record of each patient)
    assert [f["test_subjects"] for f in grouped["folds"]] == [1, 1]

    # each record its own subject (the pattern matches none of 219's name still): the records recompute (their
    # summaries name other subjects), the spectrograms and CNN features of the same windows are reused
    doc["databases"]["mitdb"] |= {"subject": "record", "subject_pattern": "^p[AB]/[0-9]+$"}
    report = run_pipeline(config_from_dict(doc), str(tmp_path / "data"), str(out))
    assert report["n_subjects"] == 4 and len(report["skipped_records"]) == 1
    assert [f["test_subjects"] for f in report["protocols"]["grouped_by_subject"]["folds"]] == [2, 2]
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert stages["segments"]["computed"] == 4, stages
    assert stages["spectrograms"]["computed"] == 0 and stages["features"]["computed"] == 0, stages


def test_per_record_results_and_their_comparison_resample_patients_not_records():
    """Four records of two patients (a CSV's subject column): the majority-vote endpoints' intervals draw patients,
    each record's outcome names its patient, and `ecgpipe compare` sums a patient's records into one unit (a file
    from before 0.4.0, with no subject, keeps each record its own)."""
    import numpy as np

    from ecgpipe.classifier_settings import EndpointSettings
    from ecgpipe.compare import one_answer_per_subject
    from ecgpipe.record_level import record_level_summary

    records = np.repeat(["c/r1", "c/r2", "c/r3", "c/r4"], 3)
    subjects = np.repeat(["c:p1", "c:p1", "c:p2", "c:p2"], 3)
    y = np.repeat([0, 1, 0, 1], 3)
    y_pred = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0])  # r1 normal, r2 afib, r3 normal, r4 normal (missed)
    endpoints = {"af": EndpointSettings(classes=["afib"])}
    by_patient = record_level_summary(y, y_pred, records, ["normal", "afib"], endpoints=endpoints, subjects=subjects)
    assert [(r["record"], r["subject"], r["predicted"]) for r in by_patient.records.rows()] == [
        ("c/r1", "c:p1", "normal"), ("c/r2", "c:p1", "afib"), ("c/r3", "c:p2", "normal"), ("c/r4", "c:p2", "normal")]
    assert by_patient.endpoints["af"].ci_method.startswith("bootstrap over 2 subjects")
    assert by_patient.endpoints["af"].sensitivity == 0.5
    by_record = record_level_summary(y, y_pred, records, ["normal", "afib"], endpoints=endpoints)
    assert by_record.endpoints["af"].ci_method.startswith("bootstrap over 4 subjects")

    outcomes = [(r["subject"], r["record"], r["label"], r["predicted"]) for r in by_patient.records.rows()]
    grouped = one_answer_per_subject(outcomes, ["normal", "afib"])
    assert grouped.subjects == ["c:p1", "c:p2"]
    assert grouped.counts.tolist() == [[[1, 0], [0, 1]], [[1, 0], [1, 0]]]
    older = one_answer_per_subject([("", *o[1:]) for o in outcomes], ["normal", "afib"])
    assert older.subjects == ["c/r1", "c/r2", "c/r3", "c/r4"] and older.counts.sum() == 4


def test_one_record_has_one_name_whatever_the_list_wrote():
    """'./patient001/a' and 'patient001/b' are one patient's records under subject = 'folder', and a list written on
    Windows names the same files."""
    from ecgpipe.records import record_name

    assert record_name("./patient001/s0010_re.hea") == "patient001/s0010_re"
    assert record_name("patient001\\s0010_re") == "patient001/s0010_re"
    assert record_name(" 100 ") == "100" and record_name("records100//00000/00001_lr") == "records100/00000/00001_lr"
    assert (subject_id("ptbdb", record_name("./patient001/a"), {}, "folder")
            == subject_id("ptbdb", record_name("patient001/b"), {}, "folder") == "ptbdb:patient001")


def test_the_predict_benchmark_holds_out_patients_not_records(physionet):
    """``bench_predict.py --holdout mitdb/201`` measures predict on a new patient: 202, the same man, leaves too."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))
    from bench_predict import patients_held_out

    from ecgpipe.config import load_config

    kept, held = patients_held_out(load_config("paper4-best"), ["mitdb/201", "vfdb/418", "mitdb/100"], physionet)
    assert held == {"mitdb/201", "mitdb/202", "mitdb/100", "vfdb/418"}
    assert not {"201", "202", "100"} & set(kept["mitdb"]) and len(kept["mitdb"]) == 45  # 48 records, three held out
    assert "418" not in kept["vfdb"] and len(kept["vfdb"]) == 21
