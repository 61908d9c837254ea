"""Records labelled by a comment line of their own header: the PhysioNet/CinC Challenge 2020/2021 layout.

Those challenges ship each 12-lead record as ``.hea`` + ``.mat`` with the labels as header comments after the signal
lines (``#Age: 74``, ``#Sex: Male``, ``#Dx: 164889003,59118001``: SNOMED CT codes; several per record). No such record
is in ``../shared``, so the dataset here is real CinC 2017 records, their header and signal files byte for byte as
published (checksum 0, WFDB format 16+24), with the 2020/2021 comment block appended to each header: the record
and signal lines that wfdb parses are the published ones, the comment lines follow the challenges' layout.
"""

from __future__ import annotations

import json
import shutil

import pytest

from ecgpipe.config import DatabaseSettings, PipelineConfig
from ecgpipe.labels import classes_named, header_codes, label_of_codes
from ecgpipe.records import RecordError
from ecgpipe.results import RecordOutcomes

AF, AFL, NSR, RBBB, PACED = "164889003", "164890007", "426783006", "59118001", "10370003"  # SNOMED CT codes

HEADER_TOML = """
name = "dx-labelled"
[databases.cinc2017]
fs = 300.0
lead = [0]
labels_header = "Dx"
[classes]
normal = ["426783006"]
afib = ["164889003", "164890007"]
[segments]
target_fs = 300.0
length_s = 10.0
stride_s = 10.0
exclude_labels = ["10370003"]
[rhythm]
enabled = true
context_s = 60.0
[classifier]
kind = "hgb"
inputs = "rhythm"
level = "record"
class_weight = "balanced"
min_samples_leaf = 3
max_iter = 40
[cv]
n_splits = 3
protocols = ["grouped_by_subject"]
[endpoints.af]
classes = ["afib"]
[run]
chunk_size = 32
n_workers = 1
"""


def challenge_header(published: str, codes: list[str] | None, age: int = 61) -> str:
    """A published header with the 2020/2021 challenges' comment block after it (no ``#Dx`` line when ``codes`` is
    None)."""
    comments = [f"#Age: {age}", "#Sex: Female"] + ([f"#Dx: {','.join(codes)}"] if codes is not None else [])
    return published + "\n".join(comments + ["#Rx: Unknown", "#Hx: Unknown", "#Sx: Unknown"]) + "\n"


def write_dx_dataset(cinc, folder, n_per_class: int) -> dict[str, list[str] | None]:
    """Real CinC records as a Dx-labelled database: N -> sinus rhythm, A -> AF (every second one with RBBB beside it,
    as 2021's records carry conduction codes with the rhythm), plus one record of each special case."""
    labels = dict(line.split(",") for line in (cinc / "REFERENCE-v3.csv").read_text().split())
    names = (cinc / "RECORDS").read_text().split()
    normal = [n for n in names if labels[n] == "N"][:n_per_class]
    afib = [n for n in names if labels[n] == "A"][:n_per_class]
    spare = [n for n in names if labels[n] in "NA" and n not in normal + afib][:5]
    codes: dict[str, list[str] | None] = {n: [NSR] for n in normal}
    codes |= {n: [AF, RBBB] if i % 2 else [AF] for i, n in enumerate(afib)}
    codes |= dict(zip(spare, [[RBBB], [AF, NSR], None, [PACED, AF], [AFL]]))  # no class, two classes, no line, excluded, AFL
    folder.mkdir(parents=True)
    for name, dx in codes.items():
        shutil.copy(cinc / f"{name}.mat", folder / f"{name}.mat")
        (folder / f"{name}.hea").write_text(challenge_header((cinc / f"{name}.hea").read_text(), dx))
    (folder / "RECORDS").write_text("\n".join(codes) + "\n")
    return codes


def load(text: str) -> PipelineConfig:
    import tomllib

    return PipelineConfig.model_validate(tomllib.loads(text))


# ------------------------------------------------------------------------------------------------- the rules
def test_header_codes_reads_the_challenge_comment_line(cinc, tmp_path):
    published = (cinc / "A00002.hea").read_text()
    header = tmp_path / "A00002.hea"
    header.write_text(challenge_header(published, [AF, RBBB, AF]))
    assert header_codes(header, "Dx") == [AF, RBBB]  # in order, each once
    assert header_codes(header, "dx") == [AF, RBBB] and header_codes(header, "Age") == ["61"]
    header.write_text(published + "# Dx : 164889003 , 59118001\n")  # spaces around the separators
    assert header_codes(header, "Dx") == [AF, RBBB]
    header.write_text(challenge_header(published, None))
    assert header_codes(header, "Dx") is None
    # two #Dx: lines (a header edited by hand, or two tools' lines): both lines' codes, not the first line's alone
    header.write_text(published + f"#Dx: {AF}\n#Dx: {RBBB},{AF}\n")
    assert header_codes(header, "Dx") == [AF, RBBB]
    assert label_of_codes(header_codes(header, "Dx"), {AF: "afib", RBBB: "normal"}, set()) == f"{AF},{RBBB}"  # no class
    import wfdb

    assert wfdb.rdheader(str(tmp_path / "A00002")).sig_len == 9000  # the published lines are still what wfdb reads


def test_codes_become_one_label_or_say_why_not():
    to_class = {NSR: "normal", AF: "afib", AFL: "afib"}
    assert label_of_codes([RBBB, AF], to_class, set()) == AF  # a conduction code beside the rhythm
    assert label_of_codes([AFL, AF], to_class, set()) == AFL  # two codes of one class: that class
    assert label_of_codes([AF, PACED], to_class, {PACED}) == PACED  # an excluded code leaves the record out
    assert label_of_codes([RBBB], to_class, set()) == RBBB  # of no class
    both = label_of_codes([AF, NSR, RBBB], to_class, set())
    assert both == f"{AF},{NSR},{RBBB}" and both not in to_class
    assert classes_named(both, to_class) == {"afib": [AF], "normal": [NSR]}


def test_labels_header_settings_are_validated():
    assert DatabaseSettings(fs=500.0, labels_header="Dx").labelled_per_record
    with pytest.raises(ValueError, match="keep one"):
        DatabaseSettings(fs=500.0, labels_header="Dx", labels_csv="REFERENCE.csv")
    with pytest.raises(ValueError, match="comment field name"):
        DatabaseSettings(fs=500.0, labels_header="#Dx:")
    cfg = load(HEADER_TOML)  # class labels need not look like aux notes ("(AFIB"), level = "record" is allowed
    assert cfg.subject_word == "record" and cfg.classifier.level == "record"
    with pytest.raises(ValueError, match=r"must start with '\('"):
        load(HEADER_TOML.replace('labels_header = "Dx"', ""))


def test_records_take_the_class_their_codes_name_and_the_others_are_accounted_for(cinc, tmp_path):
    """The segments stage itself on the real files: planning reads each header's codes, each record's task reads
    the record and cuts windows of its class; a record without the line fails by name, the others say why they have
    no window."""
    from ecgpipe.stages.segments import compute_record, plan_records

    codes = write_dx_dataset(cinc, tmp_path / "data" / "cinc2017", n_per_class=2)
    cfg = load(HEADER_TOML.replace("enabled = true", "enabled = false").replace('inputs = "rhythm"', 'inputs = "cnn"')
               .replace('level = "record"', 'level = "window"'))
    units = {u.record: u for u in plan_records(cfg, tmp_path / "data", download=False)}
    assert list(units) == list(codes)
    store = str(tmp_path / "store.zarr")
    outcomes = {}
    for name, unit in units.items():
        try:
            summary, _ = compute_record(store, unit, cfg)
            outcomes[name] = (summary.labels, summary.n_windows, summary.no_window_reason)
        except RecordError as err:
            outcomes[name] = str(err)
    for name, dx in codes.items():
        got = outcomes[name]
        if dx is None:
            assert f"{name}" in got and "no '#Dx:' comment line" in got  # fails by name
        elif dx in ([NSR], [AF], [AF, RBBB], [AFL]):
            label = dx[0]
            assert got[0] == [label] and got[1] >= 1 and got[2] is None, (name, got)
        elif dx == [RBBB]:
            assert got[1] == 0 and "configured class" in got[2] and RBBB in got[2]
        elif dx == [AF, NSR]:
            assert got[1] == 0 and got[2] == f"codes of more than one class (afib: {AF}; normal: {NSR})"
        else:
            assert got[1] == 0 and "excluded" in got[2] and PACED in got[2]
    # a changed code is a changed record: its key moves, the others' stay
    name = next(n for n, dx in codes.items() if dx == [NSR])
    header = tmp_path / "data" / "cinc2017" / f"{name}.hea"
    header.write_text(header.read_text().replace(f"#Dx: {NSR}", f"#Dx: {AF}"))
    again = {u.record: u for u in plan_records(cfg, tmp_path / "data", download=False)}
    assert again[name].label == AF and again[name].key != units[name].key
    assert all(again[n].key == units[n].key for n in codes if n != name)


# ------------------------------------------------------------------------------------------- through the flow
@pytest.mark.system
def test_a_dx_labelled_database_runs_end_to_end_and_evaluates(cinc, tmp_path, prefect_server):
    """The real flow on the Dx-labelled copy: every record accounted for (used, without windows and why, failed by
    name), per-record results on the records' own classes; then ``ecgpipe evaluate`` scores the model on other real
    records labelled the same way, counting those whose codes name no class."""
    from ecgpipe.cli import main
    from flows.ecg_pipeline import run_pipeline

    codes = write_dx_dataset(cinc, tmp_path / "data" / "cinc2017", n_per_class=9)
    (tmp_path / "dx.toml").write_text(HEADER_TOML)
    report = run_pipeline(load(HEADER_TOML), str(tmp_path / "data"), str(tmp_path / "out"))
    outcomes = RecordOutcomes.model_validate(report["protocols"]["grouped_by_subject"]["per_record"]["records"])
    used = {r["record"].split("/")[-1]: r for r in outcomes.rows()}
    without = {r["record"].split("/")[-1]: r["reason"] for r in report["records_without_windows"]}
    failed = {r["record"].split("/")[-1]: r["error"] for r in report["skipped_records"]}
    assert set(used) | set(without) | set(failed) == set(codes)  # every record accounted for, once
    assert len(used) + len(without) + len(failed) == len(codes)
    assert {n for n, dx in codes.items() if dx is None} == set(failed) and all("#Dx:" in e for e in failed.values())
    assert {used[n]["label"] for n in used} == {"normal", "afib"}
    assert all(used[n]["label"] == ("afib" if codes[n][0] in (AF, AFL) else "normal") for n in used)
    assert any("more than one class" in r for r in without.values()) and any("excluded" in r for r in without.values())
    assert report["subject_word"] == "record" and report["n_subjects"] == len(used)

    # external: other real records, labelled the same way, scored by the model just trained
    labels = dict(line.split(",") for line in (cinc / "REFERENCE-v3.csv").read_text().split())
    names = [n for n in (cinc / "RECORDS").read_text().split() if n not in codes and labels[n] in "NA"][:8]
    other = tmp_path / "other" / "cinc2017"
    other.mkdir(parents=True)
    for i, name in enumerate(names):
        shutil.copy(cinc / f"{name}.mat", other / f"{name}.mat")
        dx = [RBBB] if i == 0 else [AF if labels[name] == "A" else NSR]
        (other / f"{name}.hea").write_text(challenge_header((cinc / f"{name}.hea").read_text(), dx))
    (other / "RECORDS").write_text("\n".join(names) + "\n")
    assert main(["evaluate", "--model", str(tmp_path / "out" / "model.skops"), "--config", str(tmp_path / "dx.toml"),
                 "--data-dir", str(tmp_path / "other"), "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    acc = ev["accounting"]
    assert acc["records"] == 8 and acc["unknown_label"] == 1 and acc["scored"] == 7 and acc["failed"] == 0
    assert acc["training_records"] == 0


def test_evaluate_says_a_header_without_its_label_line_in_the_run_s_words(tmp_path):
    """A record of a header-labelled dataset without its label line is not scored, and evaluate says why as the run
    does (it used to blame a labels CSV that the dataset does not have); a record without a header says that."""
    from ecgpipe.config import DatabaseSettings, load_config
    from ecgpipe.evaluate import _what_to_score

    dataset = load_config("cinc2017")
    header = DatabaseSettings(fs=300.0, lead=[0], labels_header="Dx")
    (tmp_path / "A1.hea").write_text("A1 1 300 9000\nA1.mat 16+24 1000/mV 16 0 0 0 0 ECG\n")
    _, _, problem = _what_to_score(("db", tmp_path, header, "A1", {}, None), dataset, set())
    assert problem[0] == "no_label_row" and problem[1] == "not scored: no '#Dx:' comment line with a label in its header (databases.<db>.labels_header)"
    _, _, problem = _what_to_score(("db", tmp_path, header, "A2", {}, None), dataset, set())
    assert problem[1] == f"not scored: no WFDB header {tmp_path}/A2.hea to read its '#Dx:' label line from (databases.<db>.labels_header labels WFDB records only)"
    csv = DatabaseSettings(fs=300.0, lead=[0], labels_csv="REFERENCE.csv")
    assert _what_to_score(("db", None, csv, "A1", {}, None), dataset, set())[2][1] == "not scored: no row for this record in REFERENCE.csv"
    assert _what_to_score(("db", None, csv, "A1", {"A1": ""}, None), dataset, set())[2][1] == "not scored: its row in REFERENCE.csv has no label"
