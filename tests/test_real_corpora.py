"""Records as PhysioNet ships them: the real CinC 2017 files in ../shared (header checksum 0 in every record, init
values that do not match the first sample in some), read with the same checks as every other record."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from ecgpipe.config import DatabaseSettings
from ecgpipe.records import RecordError, read_record

from conftest import copy_cinc


def settings(**kw) -> DatabaseSettings:
    return DatabaseSettings(fs=300.0, lead=[0], labels_csv="REFERENCE-v3.csv", **kw)


def first_records(folder, n):
    return (folder / "RECORDS").read_text().split()[:n]


def test_published_headers_with_checksum_zero_are_read(cinc):
    """Checksum 0 means 'not recorded' (every CinC header): verified only when recorded, so all records read."""
    names = first_records(cinc, 40)
    headers = [(cinc / f"{n}.hea").read_text().splitlines()[1].split() for n in names]
    assert all(h[6] == "0" for h in headers)  # as published: the checksum field is 0
    for name in names:
        rec = read_record(str(cinc), "cinc2017", name, settings(), record_label="N")
        assert rec.fs == 300.0 and rec.signals.shape[0] == 1 and np.isfinite(rec.signals).all()


def test_init_value_mismatches_are_ignored(cinc):
    """In some published headers the initial value does not match the first sample; wfdb reads them and so do we."""
    import wfdb

    mismatched = []
    for name in first_records(cinc, 400):
        header = wfdb.rdheader(str(cinc / name))
        first = wfdb.rdrecord(str(cinc / name), physical=False, sampto=1).d_signal[0, 0]
        if header.init_value[0] != first:
            mismatched.append(name)
        if len(mismatched) == 2:
            break
    assert mismatched, "expected published headers whose init value differs from the first sample"
    for name in mismatched:
        assert read_record(str(cinc), "cinc2017", name, settings(), record_label="A").signals.shape[1] > 0


def test_a_recorded_checksum_is_still_verified_and_the_policy_can_relax_it(cinc, tmp_path):
    """A header that does record a checksum (here: the real one written into a copy) still catches altered data;
    checksum = 'warn' reads it with a warning, 'off' without checking."""
    import wfdb

    name = first_records(cinc, 1)[0]
    for ext in (".hea", ".mat"):
        shutil.copy(cinc / f"{name}{ext}", tmp_path / f"{name}{ext}")
    real = wfdb.rdrecord(str(cinc / name), physical=False).calc_checksum()[0]
    header = tmp_path / f"{name}.hea"
    fields = header.read_text().splitlines()
    parts = fields[1].split()
    parts[6] = str(real)
    header.write_text("\n".join([fields[0], " ".join(parts), *fields[2:]]) + "\n")
    assert read_record(str(tmp_path), "cinc2017", name, settings(), record_label="N").signals.shape[1] > 0
    data = bytearray((tmp_path / f"{name}.mat").read_bytes())
    data[200:204] = b"\x10\x20\x30\x40"
    (tmp_path / f"{name}.mat").write_bytes(bytes(data))
    with pytest.raises(RecordError, match="checksum mismatch"):
        read_record(str(tmp_path), "cinc2017", name, settings(), record_label="N")
    with pytest.warns(UserWarning, match="checksum mismatch"):
        read_record(str(tmp_path), "cinc2017", name, settings(checksum="warn"), record_label="N")
    with warnings.catch_warnings():  # a run's segments stage: the note goes to the record's summary, no warning
        warnings.simplefilter("error")
        quiet = read_record(str(tmp_path), "cinc2017", name, settings(checksum="warn"), record_label="N", warn=False)
    assert len(quiet.notes) == 1 and "checksum mismatch in lead" in quiet.notes[0] and "read anyway" in quiet.notes[0]
    assert read_record(str(tmp_path), "cinc2017", name, settings(checksum="off"), record_label="N").notes == []


def run_cinc_slice(cinc, tmp_path):
    """A slice of the real CinC 2017 records through the shipped preset (smaller settings, same data path): none
    rejected for its checksum, every labelled record accounted for, record-level results per record, the clinical
    endpoint in every report. Returns the model artifact and the training records."""
    from ecgpipe.config import load_config
    from flows.ecg_pipeline import run_pipeline

    labels = dict(line.split(",") for line in (cinc / "REFERENCE-v3.csv").read_text().split())
    by_label: dict[str, list[str]] = {}
    for name in (cinc / "RECORDS").read_text().split():
        by_label.setdefault(labels[name], []).append(name)
    chosen = by_label["N"][:8] + by_label["A"][:8] + by_label["O"][:8] + by_label["~"][:2]
    copy_cinc(cinc, tmp_path / "data", chosen)
    small = {"min_samples_leaf": 3, "max_iter": 40}  # 16 training records per fold: the trees need small leaves
    rows = [{"kind": "hgb", "inputs": "rhythm", "level": "record", "class_weight": "balanced", **small},
            {"kind": "hgb", "inputs": "cnn+rhythm", "pca": 4, "level": "record", "class_weight": "balanced", **small},
            {"kind": "svc", "inputs": "cnn+rhythm", "pca": 16, "class_weight": "balanced"}]
    cfg = load_config("cinc2017", {"sweep": {"classifiers": rows}, "cv": {"n_splits": 3}, "run": {"chunk_size": 32, "n_workers": 1}})
    report = run_pipeline(cfg, str(tmp_path / "data"), str(tmp_path / "out"))
    assert report["skipped_records"] == []  # no record rejected: checksum 0 is "not recorded"
    used = {r.split("/")[-1] for r in report["protocols"]["grouped_by_subject"]["per_record"]["records"]["record"]}
    without = {r["record"].split("/")[-1]: r["reason"] for r in report["records_without_windows"]}
    assert used | set(without) == set(chosen) and not used & set(without)  # every labelled record accounted for
    assert all("excluded" in without[n] for n in by_label["~"][:2])
    assert report["subject_word"] == "record" and report["n_subjects"] == len(used)
    assert (tmp_path / "out" / "records_grouped_by_subject.csv").read_text().count("\n") == len(used) + 1
    # every row is scored per record on the same records; record-level rows say so
    assert all("record_macro_f1" in row["protocols"]["grouped_by_subject"] for row in report["comparison"])
    assert sum("per record" in row["classifier"] for row in report["comparison"]) == 2
    best = report["protocols"]["grouped_by_subject"]
    assert best["per_record"]["n_records"] == len(used)
    # the AF endpoint in every report: record-level sensitivity from the records' confusion matrix
    af = best["per_record"]["endpoints"]["af"]
    cm = np.array(best["per_record"]["confusion_matrix"])
    assert af["positives"] == cm[1].sum() and af["sensitivity"] == pytest.approx(cm[1, 1] / cm[1].sum())
    assert all(m["specificity"] is not None for m in best["per_class"].values())
    # per rhythm: the one positive class's rate is the endpoint's sensitivity, the others' rates make its specificity
    by_class = {c["name"]: c for c in af["by_class"]}
    assert by_class[af["classes"][0]]["rate"] == pytest.approx(af["sensitivity"])
    negatives = [c for c in af["by_class"] if not c["positive"]]
    assert sum(c["rate"] * c["n"] for c in negatives) / sum(c["n"] for c in negatives) == pytest.approx(af["specificity"])
    md = (tmp_path / "out" / "report.md").read_text()
    html = (tmp_path / "out" / "report.html").read_text()
    assert "## Clinical endpoints" in md and "Clinical endpoints" in html and "record macro-F1" in md
    assert "Per rhythm:" in md and "Per rhythm:" in html
    # paired comparisons with the best row on what it was chosen by, records (each record's one class), for every row
    # whatever its level: the record macro-F1 columns, not the window scores of window-level rows
    best_row = next(row for row in report["comparison"] if row["best"])
    assert best_row["versus_best"] == {}
    for row in [row for row in report["comparison"] if not row["best"]]:
        d = row["versus_best"]["grouped_by_subject"]
        for protocol, cell in row["protocols"].items():
            assert row["versus_best"][protocol]["a"] == pytest.approx(cell["record_macro_f1"], abs=1e-9)
            assert row["versus_best"][protocol]["b"] == pytest.approx(best_row["protocols"][protocol]["record_macro_f1"], abs=1e-9)
        assert d["ci95"][0] <= d["difference"] <= d["ci95"][1]
    assert "each row's record-level macro-F1 (each record's one class" in md and "lean optimistic" in md
    assert "grouped by subject record macro-F1 minus best (paired 95 % CI)" in md
    assert "record-level macro-F1 (each record&#x27;s one class" in html or "record-level macro-F1 (each record's one class" in html
    window_best = best["level"] == "window"  # a window-level best row's stratified per-record figures are flagged
    assert ("folds split each record's windows" in md) == window_best
    from ecgpipe.compare import compare_runs

    itself = compare_runs(tmp_path / "out", tmp_path / "out", n_boot=200)
    scored = {(s.protocol, s.scored) for s in itself.scopes}
    assert ("grouped_by_subject", f"{best['level']}s") in scored
    if best["level"] == "window":  # and the records' answers from their windows, records resampled
        assert ("grouped_by_subject", "records (their windows' answer)") in scored
    assert all(d.difference in (0, None) for s in itself.scopes for d in s.comparison.differences)
    # the same windows under folds drawn with another seed still pair, with a note that the interval leaves that out
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    seed = doc["config"]["cv"]["seed"]
    doc["config"]["cv"]["seed"] = seed + 1
    (tmp_path / "other_folds.json").write_text(json.dumps(doc))
    other_folds = compare_runs(tmp_path / "out", tmp_path / "other_folds.json", n_boot=200)
    assert itself.notes == [] and len(other_folds.notes) == 1 and f"cv.seed {seed} vs {seed + 1}" in other_folds.notes[0]
    # the model carries a detector per endpoint when its classifier reads windows (a record-level one has none)
    from ecgpipe.model import load_model

    model = load_model(tmp_path / "out" / "model.skops")
    assert set(model.detectors) == ({"af"} if model.config.classifier.level == "window" else set())
    assert model.training["detectors"] == sorted(model.detectors)
    return tmp_path / "out" / "model.skops", set(chosen)


@pytest.fixture(scope="module")
def cinc_model(cinc, tmp_path_factory, prefect_server):
    return run_cinc_slice(cinc, tmp_path_factory.mktemp("cinc_run"))


@pytest.mark.system
def test_the_cinc2017_preset_runs_real_records_end_to_end(cinc_model):
    """The checks are run_cinc_slice's; its model is a real artifact that loads (HGB or SVC, whichever won)."""
    from ecgpipe.model import load_model

    model, training = cinc_model
    loaded = load_model(model)
    assert loaded.class_names == ["normal", "afib", "other"] and len(training) == 26


@pytest.mark.system
def test_evaluate_scores_a_model_on_records_it_never_saw_and_on_another_database(cinc_model, physionet, tmp_path, capsys):
    """External validation through the CLI: the CinC-trained model on other real CinC records (per record, its
    training records flagged) and on a real mitdb record with AF annotations (per window, mapping normal and afib);
    every record accounted for, the endpoint consistent with the confusion matrix."""
    import json

    from ecgpipe.cli import main

    model, training = cinc_model
    names = (physionet / "cinc2017" / "RECORDS").read_text().split()
    unseen = [n for n in names if n not in training][:15]
    chosen = unseen + sorted(training)[:2]
    # the slice as its own folder, the last unseen record's row gone from its labels CSV (listed in RECORDS all the same)
    data = tmp_path / "data" / "cinc2017"
    data.mkdir(parents=True)
    for name in chosen:
        for f in (physionet / "cinc2017").glob(f"{name}.*"):
            (data / f.name).symlink_to(f)
    (data / "RECORDS").write_text("\n".join(chosen) + "\n")
    rows = (physionet / "cinc2017" / "REFERENCE-v3.csv").read_text().splitlines()
    (data / "REFERENCE-v3.csv").write_text("\n".join(r for r in rows if r.split(",")[0] in chosen[:14] + chosen[15:]) + "\n")
    dataset = tmp_path / "cinc_slice.toml"
    dataset.write_text(load_preset_text("cinc2017").replace('labels_csv = "REFERENCE-v3.csv"',
                                                            f'labels_csv = "REFERENCE-v3.csv"\nrecords = {json.dumps(chosen)}'))
    assert main(["evaluate", "--model", str(model), "--config", str(dataset), "--data-dir", str(tmp_path / "data"),
                 "--out", str(tmp_path / "ev_cinc")]) == 0
    ev = json.loads((tmp_path / "ev_cinc" / "evaluation.json").read_text())
    acc = ev["accounting"]
    assert acc["records"] == 17 and acc["no_label_row"] == 1  # counted as such, not as a label of no class
    assert acc["scored"] + acc["excluded_label"] + acc["unknown_label"] + acc["no_label_row"] + acc["failed"] == 17
    assert acc["training_records"] == 2  # the two training records are flagged, not silently counted as external
    r = ev["results"]["records"]
    cm = np.array(r["confusion_matrix"])
    assert cm.sum() == r["n"] == acc["scored"]
    af = r["endpoints"]["af"]
    assert af["positives"] == cm[1].sum() and af["sensitivity"] == (cm[1, 1] / cm[1].sum() if cm[1].sum() else None)
    assert "not an independent test" in (tmp_path / "ev_cinc" / "evaluation.md").read_text()
    listed = (tmp_path / "ev_cinc" / "evaluation_records.csv").read_text().splitlines()[1:]
    assert len(listed) == 17  # every record once, the unscored ones with the reason
    assert sum("not scored" in line for line in listed) == acc["excluded_label"] + acc["unknown_label"] + 1
    assert any(line.startswith(f"cinc2017/{chosen[14]},") and "not scored: no row for this record in REFERENCE-v3.csv" in line for line in listed)

    _compare_evaluations(tmp_path / "ev_cinc", tmp_path)

    mitdb = tmp_path / "mitdb_af.toml"
    mitdb.write_text('name = "mitdb-af"\n[databases.mitdb]\nlead = ["MLII"]\nrecords = ["201"]\n'
                     '[classes]\nnormal = ["(N"]\nafib = ["(AFIB"]\n[endpoints.af]\nclasses = ["afib"]\n')
    assert main(["evaluate", "--model", str(model), "--config", str(mitdb), "--data-dir", str(physionet),
                 "--out", str(tmp_path / "ev_mitdb"), "--map", "normal=normal", "afib=afib"]) == 0
    ev = json.loads((tmp_path / "ev_mitdb" / "evaluation.json").read_text())
    w = ev["results"]["windows"]
    cm = np.array(w["confusion_matrix"])
    assert ev["mapping"] == {"normal": "normal", "afib": "afib"} and w["confusion_columns"][-1] == "(unmapped)"
    assert cm.sum() == w["n"] > 50 and cm[1].sum() > 0  # 201 holds AF episodes
    assert w["endpoints"]["af"]["positives"] == cm[1].sum()
    assert [r["note"] for r in ev["records"]] == [""]  # window-level rows carry predict's note too (none for 201)
    # and the AF endpoint over the whole recording, as predict calls it (201 holds annotated AF runs)
    rec = ev["recordings"]["af"]
    assert rec["runs"] >= 2 and rec["positive_windows"] > 0 and rec["hours"] == pytest.approx(0.5, abs=0.01)
    assert "evaluation.md" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", str(model)])  # missing --config/--out: argparse's usage error
    assert main(["evaluate", "--model", str(model), "--config", str(mitdb), "--data-dir", str(physionet),
                 "--out", str(tmp_path / "ev_bad"), "--map", "vt=afib"]) == 2  # no such model class: one line, exit 2
    # per-window evaluations list no per-record answers: not paired, said in one line
    assert main(["compare", str(tmp_path / "ev_mitdb"), str(tmp_path / "ev_mitdb")]) == 2
    assert "scored per window" in capsys.readouterr().err


@pytest.mark.system
def test_evaluate_names_the_records_a_labels_csv_leaves_out_and_exits_1_on_a_failed_record(cinc_model, physionet, tmp_path,
                                                                                          capsys):
    """A folder without RECORDS (the labels CSV is the list): a record with files but no row, and a row without files,
    are named in evaluation_records.csv, evaluation.md and on stderr, as ``run`` names them; a record that fails
    makes the exit code 1, as predict's, with the others scored."""
    import json

    from ecgpipe.cli import main

    model, training = cinc_model
    names = [n for n in (physionet / "cinc2017" / "RECORDS").read_text().split() if n not in training][:8]
    data = tmp_path / "data" / "cinc2017"
    data.mkdir(parents=True)
    for name in names:
        for f in (physionet / "cinc2017").glob(f"{name}.*"):
            (data / f.name).symlink_to(f)
    (data / f"{names[0]}.mat").unlink()  # a record cut short: its signal file half its size
    (data / f"{names[0]}.mat").write_bytes((physionet / "cinc2017" / f"{names[0]}.mat").read_bytes()[:2000])
    labels = dict(line.split(",") for line in (physionet / "cinc2017" / "REFERENCE-v3.csv").read_text().split())
    rows = [f"{n},{labels[n]}" for n in names[:-1]] + ["A99999,N"]  # the last record's row forgotten; a row, no files
    (data / "REFERENCE-v3.csv").write_text("\n".join(rows) + "\n")
    dataset = tmp_path / "cinc_folder.toml"
    dataset.write_text(load_preset_text("cinc2017"))
    assert main(["evaluate", "--model", str(model), "--config", str(dataset), "--data-dir", str(tmp_path / "data"),
                 "--out", str(tmp_path / "ev")]) == 1
    err = capsys.readouterr().err
    assert "left out 1 record(s) the labels CSV lists without any file in the folder (e.g. cinc2017/A99999" in err
    assert f"left out 1 record(s) with files but no labels CSV row in the folder (e.g. cinc2017/{names[-1]}" in err
    ev = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    acc = ev["accounting"]
    assert (acc["records"], acc["absent"], acc["unlisted"], acc["failed"]) == (7, 1, 1, 1)
    assert acc["scored"] + acc["excluded_label"] + acc["unknown_label"] + acc["no_label_row"] + acc["failed"] == 7
    notes = {r["record"]: r["note"] for r in ev["records"]}
    assert len(notes) == 9  # every record once: the 7 of the dataset and the two it leaves out
    assert notes["cinc2017/A99999"].startswith("absent:") and notes[f"cinc2017/{names[-1]}"].startswith("unlisted:")
    assert notes[f"cinc2017/{names[0]}"].startswith("failed:")
    md = (tmp_path / "ev" / "evaluation.md").read_text()
    assert "## Records not in the evaluation" in md and f"`cinc2017/{names[-1]}`: unlisted" in md
    assert (tmp_path / "ev" / "evaluation_records.csv").read_text().count("\n") == 10


def _compare_evaluations(ev: Path, tmp_path: Path) -> None:
    """`ecgpipe compare` of two evaluations of the same external records: paired over records. A model against
    itself differs by nothing; one record answered otherwise moves accuracy by exactly one record; other records or
    labels are refused, naming the record."""
    import json

    from ecgpipe.cli import main

    doc = json.loads((ev / "evaluation.json").read_text())
    assert main(["compare", str(ev), str(ev / "evaluation.json"), "--boot", "300", "--json", str(tmp_path / "same.json")]) == 0
    (scope,) = json.loads((tmp_path / "same.json").read_text())["scopes"]
    c = scope["comparison"]
    assert scope["protocol"] == f"external: {doc['dataset_config']}" and c["n_subjects"] == doc["results"]["records"]["n"]
    macro = next(d for d in c["differences"] if d["metric"] == "macro_f1")
    assert macro["a"] == pytest.approx(doc["results"]["records"]["macro_f1"]) and macro["difference"] == 0
    other = json.loads(json.dumps(doc))
    row = next(r for r in other["records"] if r.get("predicted"))
    right = row["predicted"] == row["label"]
    row["predicted"] = next(k for k in doc["dataset_classes"] if k != row["label"]) if right else row["label"]
    (tmp_path / "ev_other").mkdir()
    (tmp_path / "ev_other" / "evaluation.json").write_text(json.dumps(other))
    assert main(["compare", str(ev), str(tmp_path / "ev_other"), "--json", str(tmp_path / "one.json")]) == 0
    accuracy = next(d for d in json.loads((tmp_path / "one.json").read_text())["scopes"][0]["comparison"]["differences"]
                    if d["metric"] == "accuracy")
    assert accuracy["difference"] == pytest.approx((1 if right else -1) / c["n_subjects"])
    row["label"] = next(k for k in doc["dataset_classes"] if k != row["label"])
    (tmp_path / "ev_other" / "evaluation.json").write_text(json.dumps(other))
    assert main(["compare", str(ev), str(tmp_path / "ev_other")]) == 2


def load_preset_text(name: str) -> str:
    from importlib import resources

    return resources.files("ecgpipe.configs").joinpath(f"{name}.toml").read_text()


@pytest.mark.system
def test_records_in_subfolders_run_end_to_end_and_a_rerun_computes_nothing(physionet, tmp_path, prefect_server):
    """Databases that keep records in subfolders (RECORDS lists ``patient001/s0010_re`` in ptbdb,
    ``records100/00000/00001_lr`` in PTB-XL): real mitdb files in two subfolders run through the flow, and a rerun
    finds every unit up to date."""
    import json

    from ecgpipe.config import config_from_dict, load_config
    from flows.ecg_pipeline import run_pipeline

    data = tmp_path / "data" / "mitdb"
    for folder, record in (("sub", "100"), ("other", "201")):
        (data / folder).mkdir(parents=True)
        for ext in ("hea", "dat", "atr"):
            shutil.copy(physionet / "mitdb" / f"{record}.{ext}", data / folder / f"{record}.{ext}")
    (data / "RECORDS").write_text("sub/100\nother/201\n")
    doc = load_config("paper4", {"sampling": {"max_per_class": 40}, "features": {"image_size": 64},
                                 "cv": {"n_splits": 2, "protocols": ["stratified_10fold"]}}).model_dump(mode="json")
    doc |= {"databases": {"mitdb": {"lead": ["MLII"]}}, "classes": {"normal": ["(N"], "afib": ["(AFIB"]}, "endpoints": {}}
    cfg = config_from_dict(doc)
    out = tmp_path / "out"
    report = run_pipeline(cfg, str(tmp_path / "data"), str(out))
    assert report["skipped_records"] == []
    assert report["record_accounting"]["used"] == 2 and report["class_counts"] == {"normal": 40, "afib": 40}
    assert report["subjects_per_class"] == {"normal": 2, "afib": 1}
    run_pipeline(cfg, str(tmp_path / "data"), str(out))
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert {stage: counts["computed"] for stage, counts in stages.items()} == dict.fromkeys(stages, 0)
