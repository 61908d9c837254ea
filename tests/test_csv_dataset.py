"""A dataset labelled per record by a CSV (the PhysioNet/CinC 2017 layout), run through the real flow.

The test writes the dataset itself with ``wfdb.wrsamp``: short single-lead 300 Hz records of varying length, cut from
real MIT-BIH normal-sinus and atrial-fibrillation episodes, plus a REFERENCE.csv with one ``record,label`` row each.
The first record cut from each source is written as an EDF+ file instead (``A00001.edf``, no WFDB header), as a
recorder would ship it: a database may mix both, and EDF records train like WFDB ones.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import wfdb
from scipy.signal import resample_poly

from ecgpipe.config import load_config
from ecgpipe.labels import LabelsError, read_labels_table, read_record_labels
from ecgpipe.records import read_episodes

from conftest import write_edf_plus

# a system test: real Prefect flows, Dask clusters, torch models or processes (`make check` leaves it out)
pytestmark = pytest.mark.system

# (source mitdb record, rhythm label in its annotations, CinC label)
SOURCES = [("100", "(N", "N"), ("103", "(N", "N"), ("201", "(AFIB", "A"), ("203", "(AFIB", "A")]
PER_SOURCE = 4
UNKNOWN = "A9001"  # labelled 'X': in no class
UNLISTED = "A9002"  # in RECORDS, not in the CSV
EDF_RECORDS: set[str] = set()  # filled by write_cinc_like

CSV_TOML = """
name = "cinc-like"
[databases.cinc]
fs = 300.0
lead = [0]
labels_csv = "REFERENCE.csv"
[classes]
normal = ["N"]
afib = ["A"]
[segments]
exclude_labels = ["~"]
[cv]
n_splits = 4
protocols = ["stratified_10fold", "grouped_by_subject"]
[run]
chunk_size = 32
n_workers = 1
records_per_task = 5
"""


def write_cinc_like(physionet, folder):
    """Records A00001... of 9-31 s at 300 Hz, each from one annotated rhythm episode of a real mitdb record."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, names, durations = [], [], {}
    for source, rhythm, label in SOURCES:
        path = str(physionet / "mitdb" / source)
        sig = wfdb.rdrecord(path, channels=[0]).p_signal[:, 0]
        episodes = [e for e in read_episodes(path, "atr", len(sig)) if e.label == rhythm and e.n_samples > 60 * 360]
        ep = episodes[0]
        for k in range(PER_SOURCE):
            seconds = int(rng.integers(9, 32))
            start = ep.start + k * 32 * 360
            piece = resample_poly(sig[start : start + seconds * 360], 5, 6)  # 360 -> 300 Hz
            name = f"A{len(names) + 1:05d}"
            if k == 0:  # EDF+: 1-s data records, microvolt steps, an annotation channel beside the lead
                microvolts = np.round(piece * 1000).astype(np.int16)
                write_edf_plus(folder / f"{name}.edf", microvolts, 300, (-32.768, 32.767), (-32768, 32767))
                EDF_RECORDS.add(name)
            else:
                wfdb.wrsamp(name, fs=300, units=["mV"], sig_name=["ECG"], p_signal=piece[:, None], fmt=["16"], write_dir=str(folder))
            durations[name] = seconds
            rows.append(f"{name},{label}")
            names.append(name)
    noisy = "A09000"  # excluded label: used by nobody, no error
    for name in (noisy, UNKNOWN, UNLISTED):
        wfdb.wrsamp(name, fs=300, units=["mV"], sig_name=["ECG"], p_signal=rng.normal(size=(3000, 1)), fmt=["16"], write_dir=str(folder))
    rows += [f"{noisy},~", f"{UNKNOWN},X"]
    (folder / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    (folder / "RECORDS").write_text("\n".join(names + [noisy, UNKNOWN, UNLISTED]) + "\n")
    return names, durations


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory, physionet, prefect_server):
    from flows.ecg_pipeline import run_pipeline

    tmp = tmp_path_factory.mktemp("cinc")
    names, durations = write_cinc_like(physionet, tmp / "data" / "cinc")
    cfg_path = tmp / "cinc.toml"
    cfg_path.write_text(CSV_TOML)
    report = run_pipeline(load_config(cfg_path), str(tmp / "data"), str(tmp / "out"))
    return {"report": report, "names": names, "durations": durations, "tmp": tmp}


def test_csv_labelled_records_become_segments_of_their_class(csv_run):
    report = csv_run["report"]
    folder = csv_run["tmp"] / "data" / "cinc"
    durations = csv_run["durations"]
    assert all(durations[n] == wfdb.rdheader(str(folder / n)).sig_len / 300 for n in set(durations) - EDF_RECORDS)
    assert all((folder / f"{n}.edf").is_file() and not (folder / f"{n}.hea").exists() for n in EDF_RECORDS)
    # every whole 2-s window of every usable record, nothing from the excluded, unknown or unlisted ones
    assert report["n_segments"] == sum(int(d // 2) for d in durations.values())
    assert len(EDF_RECORDS) == len(SOURCES)  # the EDF+ records count among them (one cut of each source)
    # and the model knows them as training records: predict warns when given one again
    from ecgpipe.model import load_model
    from ecgpipe.predict import training_recording

    model = load_model(csv_run["tmp"] / "out" / "model.skops")
    for name in EDF_RECORDS:
        assert training_recording(model, str(folder / f"{name}.edf")) == f"cinc/{name}"
    assert training_recording(model, str(folder / "A00002")) == "cinc/A00002"
    # a copy under another name, its header relabelled (as a user's own copy of a dataset may be): still one of them
    copy = csv_run["tmp"] / "copy"
    copy.mkdir(exist_ok=True)
    (copy / "mine.dat").write_bytes((folder / "A00002.dat").read_bytes())
    header = (folder / "A00002.hea").read_text().replace("A00002", "mine")
    (copy / "mine.hea").write_text(header + "#Dx: 164889003\n")
    assert training_recording(model, str(copy / "mine")) == "cinc/A00002"
    other = next(p for p in sorted(folder.glob("*.dat")) if p.name != "A00002.dat")
    (copy / "mine.dat").write_bytes(other.read_bytes()[: (folder / "A00002.dat").stat().st_size])
    assert training_recording(model, str(copy / "mine")) != "cinc/A00002"  # other samples: not that recording
    assert report["class_counts"]["normal"] > 0 and report["class_counts"]["afib"] > 0
    assert report["n_subjects"] == len(csv_run["names"])  # no patient ids in this layout: one subject per record


def test_records_without_windows_are_listed_with_the_reason(csv_run):
    listed = {r["record"].rsplit("/", 1)[-1]: r["reason"] for r in csv_run["report"]["records_without_windows"]}
    assert listed == {"A09000": "label(s) ['~'] excluded (segments.exclude_labels)"}
    n = len(csv_run["names"])  # usable records, plus the excluded, the unknown-label and the unlisted one
    expected = {"records": n + 3, "used": n, "excluded_label": 1, "too_short": 0, "no_window_of_a_class": 0, "failed": 2,
                "absent": 0, "unlisted": 0}  # with a RECORDS file the unlisted record is in the run: it fails by name
    accounting = csv_run["report"]["record_accounting"]
    assert {k: v for k, v in accounting.items() if k != "windows"} == expected
    assert accounting["windows"] == csv_run["report"]["n_candidates"]
    run_json = json.loads((csv_run["tmp"] / "out" / "run.json").read_text())
    assert run_json["records"] == accounting
    # short records share tasks (records_per_task = 5): 19 records, 4 tasks; one marker per record all the same
    assert run_json["stages"]["segments"]["tasks"] == 4 and run_json["stages"]["segments"]["computed"] == n + 1
    assert len(list((csv_run["tmp"] / "out" / "markers" / "segments").glob("*.json"))) == n + 1
    assert "## Records without windows" in (csv_run["tmp"] / "out" / "report.md").read_text()
    assert "A09000" in (csv_run["tmp"] / "out" / "report.html").read_text()


def test_bad_csv_records_are_skipped_and_named(csv_run):
    skipped = {s["record"].rsplit("/", 1)[-1]: s["error"] for s in csv_run["report"]["skipped_records"]}
    assert set(skipped) == {UNKNOWN, UNLISTED}
    assert "label 'X' from REFERENCE.csv is in no class" in skipped[UNKNOWN]
    assert "no row for this record in REFERENCE.csv" in skipped[UNLISTED]


def test_per_record_majority_vote_is_reported(csv_run):
    for name, p in csv_run["report"]["protocols"].items():
        per_record = p["per_record"]
        assert per_record["n_records"] == len(csv_run["names"])
        assert np.asarray(per_record["confusion_matrix"]).sum() == len(csv_run["names"])
        assert per_record["accuracy"] >= 0.75, name  # 9-31 s of NSR vs AF: most records' votes are right
    on_disk = json.loads((csv_run["tmp"] / "out" / "report.json").read_text())
    assert "majority vote" in on_disk["protocols"]["grouped_by_subject"]["per_record"]["rule"]


def test_labels_csv_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(LabelsError, match="REFERENCE.csv: labels file not found"):
        read_record_labels(tmp_path, "REFERENCE.csv")
    (tmp_path / "REFERENCE.csv").write_text("record,label\nA1,N\n,A\n")
    with pytest.raises(LabelsError, match=r"REFERENCE.csv, line 3: expected 'record,label'"):  # a label of no record
        read_record_labels(tmp_path, "REFERENCE.csv")
    (tmp_path / "REFERENCE.csv").write_text("A1,N,45\n")  # no header: a row is record,label, a third cell refused
    with pytest.raises(LabelsError, match=r"REFERENCE.csv, line 1: expected 'record,label'"):
        read_record_labels(tmp_path, "REFERENCE.csv")
    # a row without its label: the record gets "" and fails by name when read (check_record_label), the run goes on
    (tmp_path / "REFERENCE.csv").write_text("record,label\nA1,N\nA2\nA3,\n")
    assert read_record_labels(tmp_path, "REFERENCE.csv") == {"A1": "N", "A2": "", "A3": ""}
    (tmp_path / "REFERENCE.csv").write_text("A1,N\nA3,\n")  # no header: an empty label cell is a row without label
    assert read_record_labels(tmp_path, "REFERENCE.csv") == {"A1": "N", "A3": ""}
    # ... but a row of one cell is no row of this file: a semicolon- or tab-separated file, a list of records
    for text in ("record;label\nA1;N\n", "A1\tN\n", "A1\nA2\n", "A1,N\nA2\n"):
        (tmp_path / "REFERENCE.csv").write_text(text)
        with pytest.raises(LabelsError, match=r"REFERENCE.csv, line \d: expected 'record,label'"):
            read_record_labels(tmp_path, "REFERENCE.csv")
    # a header naming record and label among other columns, in any order: those two (and subject) are read
    (tmp_path / "REFERENCE.csv").write_text("age,Label,sex,Record,subject\n45,N,M,A1,p1\n50,A,F,A2,p2,extra\n")
    table = read_labels_table(tmp_path, "REFERENCE.csv")
    assert table.labels == {"A1": "N", "A2": "A"} and table.subjects == {"A1": "p1", "A2": "p2"}
    (tmp_path / "REFERENCE.csv").write_text("record,label,age\nA1,N,45\nA2,A\n")  # the unread column may be empty
    assert read_record_labels(tmp_path, "REFERENCE.csv") == {"A1": "N", "A2": "A"}
    (tmp_path / "REFERENCE.csv").write_text("A1,N\nA1,A\n")
    with pytest.raises(LabelsError, match="two labels"):
        read_record_labels(tmp_path, "REFERENCE.csv")
    (tmp_path / "REFERENCE.csv").write_text("record,label\nA1,N\n\nA2,A\n")
    assert read_record_labels(tmp_path, "REFERENCE.csv") == {"A1": "N", "A2": "A"}
    (tmp_path / "REFERENCE.csv").write_text("\n \r\nRecord, Label\r\nA1,N\r\n")  # the header after blank lines
    assert read_record_labels(tmp_path, "REFERENCE.csv") == {"A1": "N"}
    (tmp_path / "REFERENCE.csv").write_text("record,label,\nA1,N,\n")  # an Excel export's trailing commas
    assert read_record_labels(tmp_path, "REFERENCE.csv") == {"A1": "N"}
    (tmp_path / "REFERENCE.csv").write_text("\nfilename,rhythm\nA1,N\n")  # was read as a record named "filename"
    with pytest.raises(LabelsError, match=r"REFERENCE.csv, line 2: \['filename', 'rhythm'\] looks like a header row; "
                                          r"ecgpipe reads one with a 'record' and a 'label' column"):
        read_record_labels(tmp_path, "REFERENCE.csv")
    for header in ("ecg_id,label", "Recording no.,Rhythm", "sample,Dx"):  # by either column's name
        (tmp_path / "REFERENCE.csv").write_text(f"{header}\nA1,N\n")
        with pytest.raises(LabelsError, match=r"REFERENCE.csv, line 1: .* looks like a header row"):
            read_record_labels(tmp_path, "REFERENCE.csv")


def test_a_dataset_without_patient_ids_speaks_of_records_and_titles_show_the_real_folds(csv_run):
    report = csv_run["report"]
    assert report["subject_word"] == "record"
    md = (csv_run["tmp"] / "out" / "report.md").read_text()
    html_page = (csv_run["tmp"] / "out" / "report.html").read_text()
    assert "Stratified 4-fold over segments" in md and "Stratified group 4-fold by record (no record in both" in md
    visible = html_page.lower().replace("table.patients", "").replace("class=patients", "")  # a CSS class name
    assert "patient" not in md.lower() and "patient" not in visible


def test_per_record_outcomes_and_metrics_are_written(csv_run):
    out = csv_run["tmp"] / "out"
    report = csv_run["report"]
    assert report["selected_by"].startswith("highest record-level macro-F1")
    for name, p in report["protocols"].items():
        r = p["per_record"]
        assert set(r["per_class"]) == {"normal", "afib"} and sum(m["support"] for m in r["per_class"].values()) == r["n_records"]
        rows = (out / f"records_{name}.csv").read_text().splitlines()
        assert rows[0] == "record,subject,label,predicted,votes_normal,votes_afib,folds"
        assert len(rows) - 1 == r["n_records"] == len(csv_run["names"])
        labels = {line.split(",")[0].rsplit("/", 1)[-1]: line.split(",")[2] for line in rows[1:]}
        assert {labels[n] for n in EDF_RECORDS} == {"normal", "afib"}  # EDF+ records classified beside WFDB ones
        for line in rows[1:]:
            record, subject, label, predicted, v_normal, v_afib, folds = line.split(",")
            assert subject == "cinc:" + record.rsplit("/", 1)[-1]  # no patient ids: each record its own subject
            assert abs(float(v_normal) + float(v_afib) - 1) < 1e-3 and predicted == ("normal" if float(v_normal) >= float(v_afib) else "afib")
            assert folds and all(0 <= int(f) < p["n_folds"] for f in folds.split())
        cm = np.asarray(r["confusion_matrix"])
        assert r["per_class"]["afib"]["recall"] == pytest.approx(cm[1, 1] / cm[1].sum())
    md = (out / "report.md").read_text()
    assert "annotated \\ predicted (records)" in md and "records_<protocol>.csv" in md
    assert "the records' confusion matrix" in (out / "report.html").read_text()


def test_a_subset_beside_the_full_labels_csv_leaves_the_absent_records_out_and_counts_them(csv_run, tmp_path):
    """A few records copied beside the dataset's full REFERENCE.csv (no RECORDS file: the CSV lists the records):
    the records without any file are counted and named as absent, not failed (no fail-fast stop), and the others
    train as before; a record with a header but no signal file still fails by name; a record with files but no row
    in the CSV (here in a subfolder too) is not in the run, but named, not lost without a word."""
    import shutil

    from flows.ecg_pipeline import run_pipeline

    folder = tmp_path / "data" / "cinc"
    shutil.copytree(csv_run["tmp"] / "data" / "cinc", folder)
    (folder / "RECORDS").unlink()
    absent = [f"A{i:05d}" for i in range(5001, 5031)]  # 30 > fail_fast_after's 20: absent records are no failures
    (folder / "A05100.hea").write_text("A05100 1 300 3000\nA05100.mat 16 1000 16 0 0 0 0 ECG\n")  # its signal lost
    with open(folder / "REFERENCE.csv", "a") as fh:
        fh.write("".join(f"{n},N\n" for n in absent) + "A05100,N\n")
    (folder / "site2").mkdir()
    for f in folder.glob(f"{UNLISTED}.*"):
        shutil.copy(f, folder / "site2" / f.name)
    longer = sorted(set(csv_run["names"]) - EDF_RECORDS)[0]  # its header cut short? 3 bytes the header does not name
    with open(folder / f"{longer}.dat", "ab") as fh:
        fh.write(b"\0\0\0")
    cfg = load_config(csv_run["tmp"] / "cinc.toml")
    report = run_pipeline(cfg, str(tmp_path / "data"), str(tmp_path / "out"))
    n = len(csv_run["names"])
    accounting = report["record_accounting"]
    assert {k: v for k, v in accounting.items() if k != "windows"} == {
        "records": n + 2 + 1 + len(absent), "used": n, "excluded_label": 1, "too_short": 0, "no_window_of_a_class": 0,
        "failed": 2, "absent": len(absent), "unlisted": 2}  # failed: the unknown label and the header without its signal
    assert report["absent_records"] == [f"cinc/{a}" for a in absent]
    assert report["unlisted_records"] == [f"cinc/{UNLISTED}", f"cinc/site2/{UNLISTED}"]
    assert {s["record"].rsplit("/", 1)[-1] for s in report["skipped_records"]} == {UNKNOWN, "A05100"}
    assert report["n_segments"] == csv_run["report"]["n_segments"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "30 listed in the labels CSV without any file in the folder" in md
    assert "Not in the run: 2 record(s) with files in the folder but no row in the labels CSV" in md
    # read as its header says, and said so where the user looks, not in a Dask worker's log
    assert [r["record"] for r in report["records_read_with_warnings"]] == [f"cinc/{longer}"]
    assert "holds 3 bytes more than the header's" in report["records_read_with_warnings"][0]["warning"]
    assert "## Records read with warnings" in md and f"- `cinc/{longer}`: " in md
    assert "Records read with warnings" in (tmp_path / "out" / "report.html").read_text()


def test_records_with_flat_leads_are_listed_in_the_reports(csv_run):
    """The report names records whose windows have a flat lead (used with their label; counted by the segments
    stage, tests/test_input_edge_cases.py); none here, so the section is absent until there is one."""
    from ecgpipe.report import render_markdown
    from ecgpipe.report_html import render_html

    report = csv_run["report"]
    assert report["records_with_flat_leads"] == [] and "Records with flat leads" not in render_markdown(report)
    # the paper's protocol keeps its name whatever cv.n_splits says: the report says how many folds ran
    assert "`stratified_10fold` names the paper's protocol (stratified folds over segments); this run used 4 folds" in render_markdown(report)
    ten = {**report, "protocols": {k: {**p, "n_folds": 10} for k, p in report["protocols"].items()}}
    assert "names the paper's protocol" not in render_markdown(ten)
    flat = {**report, "records_with_flat_leads": [{"record": "cinc/A00007", "flat": 2, "windows": 3}]}
    md = render_markdown(flat)
    assert "## Records with flat leads" in md and "- `cinc/A00007`: 2 of 3" in md
    assert "the windows are used as labelled" in md
    page = render_html(flat, {name: b"png" for name in report["protocols"]}, None)
    assert "<h3>Records with flat leads</h3>" in page and "cinc/A00007</code>: 2 of 3" in page
    # a big corpus: the reports name the first 100 of each list and say where the rest are
    many = {**report, "records_without_windows": [{"record": f"cinc/B{i:05d}", "reason": "shorter than one window"}
                                                  for i in range(250)]}
    md, page = render_markdown(many), render_html(many, {name: b"png" for name in report["protocols"]}, None)
    for text in (md, page):
        assert "cinc/B00099" in text and "cinc/B00100" not in text
        assert "... and 150 more (all in report.json: records_without_windows)" in text


def test_a_record_without_a_label_or_with_one_of_another_case_fails_by_name_saying_so():
    from ecgpipe.config import DatabaseSettings
    from ecgpipe.labels import check_record_label
    from ecgpipe.records import RecordError

    settings = DatabaseSettings(fs=300.0, labels_csv="labels.csv")
    with pytest.raises(RecordError, match="its row in labels.csv has no label"):
        check_record_label("db/A2", "", settings, {"N", "A"}, {"~"})
    with pytest.raises(RecordError, match=r"label 'n' from labels.csv is in no class .* matched with their case: 'N'\?"):
        check_record_label("db/A3", "n", settings, {"N", "A"}, {"~"})
    with pytest.raises(RecordError) as err:  # no label of another case alike: no guess
        check_record_label("db/A4", "X", settings, {"N", "A"}, {"~"})
    assert "case" not in str(err.value)
    check_record_label("db/A5", "~", settings, {"N", "A"}, {"~"})  # excluded: no error here (no window later)
