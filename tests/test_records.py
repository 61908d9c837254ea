"""Reading real WFDB records, and a clear error for every kind of broken copy."""


import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import wfdb

from ecgpipe.config import DatabaseSettings
from ecgpipe.databases import subject_id
from ecgpipe.records import RecordError, read_record, rhythm_episodes

from conftest import copy_records

MITDB = DatabaseSettings(lead=["MLII", "V5"], fs=360.0)


def test_rhythm_episodes_last_until_next_change_and_skip_lead_in():
    eps = rhythm_episodes(
        samples=[10, 50, 60, 90],
        symbols=["+", "N", "+", "+"],
        aux_notes=["(N\x00", "", "(AFIB", " (VT "],
        sig_len=100,
    )
    assert [(e.label, e.start, e.end) for e in eps] == [("(N", 10, 60), ("(AFIB", 60, 90), ("(VT", 90, 100)]


def test_real_record_episodes_match_annotation_file(physionet):
    rec = read_record(physionet / "mitdb", "mitdb", "201", MITDB)
    ann = wfdb.rdann(str(physionet / "mitdb" / "201"), "atr")
    rhythm = [(s, a.strip("\x00")) for s, sym, a in zip(ann.sample, ann.symbol, ann.aux_note) if sym == "+"]
    assert [(e.start, e.label) for e in rec.episodes] == rhythm
    assert rec.episodes[-1].end == 650000 and rec.lead == "MLII" and rec.fs == 360
    assert rec.signal.shape == (650000,) and rec.signal.dtype == np.float64
    # physical units: an ECG in mV stays within a few mV
    assert 0.05 < np.std(rec.signal) < 5


def test_lead_preference_falls_back_when_mlii_is_absent(physionet):
    assert read_record(physionet / "mitdb", "mitdb", "102", MITDB).lead == "V5"
    assert read_record(physionet / "mitdb", "mitdb", "114", MITDB).lead == "MLII"  # MLII is the second channel there


def test_records_of_one_subject_share_an_id():
    same = {"202": "201"}
    assert subject_id("mitdb", "202", same) == subject_id("mitdb", "201", same) == "mitdb:201"
    assert subject_id("mitdb", "203", same) == "mitdb:203"


@pytest.fixture
def broken_dir(tmp_path, physionet):
    copy_records(physionet, tmp_path, "mitdb", ["100", "101"])
    return tmp_path / "mitdb"


def _error(folder, record="100", settings=MITDB, nan_policy="error", n_leads=1) -> str:
    with pytest.raises(RecordError) as err:
        read_record(folder, "mitdb", record, settings, nan_policy=nan_policy, n_leads=n_leads)
    assert err.value.record_path.endswith(record)
    return str(err.value)


def test_missing_record(broken_dir):
    msg = _error(broken_dir, record="999")
    assert "999.hea not found" in msg


def test_truncated_signal_file(broken_dir):
    dat = broken_dir / "100.dat"
    dat.write_bytes(dat.read_bytes()[:300000])
    msg = _error(broken_dir)
    assert "100" in msg and ("truncated" in msg or "checksum" in msg or "unreadable" in msg)


def test_altered_signal_file_fails_the_checksum(broken_dir):
    dat = broken_dir / "100.dat"
    data = bytearray(dat.read_bytes())
    data[1000:1003] = bytes([0, 0, 0]) if data[1000:1003] != bytes(3) else bytes([1, 1, 1])
    dat.write_bytes(bytes(data))
    assert "checksum mismatch" in _error(broken_dir)


def test_malformed_header(broken_dir):
    (broken_dir / "100.hea").write_text("100 two 360 650000\nthis is not a signal line\n")
    msg = _error(broken_dir)
    assert "malformed header" in msg and "100.hea" in msg


def test_missing_annotation_file(broken_dir):
    (broken_dir / "100.atr").unlink()
    assert "annotation file" in _error(broken_dir) and "100.atr not found" in _error(broken_dir)


def test_missing_signal_file(broken_dir):
    (broken_dir / "100.dat").unlink()
    assert "signal file" in _error(broken_dir)


def test_a_signal_file_longer_than_its_header_says_is_not_read_short_in_silence(broken_dir):
    """A header whose sample count was cut (its checksum, 0 in CinC's headers, checks nothing then) would lose the
    record's end without a word, wfdb reading only sig_len samples: a warning names the file and the bytes left
    unread (not an error: WFDB lets a header name part of a longer file); checksum = 'off' silences it."""
    header = broken_dir / "100.hea"
    lines = header.read_text().splitlines()
    lines[0] = lines[0].replace(" 650000", " 648000")
    lines[1:3] = [" ".join(line.split()[:6] + ["0"] + line.split()[7:]) for line in lines[1:3]]  # checksums: none
    header.write_text("\n".join(lines) + "\n")
    warned = f"signal file {broken_dir / '100.dat'} holds 6000 bytes more than the header's 648000 samples imply (1944000)"
    with pytest.warns(UserWarning, match=re.escape(warned)):
        rec = read_record(broken_dir, "mitdb", "100", MITDB)
    assert rec.signal.shape == (648000,)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = read_record(broken_dir, "mitdb", "100", DatabaseSettings(lead=["MLII"], fs=360.0, checksum="off"))
    assert rec.signal.shape == (648000,) and not [w for w in caught if "bytes more" in str(w.message)]


def test_a_lead_name_matches_without_regard_to_case_and_spaces_and_a_miss_says_how_to_give_an_index(broken_dir):
    rec = read_record(broken_dir, "mitdb", "100", DatabaseSettings(lead=["ml ii"], fs=360.0))
    assert rec.lead == "MLII"
    first = read_record(broken_dir, "mitdb", "100", DatabaseSettings(lead=["v5", "MLII"], fs=360.0))
    assert first.lead == "V5"  # the first choice, loosely matched, before the next one
    from ecgpipe.leads import choose_lead

    # predict's merged list (names, then an index as the last resort): a loose name beats the index
    assert choose_lead(["V1", "ml ii"], ["MLII", "V5", 0]) == 1 and choose_lead(["V1", "V2"], ["MLII", "V5", 0]) == 0
    assert choose_lead(["V5", "mlii"], ["MLII", "V5"]) == 1  # the first choice, loosely, before the second exactly
    assert "a channel index chooses a lead whatever its name: databases.<db>.lead = [0]" in _error(
        broken_dir, settings=DatabaseSettings(lead=["V9"], fs=360.0))


def test_sampling_rate_and_lead_must_match_the_config(broken_dir):
    assert "sampling rate 360" in _error(broken_dir, settings=DatabaseSettings(lead=["MLII"], fs=250.0))
    assert "no lead matching ['V9']" in _error(broken_dir, settings=DatabaseSettings(lead=["V9"], fs=360.0))
    second = _error(broken_dir, settings=DatabaseSettings(lead=["MLII"], second_lead=["V9"], fs=360.0), n_leads=2)
    assert "second lead (second_lead): no lead matching ['V9']" in second and "other than the first lead 'MLII'" in second


def _write_record_with_nans(folder, name="nanrec"):
    fs = 250
    t = np.arange(fs * 20) / fs
    sig = np.sin(2 * np.pi * 1.2 * t)[:, None]
    sig[1000:1010, 0] = np.nan
    wfdb.wrsamp(name, fs=fs, units=["mV"], sig_name=["ECG"], p_signal=sig, fmt=["16"], write_dir=str(folder))
    wfdb.wrann(name, "atr", np.array([0]), np.array(["+"]), aux_note=["(N"], write_dir=str(folder))


def test_nan_samples_are_an_error_or_dropped(tmp_path):
    _write_record_with_nans(tmp_path)
    settings = DatabaseSettings(lead=[0], fs=250.0)
    with pytest.raises(RecordError, match=r"10 NaN samples in lead ECG \(first at sample 1000\) \(nan_policy = \"drop\" in "
                                          r"\[segments\] drops the windows they touch and uses the others\)"):
        read_record(tmp_path, "mydb", "nanrec", settings)
    rec = read_record(tmp_path, "mydb", "nanrec", settings, nan_policy="drop")
    assert rec.n_nan == 10


def test_a_database_missing_locally_is_downloaded_or_fails_with_a_hint(tmp_path):
    """No local copy: wfdb's own PhysioNet download is tried; when it fails (offline here, or an unknown slug online)
    the error says how to point at a local copy."""
    from ecgpipe.config import config_from_dict
    from ecgpipe.sources import DataSourceError, database_dir

    cfg = config_from_dict(
        {
            "databases": {"nosuchdb": {"fs": 250.0, "physionet": "ecgpipe-no-such-database/0.0.0"}},
            "classes": {"a": ["(N"], "b": ["(AFIB"]},
        }
    )
    with pytest.raises(DataSourceError) as err:
        database_dir(cfg, "nosuchdb", tmp_path)
    msg = str(err.value)
    assert "downloading ecgpipe-no-such-database/0.0.0 from PhysioNet failed" in msg
    assert "--data-dir" in msg and "ECGPIPE_DATA_DIR" in msg and "RECORDS" in msg
    with pytest.raises(DataSourceError, match="not found at"):
        database_dir(cfg, "nosuchdb", tmp_path, download=False)


def test_data_fetch_from_a_mirror_verifies_checksums(tmp_path, physionet):
    from ecgpipe.cli import main

    assert main(["data", "fetch", "mitdb", "vfdb", "--to", str(tmp_path / "a"), "--from", str(physionet), "--records", "100", "418"]) == 0
    assert (tmp_path / "a" / "mitdb" / "100.dat").is_file() and (tmp_path / "a" / "mitdb" / "RECORDS").read_text().split() == ["100"]
    assert (tmp_path / "a" / "vfdb" / "418.atr").is_file()

    from ecgpipe.fetch import ChecksumError, fetch

    assert fetch("mitdb", tmp_path / "b", mirror=physionet, records=["101"])["verified"] == 3  # .hea .dat .atr
    # a tampered mirror is refused, naming the file
    mirror = tmp_path / "mirror"
    copy_records(physionet, mirror, "mitdb", ["101"])
    shutil.copy(physionet / "mitdb" / "SHA256SUMS.upstream.txt", mirror / "mitdb")
    dat = mirror / "mitdb" / "101.dat"
    data = bytearray(dat.read_bytes())
    data[500] ^= 0xFF
    dat.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=r"101\.dat: SHA-256 mismatch"):
        fetch("mitdb", tmp_path / "c", mirror=mirror, records=["101"])


def test_a_database_of_edf_files_reads_like_the_same_wfdb_records(tmp_path, physionet):
    """Training on EDF: a record with ``<record>.edf`` and no WFDB header is read from the EDF file (here mitdb 201 as
    wfdb's converter writes it, its real annotation file beside it): the same millivolts, episodes and windows'
    planning inputs as the WFDB record; a wrong sampling rate names the .edf; a record with neither file says so."""
    from wfdb.io.convert.edf import wfdb_to_edf

    from ecgpipe.keys import record_files, signal_digest
    from ecgpipe.stages.segments import header_seconds

    wfdb_dir = copy_records(physionet, tmp_path / "wfdb", "mitdb", ["201"])
    edf_dir = tmp_path / "edf" / "mitdb"
    edf_dir.mkdir(parents=True)
    wfdb_to_edf(str(wfdb_dir / "201"), output_filename=str(edf_dir / "201.edf"))
    shutil.copy(wfdb_dir / "201.atr", edf_dir)
    (edf_dir / "RECORDS").write_text("201\n")

    ref = read_record(wfdb_dir, "mitdb", "201", MITDB)
    rec = read_record(edf_dir, "mitdb", "201", MITDB)
    n = ref.signals.shape[1]
    assert (rec.database, rec.record, rec.path, rec.fs, rec.leads) == ("mitdb", "201", str(edf_dir / "201"), 360.0, ["MLII"])
    assert n <= rec.signals.shape[1] < n + 360 * 10  # the converter pads the last data record
    assert np.abs(rec.signals[:, :n] - ref.signals).max() < 1e-9
    # the same episodes; the last one runs to the end of the file as it does to the end of the WFDB record
    assert rec.episodes[:-1] == ref.episodes[:-1] and {e.label for e in rec.episodes} >= {"(AFIB", "(N"}
    assert (rec.episodes[-1].label, rec.episodes[-1].start, rec.episodes[-1].end) == (
        ref.episodes[-1].label, ref.episodes[-1].start, rec.signals.shape[1])
    # the content key covers the EDF file and the annotations; the length for task planning comes from its header
    assert [p.name for p in record_files(edf_dir, "201", "atr")] == ["201.edf", "201.atr"]
    before = signal_digest(edf_dir, "201")
    assert abs(header_seconds(str(edf_dir), "201") - rec.signals.shape[1] / 360) < 1e-6
    # a per-record label (CSV-labelled databases) makes the whole file one episode
    labelled = read_record(edf_dir, "mitdb", "201", MITDB, record_label="A")
    assert [(e.label, e.start, e.end) for e in labelled.episodes] == [("A", 0, rec.signals.shape[1])]
    with pytest.raises(RecordError, match=r"201\.edf.*sampling rate 360 Hz, but database mitdb is configured for 250"):
        read_record(edf_dir, "mitdb", "201", DatabaseSettings(fs=250.0, lead=["MLII"]))
    with pytest.raises(RecordError, match=r"header file .*202\.hea not found, nor an EDF file .*202\.edf"):
        read_record(edf_dir, "mitdb", "202", MITDB)
    data = bytearray((edf_dir / "201.edf").read_bytes())
    data[-1] ^= 1
    (edf_dir / "201.edf").write_bytes(bytes(data))
    assert signal_digest(edf_dir, "201") != before
    # a cut file is one clear error naming it (the flow then skips that record and keeps the others)
    (edf_dir / "201.edf").write_bytes(bytes(data[:-5000]))
    with pytest.raises(RecordError, match=r"201\.edf: truncated EDF file"):
        read_record(edf_dir, "mitdb", "201", MITDB)


def test_a_folder_of_edf_files_and_a_labels_csv_needs_no_records_file(tmp_path):
    """A recorder's export: EDF files and a CSV of labels, nothing else. The CSV lists the records; without the CSV
    the folder is refused, naming what is missing."""
    from ecgpipe.config import config_from_dict
    from ecgpipe.sources import DataSourceError, database_dir, selected_records

    cfg = config_from_dict({"databases": {"export": {"fs": 360.0, "labels_csv": "labels.csv"}},
                            "classes": {"normal": ["N"], "afib": ["A"]}})
    folder = tmp_path / "export"
    folder.mkdir()
    with pytest.raises(DataSourceError, match=r"not found at .*export \(no RECORDS file and no labels.csv\).*EDF"):
        database_dir(cfg, "export", tmp_path, download=False)
    (folder / "labels.csv").write_text("record,label\nholter1,N\nholter2,A\n")
    assert database_dir(cfg, "export", tmp_path, download=False) == folder
    assert selected_records(cfg, "export", folder) == ["holter1", "holter2"]


def test_a_folder_of_records_without_records_file_is_named_as_such_and_a_config_list_of_records_suffices(tmp_path, physionet):
    """A folder of real records without RECORDS read as "database not found ... point ecgpipe at a local copy", and a
    config listing the records did not help."""
    from ecgpipe.config import config_from_dict
    from ecgpipe.sources import DataSourceError, database_dir, selected_records

    folder = tmp_path / "mine"
    folder.mkdir()
    for ext in ("hea", "dat", "atr"):
        shutil.copy(physionet / "mitdb" / f"100.{ext}", folder)
    cfg = config_from_dict({"databases": {"mine": {"fs": 360.0}}, "classes": {"normal": ["(N"], "afib": ["(AFIB"]}})
    with pytest.raises(DataSourceError, match=r"mine.* holds 1 record\(s\) \(100\) but no RECORDS file .*"
                                              r"databases\.mine\.records") as err:
        database_dir(cfg, "mine", tmp_path, download=False)
    assert "not found" not in str(err.value)
    # records in subfolders only (the CinC 2020 layout): named by their paths, and the line that writes RECORDS works
    (folder / "g1").mkdir()
    for ext in ("hea", "dat", "atr"):
        (folder / f"100.{ext}").rename(folder / "g1" / f"100.{ext}")
    with pytest.raises(DataSourceError, match=r"holds 1 record\(s\) \(g1/100\) .*\(paths from that folder") as err:
        database_dir(cfg, "mine", tmp_path, download=False)
    command = str(err.value).split("(e.g. `")[1].split("`")[0]
    subprocess.run(command, shell=True, check=True)
    assert (folder / "RECORDS").read_text() == "g1/100\n" and database_dir(cfg, "mine", tmp_path, download=False) == folder
    (folder / "RECORDS").unlink()
    for ext in ("hea", "dat", "atr"):
        (folder / "g1" / f"100.{ext}").rename(folder / f"100.{ext}")
    listed = config_from_dict({"databases": {"mine": {"fs": 360.0, "records": ["100"]}},
                               "classes": {"normal": ["(N"], "afib": ["(AFIB"]}})
    assert database_dir(listed, "mine", tmp_path, download=False) == folder
    assert selected_records(listed, "mine", folder) == ["100"]
    with pytest.raises(DataSourceError, match=r"not found at .*nothing"):  # no folder at all: still "not found"
        database_dir(config_from_dict({"databases": {"nothing": {"fs": 360.0}}, "classes": {"n": ["(N"], "a": ["(A"]}}),
                     "nothing", tmp_path, download=False)


@pytest.mark.parametrize("name", ["test_generator", "test_utf8", "test_subsecond", "test_legacy"])
def test_edf_files_another_program_wrote_read_as_pyedflib_reads_them(tmp_path, name):
    """EDF files written by EDFbrowser (pyEDFlib ships them with its tests), not by this project's test writer: an
    EDF+ generator recording (11 signals, 200 Hz), one with UTF-8 annotation text, one whose data records start
    0.39 s after the header's start second, and the first with its EDF+ mark blanked. Every lead reads as pyEDFlib, an independent reader,
    reads it (in mV), and the annotations have its onsets (from the first sample) and texts."""
    from pathlib import Path

    import pyedflib  # the dev extra installs it: an independent EDF reader, and the files it tests itself with

    from ecgpipe.edf import read_edf_annotations, read_edf_header
    from ecgpipe.records import read_edf_record

    source = Path(pyedflib.__file__).parent / "tests" / "data" / f"{name}.edf"
    path = tmp_path / f"{name}.edf"
    shutil.copy(source, path)
    reference = pyedflib.EdfReader(str(path))
    try:
        labels = reference.getSignalLabels()
        units = [reference.getPhysicalDimension(i) for i in range(len(labels))]
        assert labels and "uV" in units
        for i, label in enumerate(labels):
            fs = float(reference.getSampleFrequency(i))
            if label == "EDF Annotations":  # plain EDF has no annotation channel, so pyEDFlib reads it as a signal
                assert name == "test_legacy"
                with pytest.raises(RecordError, match=r"channel \[11\] is EDF\+'s annotation channel, not a signal"):
                    read_edf_record(str(path), DatabaseSettings(lead=[i], fs=fs))
                continue
            record = read_edf_record(str(path), DatabaseSettings(lead=[i], fs=fs))
            assert record.fs == fs and record.leads == [label]
            in_mv = reference.readSignal(i) / (1000.0 if units[i] == "uV" else 1.0)
            np.testing.assert_allclose(record.signal, in_mv, rtol=1e-6, atol=1e-9)
        onsets, _, texts = reference.readAnnotations()
    finally:
        reference.close()
    ours = read_edf_annotations(str(path), read_edf_header(str(path)))
    if name == "test_legacy":  # the generator's file with its EDF+ mark blanked: its annotations are still read
        assert [(a.onset_s, a.text) for a in ours] == [(0.0, "Recording starts"), (600.0, "Recording ends")]
        return
    assert [a.text for a in ours] == list(texts) and len(ours) > 0
    np.testing.assert_allclose([a.onset_s for a in ours], onsets, atol=1e-6)


def test_edf_plus_annotations_with_durations_are_the_labelled_episodes(tmp_path, physionet):
    """annotator = "edf+": an EDF+ file's own annotations label it. mitdb 201's real rhythm episodes written as
    EDF+ annotations (onset and duration in seconds, the aux-note text) come back as the WFDB record's episodes;
    instants (no duration) are events and label nothing; a file without an annotation channel says so."""
    from conftest import write_edf_plus

    ref = read_record(physionet / "mitdb", "mitdb", "201", MITDB)
    header = wfdb.rdheader(str(physionet / "mitdb" / "201"))
    digital = wfdb.rdrecord(str(physionet / "mitdb" / "201"), channels=[0], physical=False).d_signal[:, 0]
    gain, base = header.adc_gain[0], header.baseline[0]
    fs = 360
    annotations = [(e.start / fs, (e.end - e.start) / fs, e.label) for e in ref.episodes[:-1]]
    annotations.insert(3, (12.5, None, "beat artefact"))  # an instant: an event, not a rhythm
    folder = tmp_path / "edfplus"
    folder.mkdir()
    n = write_edf_plus(folder / "201.edf", digital, fs, ((-2048 - base) / gain, (2047 - base) / gain), (-2048, 2047),
                       tuple(annotations))
    settings = DatabaseSettings(lead=["MLII"], fs=360.0, annotator="edf+")
    rec = read_record(folder, "mitdb", "201", settings)
    assert n == rec.signals.shape[1] and np.abs(rec.signals[0] - ref.signals[0, :n]).max() < 1e-9
    assert rec.episodes == ref.episodes[:-1] and len(rec.episodes) > 30
    # time stamps count from the header's start time: a recording whose first data record starts an hour later
    write_edf_plus(folder / "201.edf", digital, fs, ((-2048 - base) / gain, (2047 - base) / gain), (-2048, 2047),
                   tuple(annotations), start_s=3600)
    assert read_record(folder, "mitdb", "201", settings).episodes == ref.episodes[:-1]
    # a per-record label still wins (a CSV-labelled database of EDF+ files)
    assert [e.label for e in read_record(folder, "mitdb", "201", settings, record_label="A").episodes] == ["A"]
    write_edf_plus(folder / "100.edf", digital[: 360 * 20], fs, ((-2048 - base) / gain, (2047 - base) / gain), (-2048, 2047))
    assert read_record(folder, "mitdb", "100", settings).episodes == []  # annotation channel, no durations
    (folder / "100.edf").write_bytes((folder / "100.edf").read_bytes().replace(b"EDF Annotations", b"ECG lead II    "))
    with pytest.raises(RecordError, match=r"100\.edf: no 'EDF Annotations' channel"):
        read_record(folder, "mitdb", "100", settings)


def test_a_lead_chosen_by_index_that_is_named_like_no_ecg_is_read_with_a_note(tmp_path, physionet):
    """A recorder's first channel may be respiration or a pressure: lead = [0] reads it as asked, and says so."""
    ecg = wfdb.rdrecord(str(physionet / "mitdb" / "100"), sampto=3600, channels=[0]).p_signal[:, 0]
    resp = np.sin(2 * np.pi * 0.25 * np.arange(len(ecg)) / 360)
    wfdb.wrsamp("twolead", fs=360, units=["mV", "mV"], sig_name=["RESP", "ECG"], p_signal=np.column_stack([resp, ecg]),
                fmt=["16", "16"], write_dir=str(tmp_path))
    wfdb.wrann("twolead", "atr", np.array([0]), np.array(["+"]), aux_note=["(N"], write_dir=str(tmp_path))
    with pytest.warns(UserWarning, match=r"lead .RESP. \(channel 0\) is named like no ECG signal and was not asked for by name"):
        rec = read_record(tmp_path, "mydb", "twolead", DatabaseSettings(lead=[0], fs=360.0))
    assert rec.lead == "RESP" and any("named like no ECG signal" in n for n in rec.notes)
    for lead in (["ECG"], [1], ["RESP"]):  # an ECG, by name or index; a non-ECG asked for by its name: no note
        rec = read_record(tmp_path, "mydb", "twolead", DatabaseSettings(lead=lead, fs=360.0), warn=False)
        assert not rec.notes, lead


@pytest.mark.parametrize("reader", ["rdheader", "rdrecord", "rdann"])
def test_a_disk_hiccup_is_raised_as_it_is_and_a_missing_file_fails_the_record(physionet, monkeypatch, reader):
    """A network file system's EIO says nothing of the record: it reaches the task as an OSError (retried, and the run
    stops rather than going on without the record) instead of failing the record for good as bad input; a file that
    is not there, or a parse error, is the record's problem (RecordError, named)."""
    import errno

    from ecgpipe.orchestration.tasks import may_pass_on_retry

    real = getattr(wfdb, reader)

    def flaky(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(wfdb, reader, flaky)
    with pytest.raises(OSError) as caught:
        read_record(physionet / "mitdb", "mitdb", "100", MITDB)
    assert not isinstance(caught.value, RecordError) and may_pass_on_retry(caught.value)

    def unreadable(*args, **kwargs):
        raise ValueError("bad format field")

    monkeypatch.setattr(wfdb, reader, unreadable)
    with pytest.raises(RecordError, match="bad format field"):
        read_record(physionet / "mitdb", "mitdb", "100", MITDB)
    monkeypatch.setattr(wfdb, reader, real)
    assert read_record(physionet / "mitdb", "mitdb", "100", MITDB).lead == "MLII"
