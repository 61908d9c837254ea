"""Records as other corpora ship them, made from real PhysioNet files edited the way those corpora differ: units
written "µV" (UTF-8 or Latin-1), an uncalibrated gain, signal lines without a description, a record line without a
length, leads stored at two samples per frame, Icentia11k's ")" closing a rhythm, hierarchical RECORDS files
("p00/p000020/"), EDF files named ".EDF" or labelled "ECG V5", labels CSVs with a space after each comma, and rates
no small ratio resamples (MIMIC-IV's 249.89 Hz). Each is read as it means, or refused naming the file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import wfdb

from ecgpipe.config import DatabaseSettings
from ecgpipe.records import RecordError, list_records, read_record, rhythm_episodes

from conftest import write_edf_plus


def _settings(**kw) -> DatabaseSettings:
    return DatabaseSettings(**{"lead": [0], "fs": "any", **kw})


def _cinc_copy(cinc, tmp_path, record: str = "A00002"):
    folder = tmp_path / "cinc"
    folder.mkdir(exist_ok=True)
    for suffix in (".hea", ".mat"):
        shutil.copy(cinc / f"{record}{suffix}", folder / f"{record}{suffix}")
    return folder


def _read(folder, record, **kw):
    return read_record(folder, "db", record, _settings(**kw), require_annotations=False, warn=False)


def test_a_header_unit_of_microvolts_is_read_as_microvolts_in_utf8_and_latin1(cinc, tmp_path):
    """wfdb parses the unit "µV" as "V": a microvolt lead would be read a million-fold too large, silently."""
    folder = _cinc_copy(cinc, tmp_path)
    reference = _read(folder, "A00002").signal
    header = (folder / "A00002.hea").read_bytes()
    (folder / "A00002.hea").write_bytes(header.replace(b"1000/mV", "1000/µV".encode()))
    np.testing.assert_allclose(_read(folder, "A00002").signal, reference * 1e-3)
    (folder / "A00002.hea").write_bytes(header.replace(b"1000/mV", b"1000/\xb5V"))  # Latin-1, as older tools wrote it
    np.testing.assert_allclose(_read(folder, "A00002").signal, reference * 1e-3)
    (folder / "A00002.hea").write_bytes(header.replace(b"1000/mV", b"1000/mmHg"))
    with pytest.raises(RecordError, match=r"A00002: lead ECG is in 'mmHg'"):
        _read(folder, "A00002")


def test_an_uncalibrated_gain_a_missing_description_and_a_missing_length_are_read_and_said(cinc, tmp_path):
    folder = _cinc_copy(cinc, tmp_path)
    reference = _read(folder, "A00002")
    header = (folder / "A00002.hea").read_text()
    # WFDB's optional fields left out: the signal line's init value, checksum, block size and description
    (folder / "A00002.hea").write_text(header.replace("A00002.mat 16+24 1000/mV 16 0 128 0 0 ECG", "A00002.mat 16+24 1000/mV 16 0"))
    bare = _read(folder, "A00002")
    assert bare.leads == ["ch0"] and np.array_equal(bare.signal, reference.signal)
    # ... and the record line's length: taken from the signal file, as wfdb reads it
    (folder / "A00002.hea").write_text(header.replace("A00002 1 300 9000 11:05:25 1/05/2000", "A00002 1 300"))
    no_length = _read(folder, "A00002")
    assert no_length.signals.shape == reference.signals.shape and np.array_equal(no_length.signal, reference.signal)
    (folder / "A00002.hea").write_text(header.replace("1000/mV", "0/mV"))
    uncalibrated = _read(folder, "A00002")
    assert any("ADC gain 0 in its header (uncalibrated)" in note for note in uncalibrated.notes), uncalibrated.notes


def test_a_lead_stored_at_two_samples_per_frame_is_read_at_its_own_rate(physionet, tmp_path):
    """mitdb 100's MLII at 360 Hz stored as two samples per 180-Hz frame beside V5 at one (every other sample), with
    the checksums over every sample, as a multi-frequency record is written: MLII comes back at 360 Hz, sample for
    sample (wfdb's default would average each frame's two into one, at 180 Hz, and the checksum would not match)."""
    ref = read_record(physionet / "mitdb", "mitdb", "100", _settings(lead=["MLII"]), require_annotations=False)
    digital = wfdb.rdrecord(str(physionet / "mitdb" / "100"), physical=False, sampto=360 * 60).d_signal
    mlii, v5 = digital[:, 0].astype(np.int16), digital[::2, 1].astype(np.int16)
    frames = len(v5)
    interleaved = np.column_stack([mlii.reshape(frames, 2), v5]).ravel()
    folder = tmp_path / "spf"
    folder.mkdir()
    interleaved.astype("<i2").tofile(folder / "spf.dat")
    checksum = lambda x: int(x.astype(np.int64).sum()) % 65536 - (65536 if int(x.astype(np.int64).sum()) % 65536 > 32767 else 0)  # noqa: E731
    (folder / "spf.hea").write_text(f"spf 2 180 {frames}\n"
                                    f"spf.dat 16x2 200 11 1024 {mlii[0]} {checksum(mlii)} 0 MLII\n"
                                    f"spf.dat 16 200 11 1024 {v5[0]} {checksum(v5)} 0 V5\n")
    rec = read_record(folder, "db", "spf", _settings(lead=["MLII"]), require_annotations=False, record_label="N")
    assert rec.fs == 360.0 and rec.signals.shape == (1, 360 * 60)
    np.testing.assert_allclose(rec.signal, ref.signal[: 360 * 60])
    assert rec.episodes[0].end == 360 * 60  # the record's label spans its samples, not its frames
    v5_rec = read_record(folder, "db", "spf", _settings(lead=["V5"]), require_annotations=False)
    assert v5_rec.fs == 180.0 and v5_rec.signals.shape == (1, frames)
    with pytest.raises(RecordError, match=r"spf: leads \['MLII', 'V5'\] are stored at different numbers of samples per frame"):
        read_record(folder, "db", "spf", _settings(lead=["MLII"], second_lead=["V5"]), require_annotations=False, n_leads=2)
    with pytest.raises(RecordError, match=r"sampling rate 360 Hz, but database db is configured for 180 Hz"):
        read_record(folder, "db", "spf", _settings(lead=["MLII"], fs=180.0), require_annotations=False)


def test_predict_writes_and_compares_frame_times_on_a_multi_frequency_record(physionet, tmp_path):
    """WFDB annotation times count frames: predict's annotation file of a record whose lead is stored at two samples
    per frame is written in frames (a reader of the record finds each episode where predict put it), and its
    reference annotations, in frames, are compared at the right seconds."""
    from test_predict_many import _model

    from ecgpipe.model import load_model
    from ecgpipe.predict import compare_with_reference, predict_loaded, read_new_record, write_annotations

    digital = wfdb.rdrecord(str(physionet / "mitdb" / "100"), physical=False, sampto=360 * 60).d_signal
    mlii, v5 = digital[:, 0].astype(np.int16), digital[::2, 1].astype(np.int16)
    folder = tmp_path / "spf"
    folder.mkdir()
    np.column_stack([mlii.reshape(len(v5), 2), v5]).ravel().astype("<i2").tofile(folder / "spf.dat")
    (folder / "spf.hea").write_text(f"spf 2 180 {len(v5)}\nspf.dat 16x2 200 11 1024 0 0 0 MLII\nspf.dat 16 200 11 1024 0 0 0 V5\n")
    wfdb.wrann("spf", "atr", np.array([0, 180 * 30]), ["+", "+"], aux_note=["(N", "(AFIB"], fs=180, write_dir=str(folder))
    model = load_model(_model(tmp_path / "model.skops", physionet))
    rec = read_new_record(str(folder / "spf"), model)
    assert rec.fs == 360.0 and rec.samples_per_frame == 2
    pred = predict_loaded(model, rec)
    agreement = compare_with_reference(pred, model, "atr")
    assert agreement["per_class"]["normal"]["seconds"] == agreement["per_class"]["afib"]["seconds"] == 30  # not 15 / 45
    write_annotations(pred, tmp_path / "out", "pred", "spf")
    written = wfdb.rdann(str(tmp_path / "out" / "spf"), "pred")
    assert written.fs == 180
    np.testing.assert_allclose(written.sample / 180, [ep.start_s for ep in pred.episodes], atol=1 / 180)


def test_a_closing_parenthesis_ends_a_rhythm_episode_as_icentia11k_marks_it(physionet, tmp_path):
    eps = rhythm_episodes([0, 2500, 5000, 7500, 10000, 12500], ["+"] * 6,
                          ["(N", ")", "(AFIB", ")\x00", "(N", " ) "], 30000)
    assert [(e.label, e.start, e.end) for e in eps] == [("(N", 0, 2500), ("(AFIB", 5000, 7500), ("(N", 10000, 12500)]
    # a ')' and the next '(' at one sample, in either order in the file: the new rhythm opens
    for notes in (["(N", "(AFIB", ")", ")"], ["(N", ")", "(AFIB", ")"]):
        eps = rhythm_episodes([0, 100, 100, 300], ["+"] * 4, notes, 400)
        assert [(e.label, e.start, e.end) for e in eps] == [("(N", 0, 100), ("(AFIB", 100, 300)], notes
    # in a real record's annotation file: the unlabelled stretches yield no window of the rhythm before them
    folder = tmp_path / "icentia"
    folder.mkdir()
    for suffix in (".hea", ".dat"):
        shutil.copy(physionet / "mitdb" / f"100{suffix}", folder / f"100{suffix}")
    wfdb.wrann("100", "atr", np.array([0, 36000, 72000, 108000]), ["+"] * 4, aux_note=["(N", ")", "(AFIB", ")"],
               write_dir=str(folder))
    rec = read_record(folder, "mitdb", "100", _settings(lead=["MLII"]))
    assert [(e.label, e.start, e.end) for e in rec.episodes] == [("(N", 0, 36000), ("(AFIB", 72000, 108000)]


def test_a_records_line_naming_a_folder_reads_that_folders_records(physionet, tmp_path):
    """PhysioNet's hierarchical databases list folders (MIMIC-III's "p00/p000020/"), each with a RECORDS of its own."""
    db = tmp_path / "nested"
    for folder, records in (("p00/p000020", ["100"]), ("p00/p000030", ["101", "103"])):
        (db / folder).mkdir(parents=True)
        for record in records:
            for suffix in (".hea", ".dat", ".atr"):
                shutil.copy(physionet / "mitdb" / f"{record}{suffix}", db / folder / f"{record}{suffix}")
        (db / folder / "RECORDS").write_text("\n".join(records) + "\n")
    (db / "p00" / "RECORDS").write_text("p000020/\np000030/\n")
    (db / "RECORDS").write_text("p00/\n")
    assert list_records(db) == ["p00/p000020/100", "p00/p000030/101", "p00/p000030/103"]
    rec = read_record(db, "mitdb", "p00/p000030/103", _settings(lead=["MLII"], fs=360.0))
    assert rec.signals.shape[1] == 650000 and rec.episodes
    (db / "p00" / "p000030" / "RECORDS").unlink()
    with pytest.raises(FileNotFoundError, match=r"p000030/RECORDS not found"):
        list_records(db)


def test_edf_files_named_in_capitals_or_labelled_as_edf_plus_says_are_read_in_training(physionet, tmp_path):
    """A recorder's "HOLTER.EDF", its leads labelled "ECG V5" as EDF+ recommends, its unit "µV" in Latin-1."""
    from ecgpipe.keys import edf_record_file
    from ecgpipe.leads import choose_lead

    header = wfdb.rdheader(str(physionet / "mitdb" / "100"))
    digital = wfdb.rdrecord(str(physionet / "mitdb" / "100"), channels=[0], physical=False, sampto=360 * 30).d_signal[:, 0]
    gain, base = header.adc_gain[0], header.baseline[0]
    folder = tmp_path / "holter"
    folder.mkdir()
    write_edf_plus(folder / "HOLTER.EDF", digital, 360, ((-2048 - base) / gain, (2047 - base) / gain), (-2048, 2047))
    raw = (folder / "HOLTER.EDF").read_bytes()
    (folder / "HOLTER.EDF").write_bytes(raw.replace(b"MLII            ", b"ECG V5          ", 1).replace(b"uV      ", b"\xb5V      ", 1))
    assert edf_record_file(folder, "HOLTER") == str(folder / "HOLTER.EDF")
    rec = read_record(folder, "db", "HOLTER", _settings(lead=["MLII", "V5", 0]), require_annotations=False)
    assert rec.leads == ["ECG V5"] and rec.fs == 360.0
    ref = read_record(physionet / "mitdb", "mitdb", "100", _settings(lead=["MLII"]), require_annotations=False)
    assert np.abs(rec.signal - ref.signal[: 360 * 30]).max() < 1e-3  # µV read as µV
    assert choose_lead(["ECG I", "ECG II", "ECG V5"], ["II", 0]) == 1 and choose_lead(["ECG", "ECG"], ["ECG"]) == 0


def test_a_labels_csv_with_a_space_after_each_comma_and_a_missing_header_file_are_read_and_named(tmp_path):
    from ecgpipe.labels import check_record_label, read_labels_table

    (tmp_path / "labels.csv").write_text('"Record", "Label", "Subject"\n"A00002", "N", "p1"\n"A00004", "A", "p2"\n')
    table = read_labels_table(tmp_path, "labels.csv")
    assert table.labels == {"A00002": "N", "A00004": "A"} and table.subjects == {"A00002": "p1", "A00004": "p2"}
    settings = DatabaseSettings(labels_header="Dx")
    with pytest.raises(RecordError, match=r"E00010: no WFDB header .*E00010.hea to read its '#Dx:' label line from"):
        check_record_label(str(tmp_path / "E00010"), None, settings, {"N"}, set())
    (tmp_path / "E00010.hea").write_text("E00010 1 500 5000\n")
    with pytest.raises(RecordError, match=r"no '#Dx:' comment line with a label in its header"):
        check_record_label(str(tmp_path / "E00010"), None, settings, {"N"}, set())


def test_rates_without_a_small_ratio_are_resampled_exactly_or_within_ten_ppm():
    from fractions import Fraction

    from ecgpipe.segments import resample, resample_ratio

    assert resample_ratio(249.89, 250.0) == Fraction(25000, 24989)  # MIMIC-IV: 4 samples per 62.4725-Hz frame
    assert resample_ratio(360.0, 250.0) == Fraction(25, 36)
    assert resample_ratio(300.0003, 250.0) == Fraction(5, 6)  # 1 ppm off: the nearest small ratio
    t = np.arange(int(249.89 * 60)) / 249.89
    out = resample(np.sin(2 * np.pi * 5 * t), 249.89, 250.0)
    assert len(out) == 15000
    np.testing.assert_allclose(out[500:-500], np.sin(2 * np.pi * 5 * np.arange(15000) / 250.0)[500:-500], atol=2e-3)


def test_predict_names_annotation_files_wfdb_can_write():
    from ecgpipe.predict_outputs import output_names

    names = output_names(["/a/Patient 01 2024.01.05.edf", "/a/Patient_01_2024_01_05.edf", "/b/100"])
    assert names["/b/100"] == "100"
    # two files whose names become one: told apart as records of one name are (the last one unnumbered)
    assert [names[p] for p in list(names)[:2]] == ["1-a/Patient_01_2024_01_05", "a/Patient_01_2024_01_05"]
