"""Files as downloads, copies and other tools leave them, made from real PhysioNet files (found by an adversarial
review on 2026-12-07): an annotation file cut short, a RECORDS file saved as UTF-16, record names that climb out of
their database folder, rhythm labels written in another case, headers without a rate, with a length of 0, or without
a gain, an empty signal file, a header missing a signal line, labels CSVs with comment lines and empty subject cells.
Each was read silently wrong, crashed with a traceback, or was named with a misleading cause."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from ecgpipe.config import ConfigError, DatabaseSettings, load_config
from ecgpipe.errors import EcgpipeError
from ecgpipe.labels import LabelsError, check_subject_column, near_labels, read_labels_table
from ecgpipe.records import RecordError, list_records, read_episodes, read_record

MITDB = DatabaseSettings(lead=["MLII", "V5"], fs=360.0)


def _copy(src: Path, dst: Path, record: str, suffixes=(".hea", ".dat", ".atr")) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for suffix in suffixes:
        shutil.copy(src / f"{record}{suffix}", dst / f"{record}{suffix}")
    return dst


def test_an_annotation_file_cut_short_is_refused_by_name_not_read_as_fewer_rhythm_changes(physionet, tmp_path):
    """mitdb 201's annotations cut at an even byte were read without a word: 28 of its 35 episodes, the last normal
    one running to the record's end over ten minutes of AF. A WFDB annotation file ends with a zero word."""
    folder = _copy(physionet / "mitdb", tmp_path / "db", "201")
    whole = read_record(folder, "mitdb", "201", MITDB)
    data = (physionet / "mitdb" / "201.atr").read_bytes()
    assert data[-2:] == b"\0\0" and len(whole.episodes) == 35
    for cut, why in ((3000, "no end-of-file word"), (3001, "an odd number")):
        (folder / "201.atr").write_bytes(data[:cut])
        with pytest.raises(RecordError, match=rf"annotation file .*201\.atr is cut short \({cut} bytes, {why}.*Fetch it again"):
            read_record(folder, "mitdb", "201", MITDB)
    (folder / "201.atr").write_bytes(b"")
    with pytest.raises(RecordError, match="201.atr is empty"):
        read_episodes(str(folder / "201"), "atr", 650000)
    # every published annotation file of both databases ends so, and is read as before
    for db in ("mitdb", "vfdb"):
        for record in list_records(physionet / db):
            assert (physionet / db / f"{record}.atr").read_bytes()[-2:] == b"\0\0"


def test_a_records_file_that_is_not_utf8_is_named_not_a_traceback(physionet, tmp_path):
    from ecgpipe.stages.segments import plan_records

    folder = tmp_path / "data" / "mitdb"
    _copy(physionet / "mitdb", folder, "100")
    (folder / "RECORDS").write_bytes("100\n".encode("utf-16"))  # Windows Notepad's "Unicode"
    with pytest.raises(EcgpipeError, match=r"mitdb/RECORDS: not UTF-8 text .*save it as UTF-8"):
        list_records(folder)
    cfg = load_config("paper4", {"databases": {"mitdb": {}}})
    cfg = cfg.model_copy(update={"databases": {"mitdb": cfg.databases["mitdb"]}})
    with pytest.raises(EcgpipeError, match="not UTF-8 text"):
        plan_records(cfg, tmp_path / "data")


@pytest.mark.parametrize("name", ["../extra/100", "sub/../../100", "/tmp/100", "C:/data/100"])
def test_record_names_outside_their_database_folder_are_refused_before_anything_is_written(physionet, tmp_path, name):
    """A RECORDS line or a labels CSV row `../extra/A00002` stored that record's windows outside the database's part
    of the store (`records/extra/...`, another database's name), and a deeper one outside the store itself."""
    folder = tmp_path / "db"
    folder.mkdir()
    (folder / "RECORDS").write_text(f"100\n{name}\n")
    with pytest.raises(EcgpipeError, match=rf"RECORDS, line 2: record '{name}' is outside the database folder"):
        list_records(folder)
    (folder / "labels.csv").write_text(f"100,N\n{name},A\n")
    with pytest.raises(LabelsError, match=rf"labels.csv, line 2: record '{name}' is outside the database folder"):
        read_labels_table(folder, "labels.csv")
    with pytest.raises(ConfigError, match="outside the database folder"):
        load_config("paper4", {"databases": {"mitdb": {"records": ["100", name]}}})
    (folder / "RECORDS").write_text("100\nsub/../100\np00/101\n")  # inside it: read as the records they name
    assert list_records(folder) == ["100", "p00/101"]


def test_records_lines_with_a_comment_after_the_name_or_a_csv_row(tmp_path):
    (tmp_path / "RECORDS").write_text("# index\n100 # checked by hand\n101\t# noisy\n")
    assert list_records(tmp_path) == ["100", "101"]
    (tmp_path / "RECORDS").write_text("100\n101,A\n")
    with pytest.raises(EcgpipeError, match=r"RECORDS, line 2: '101,A': RECORDS lists one record name per line"):
        list_records(tmp_path)
    for name in ("Smith, J", "rec #1"):  # a record whose files are so named is that record
        (tmp_path / f"{name}.edf").write_bytes(b"")
    (tmp_path / "RECORDS").write_text("Smith, J\nrec #1\n")
    assert list_records(tmp_path) == ["Smith, J", "rec #1"]


def test_rhythm_labels_that_differ_from_a_configured_one_in_case_are_said_not_dropped_silently(physionet, tmp_path):
    """mitdb 201 with its `(AFIB` notes written `(afib`: its AF windows were left out without a word (the report's
    "labels configured but found in no record" lists only labels no record has)."""
    from ecgpipe.stages.segments import compute_record, plan_records
    from ecgpipe.store import prepare_store

    src = physionet / "mitdb"
    folder = _copy(src, tmp_path / "data" / "mitdb", "201", (".hea", ".dat"))
    ann = wfdb.rdann(str(src / "201"), "atr")
    notes = [a.replace("(AFIB", "(afib") for a in ann.aux_note]
    wfdb.wrann("201", "atr", ann.sample, symbol=ann.symbol, aux_note=notes, write_dir=str(folder))
    (folder / "RECORDS").write_text("201\n")
    cfg = load_config("paper4", {"databases": {"mitdb": {"records": ["201"]}}})
    cfg = cfg.model_copy(update={"databases": {"mitdb": cfg.databases["mitdb"]}})
    assert near_labels(["(afib", "(N", "(B"], cfg.label_to_class, set()) == [("(afib", "(AFIB")]
    assert near_labels(["( AFIB "], {"(AFIB": "afib"}, {"( AFIB "}) == []  # excluded on purpose: no word
    store = str(tmp_path / "store.zarr")
    prepare_store(store)
    summary, _ = compute_record(store, plan_records(cfg, tmp_path / "data")[0], cfg)
    assert any("rhythm label '(afib' is not used: it differs from the configured '(AFIB' only in case" in w
               for w in summary.read_warnings), summary.read_warnings


def test_headers_without_a_rate_with_a_length_of_0_or_without_a_gain_and_an_empty_signal_file(cinc, tmp_path):
    folder = tmp_path / "cinc"
    _copy(cinc, folder, "A00002", (".hea", ".mat"))
    settings = DatabaseSettings(lead=[0], fs="any")
    header = (folder / "A00002.hea").read_text()
    reference = read_record(folder, "cinc", "A00002", settings, require_annotations=False, warn=False)

    (folder / "A00002.hea").write_text(header.replace("A00002 1 300 9000 11:05:25 1/05/2000", "A00002 1"))
    no_rate = read_record(folder, "cinc", "A00002", settings, require_annotations=False, warn=False)
    assert no_rate.fs == 250 and any("gives no sampling frequency: read at WFDB's default of 250 Hz" in n for n in no_rate.notes)
    with pytest.raises(RecordError, match=r"sampling rate 250 Hz \(its header gives none: WFDB's default\), but database cinc is configured for 300 Hz"):
        read_record(folder, "cinc", "A00002", DatabaseSettings(lead=[0], fs=300.0), require_annotations=False)

    (folder / "A00002.hea").write_text(header.replace("A00002 1 300 9000 11:05:25 1/05/2000", "A00002 1 300 0"))
    with pytest.raises(RecordError, match="record line gives a signal length of 0 .*write the record's length in that field"):
        read_record(folder, "cinc", "A00002", settings, require_annotations=False)

    (folder / "A00002.hea").write_text(header.replace("A00002.mat 16+24 1000/mV 16 0 128 0 0 ECG", "A00002.mat 16+24"))
    no_gain = read_record(folder, "cinc", "A00002", settings, require_annotations=False, warn=False)
    assert any("no ADC gain in its header: read at WFDB's default of 200 units per mV" in n for n in no_gain.notes)
    assert np.allclose(no_gain.signal, reference.signal * 1000 / 200)  # what it means: said, not hidden

    (folder / "A00002.hea").write_text(header.replace("A00002 1 300 9000 11:05:25 1/05/2000", "A00002 1 300"))
    for content in (b"", b"MATLAB 5.0"):  # empty, or cut inside the 24 bytes before the first sample
        (folder / "A00002.mat").write_bytes(content)
        with pytest.raises(RecordError, match=rf"signal file .*A00002\.mat holds no sample \({len(content)} bytes, offset 24\)"):
            read_record(folder, "cinc", "A00002", settings, require_annotations=False)


def test_a_header_missing_a_signal_line_is_hinted_at_by_its_file_being_twice_as_long(physionet, tmp_path):
    folder = _copy(physionet / "mitdb", tmp_path / "db", "100")
    lines = (folder / "100.hea").read_text().splitlines()
    record_line = lines[0].split()
    record_line[1] = "1"
    first_signal = lines[1].split()[:6]  # no checksum: nothing else tells the missing lead
    (folder / "100.hea").write_text(" ".join(record_line) + "\n" + " ".join(first_signal) + " MLII\n")
    rec = read_record(folder, "mitdb", "100", DatabaseSettings(lead=[0], fs=360.0), warn=False)
    assert any("2 times as many: a signal line missing from the header?" in n for n in rec.notes), rec.notes


def test_labels_csv_comment_lines_and_empty_subject_cells(tmp_path, physionet):
    """A `#` line holding a comma became a record named '# exported ...'; an empty subject cell stopped the run even
    where subjects were not read from the CSV."""
    (tmp_path / "labels.csv").write_text("# exported 2024-01-02, by hand\nrecord,label,subject\nA1,N,p1\nA2,A,\n# end\n")
    table = read_labels_table(tmp_path, "labels.csv")
    assert table.labels == {"A1": "N", "A2": "A"} and table.subjects == {"A1": "p1"}
    check_subject_column(DatabaseSettings(labels_csv="labels.csv", subject="record"), table, tmp_path)  # not read: fine
    with pytest.raises(LabelsError, match=r"1 record\(s\) have an empty 'subject' cell \(e.g. A2\)"):
        check_subject_column(DatabaseSettings(labels_csv="labels.csv", subject="labels_csv"), table, tmp_path)
    # a record that same_subject maps to another database's patient (or another record) needs no cell of its own
    check_subject_column(DatabaseSettings(labels_csv="labels.csv", subject="labels_csv", same_subject={"A2": "mitdb:118"}),
                         table, tmp_path)
    (tmp_path / "labels.csv").write_text("label,record\n# checked, by JB\nN,A1\n")  # whatever the columns' order
    assert read_labels_table(tmp_path, "labels.csv").labels == {"A1": "N"}


def test_a_multi_segment_header_without_its_total_length_is_read_as_its_segments_sum(physionet, tmp_path):
    """WFDB's record-line length is optional in a multi-segment header too; it read "do not add up to its None
    samples"."""
    from test_multi_segment import make_multi_segment

    folder = tmp_path / "mimicish"
    name = make_multi_segment(folder, physionet)
    settings = DatabaseSettings(lead=["MLII"])
    whole = read_record(str(folder), "mimic", name, settings, nan_policy="drop")
    record_line, *rest = (folder / f"{name}.hea").read_text().splitlines()
    (folder / f"{name}.hea").write_text(" ".join(record_line.split()[:3]) + "\n" + "\n".join(rest) + "\n")
    bare = read_record(str(folder), "mimic", name, settings, nan_policy="drop")
    assert np.array_equal(bare.signal, whole.signal, equal_nan=True) and bare.episodes == whole.episodes


def test_an_edf_lead_without_a_unit_and_an_edf_file_longer_than_its_header_are_said(tmp_path):
    from ecgpipe.records import read_edf_record

    from conftest import write_edf_plus

    path = tmp_path / "rec.edf"
    rng = np.random.default_rng(0)
    write_edf_plus(path, rng.integers(-2000, 2000, 250 * 12), 250, (-5.0, 5.0), (-32768, 32767))
    data = bytearray(path.read_bytes())
    unit_at = 256 + 2 * 16 + 2 * 80  # the first signal's 8-byte unit field, after the labels and transducers
    assert data[unit_at:unit_at + 8].decode().strip() == "uV"
    data[unit_at:unit_at + 8] = b" " * 8
    path.write_bytes(bytes(data) + b"\0" * 100)  # and 100 bytes beyond its data records
    rec = read_edf_record(str(path), DatabaseSettings(lead=["MLII"], fs="any"))
    assert any("lead MLII: no physical unit in its EDF header: read as mV" in n for n in rec.notes), rec.notes
    assert any("holds 100 bytes more than its header's 12 data records" in n for n in rec.notes), rec.notes


def test_an_out_below_a_file_is_told_as_the_system_resolves_the_path(tmp_path):
    """`--out` is checked as the system resolves it: `link/../out/run`, where link leads to a folder elsewhere, lies in
    that folder's parent, not beside the link (where ./out may be a file)."""
    from argparse import Namespace

    from ecgpipe.cli_checks import out_is_a_file

    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere" / "deep")
    (tmp_path / "out").write_text("a file beside the link\n")
    assert out_is_a_file(Namespace(out=str(tmp_path / "link" / ".." / "out" / "run"))) is None  # elsewhere/out/run
    assert "is a file, not a folder" in out_is_a_file(Namespace(out=str(tmp_path / "out" / "run")))
    assert out_is_a_file(Namespace(out="s3://bucket/run")) is None
