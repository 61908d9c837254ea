"""Multi-segment WFDB records, PhysioNet's layout for long recordings with breaks (MIMIC's waveform databases): a
header ``name/n_segments`` lists a layout segment (length 0: every signal any segment has), then segments and gaps
(``~``). Each segment is an ordinary record. The segments here point at real mitdb signal files, byte for byte as
published (100.dat and 201.dat); the headers are written by hand in MIMIC's layout, as ``wfdb.wrsamp`` cannot write
a multi-segment record."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import wfdb

from ecgpipe.config import DatabaseSettings
from ecgpipe.keys import record_files, signal_digest
from ecgpipe.records import RecordError, read_record, without_segments

SEGMENT = 43_200  # 120 s at 360 Hz of each real record
GAP = 3_600  # 10 s without signal between them


def _segment_header(name: str, source: str, leads: tuple[str, str], physionet) -> str:
    """A segment's header: the first SEGMENT samples of a real mitdb signal file, with their real checksums."""
    checksums = wfdb.rdrecord(str(physionet / "mitdb" / source), sampto=SEGMENT, physical=False).calc_checksum()
    lines = [f"{name} 2 360 {SEGMENT}"]
    lines += [f"{source}.dat 212 200 11 1024 0 {c} 0 {lead}" for c, lead in zip(checksums, leads)]
    return "\n".join(lines) + "\n"


def make_multi_segment(folder, physionet) -> str:
    """``folder/pilot``: layout, 120 s of mitdb 100 (MLII, V5: sinus rhythm), a 10-s gap, 120 s of mitdb 201
    (MLII, V1: AF from its 60th sample); rhythm annotations at the record's own sample numbers."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in ("100", "201"):
        shutil.copy(physionet / "mitdb" / f"{source}.dat", folder / f"{source}.dat")
    (folder / "pilot_0001.hea").write_text(_segment_header("pilot_0001", "100", ("MLII", "V5"), physionet))
    (folder / "pilot_0002.hea").write_text(_segment_header("pilot_0002", "201", ("MLII", "V1"), physionet))
    (folder / "pilot_layout.hea").write_text(
        "pilot_layout 3 360 0\n" + "".join(f"~ 0 200/mV 11 1024 0 0 0 {lead}\n" for lead in ("MLII", "V1", "V5")))
    total = 2 * SEGMENT + GAP
    (folder / "pilot.hea").write_text(f"pilot/4 3 360 {total}\npilot_layout 0\npilot_0001 {SEGMENT}\n~ {GAP}\n"
                                      f"pilot_0002 {SEGMENT}\n")
    wfdb.wrann("pilot", "atr", np.array([0, SEGMENT + GAP + 60]), np.array(["+", "+"]),
               aux_note=["(N", "(AFIB"], write_dir=str(folder))
    return "pilot"


@pytest.fixture
def pilot(tmp_path, physionet):
    folder = tmp_path / "mimicish"
    return folder, make_multi_segment(folder, physionet)


def _real(physionet, record: str, channel: int) -> np.ndarray:
    return wfdb.rdrecord(str(physionet / "mitdb" / record), sampto=SEGMENT, channels=[channel]).p_signal[:, 0]


def test_a_multi_segment_record_is_its_segments_end_to_end_with_its_gaps_as_nan(pilot, physionet):
    folder, name = pilot
    with pytest.raises(RecordError, match=r"3600 NaN samples in lead MLII \(first at sample 43200\).*gaps between its "
                                          r"segments.*nan_policy = \"drop\""):
        read_record(str(folder), "mimic", name, DatabaseSettings(lead=["MLII"]))
    rec = read_record(str(folder), "mimic", name, DatabaseSettings(lead=["MLII"]), nan_policy="drop")
    assert rec.fs == 360.0 and rec.leads == ["MLII"] and rec.signals.shape == (1, 2 * SEGMENT + GAP)
    assert np.allclose(rec.signal[:SEGMENT], _real(physionet, "100", 0))  # millivolts, as mitdb 100 read alone
    assert np.isnan(rec.signal[SEGMENT : SEGMENT + GAP]).all() and rec.n_nan == GAP
    assert np.allclose(rec.signal[SEGMENT + GAP :], _real(physionet, "201", 0))
    assert [(e.label, e.start) for e in rec.episodes] == [("(N", 0), ("(AFIB", SEGMENT + GAP + 60)]
    # wfdb's own merge of the segments gives the same samples
    merged = wfdb.rdrecord(str(folder / name), m2s=True, channel_names=["MLII"]).p_signal[:, 0]
    assert np.allclose(rec.signal, merged, equal_nan=True)
    # a lead only some segments have: NaN where a segment lacks it
    v5 = read_record(str(folder), "mimic", name, DatabaseSettings(lead=["V5"]), nan_policy="drop")
    assert np.allclose(v5.signal[:SEGMENT], _real(physionet, "100", 1)) and np.isnan(v5.signal[SEGMENT:]).all()


def test_a_multi_segment_records_files_are_its_segments_and_a_changed_segment_changes_its_digest(pilot):
    folder, name = pilot
    files = {p.name for p in record_files(folder, name, "atr")}
    assert files == {"pilot.hea", "pilot_layout.hea", "pilot_0001.hea", "100.dat", "pilot_0002.hea", "201.dat", "pilot.atr"}
    before = signal_digest(folder, name)
    data = bytearray((folder / "201.dat").read_bytes())
    data[3000] ^= 0xFF
    (folder / "201.dat").write_bytes(bytes(data))
    assert signal_digest(folder, name) != before  # the stored windows of this record are stale, not reused
    # ... and the segment's own checksum names it
    with pytest.raises(RecordError, match=r"pilot_0002: signal checksum mismatch in lead MLII"):
        read_record(str(folder), "mimic", name, DatabaseSettings(lead=["MLII"]), nan_policy="drop")
    # a folder listing (predict's, without RECORDS) keeps the record, not its segments
    names = sorted(p.stem for p in folder.glob("*.hea"))
    assert without_segments(folder, names) == ["pilot"]


def test_a_broken_multi_segment_record_names_the_segment(pilot):
    folder, name = pilot
    settings = DatabaseSettings(lead=["MLII"])
    header = (folder / "pilot.hea").read_text()
    (folder / "pilot.hea").write_text(header.replace(f"pilot_0002 {SEGMENT}", f"pilot_0002 {SEGMENT - 10}"))
    with pytest.raises(RecordError, match="segments' lengths do not add up"):
        read_record(str(folder), "mimic", name, settings, nan_policy="drop")
    (folder / "pilot.hea").write_text(header)
    (folder / "pilot_0002.hea").rename(folder / "moved.hea")
    with pytest.raises(RecordError, match=r"segment pilot_0002: header file .*pilot_0002.hea not found"):
        read_record(str(folder), "mimic", name, settings, nan_policy="drop")
    (folder / "moved.hea").rename(folder / "pilot_0002.hea")
    (folder / "pilot_0001.hea").write_text((folder / "pilot_0001.hea").read_text().replace(f"2 360 {SEGMENT}", f"2 360 {SEGMENT // 2}"))
    with pytest.raises(RecordError, match=rf"segment pilot_0001: {SEGMENT // 2} samples at 360 Hz, but .*gives it {SEGMENT}"):
        read_record(str(folder), "mimic", name, settings, nan_policy="drop")
    with pytest.raises(RecordError, match=r"no lead matching \['V2'\] \(the record has \['MLII', 'V1', 'V5'\]; a channel index"):
        read_record(str(folder), "mimic", name, DatabaseSettings(lead=["V2"]), nan_policy="drop")


def make_vfdb_slice(folder, physionet) -> str:
    """``folder/v418``: the first 120 s of vfdb 418 (250 Hz, sinus rhythm there), its header pointing at the real
    signal file and its real annotations beside it."""
    for ext in ("dat", "atr"):
        shutil.copy(physionet / "vfdb" / f"418.{ext}", folder / f"{'418' if ext == 'dat' else 'v418'}.{ext}")
    real = (physionet / "vfdb" / "418.hea").read_text().splitlines()
    lines = ["v418 2 250 30000"] + [" ".join(line.split()[:6] + ["0"] + line.split()[7:]) for line in real[1:3]]
    (folder / "v418.hea").write_text("\n".join(lines) + "\n")  # checksum 0: not recorded for this slice
    return "v418"


@pytest.mark.system
def test_a_multi_segment_record_runs_through_the_flow_with_its_gap_dropped(physionet, tmp_path, prefect_server):
    """The real flow on the multi-segment record beside a record at another sampling rate (the database's fs =
    "any"): windows from both segments, none across the gap, every window's class from the record's own
    annotations; a rerun computes nothing."""
    import json

    from ecgpipe.config import config_from_dict, load_config
    from flows.ecg_pipeline import run_pipeline

    folder = tmp_path / "data" / "mimicish"
    make_multi_segment(folder, physionet)
    make_vfdb_slice(folder, physionet)
    (folder / "RECORDS").write_text("pilot\nv418\n")
    doc = load_config("paper4", {"sampling": {"max_per_class": 1000}, "features": {"image_size": 64},
                                 "segments": {"nan_policy": "drop"},
                                 "cv": {"n_splits": 2, "protocols": ["stratified_10fold"]}}).model_dump(mode="json")
    doc |= {"databases": {"mimicish": {"lead": ["MLII", 0], "fs": "any"}}, "classes": {"normal": ["(N"], "afib": ["(AFIB"]},
            "endpoints": {}}
    cfg = config_from_dict(doc)
    out = tmp_path / "out"
    report = run_pipeline(cfg, str(tmp_path / "data"), str(out))
    assert report["skipped_records"] == [] and report["record_accounting"]["used"] == 2
    assert report["subjects_per_class"] == {"normal": 2, "afib": 1}
    counts = report["class_counts"]
    # pilot: every 2-s window of the first segment but its last, which the resampling filter's margin puts in the
    # gap; v418: the 2-s windows of its 120 s from its first rhythm annotation (sample 18)
    assert counts["normal"] == SEGMENT // 720 - 1 + 59
    assert 55 <= counts["afib"] < SEGMENT // 720  # the second segment's AF, from 60 samples in
    run_pipeline(cfg, str(tmp_path / "data"), str(out))
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert {stage: counts["computed"] for stage, counts in stages.items()} == dict.fromkeys(stages, 0)


def test_a_database_of_several_sampling_rates_declares_fs_any(pilot, physionet):
    """A database's fs is a check that every record has that rate; "any" reads each record at its own rate (every
    record is resampled to segments.target_fs anyway), which a corpus of several recorders needs."""
    from ecgpipe.config import ConfigError, load_config

    folder, name = pilot
    make_vfdb_slice(folder, physionet)
    with pytest.raises(RecordError, match=r"sampling rate 250 Hz, but database mimic is configured for 360 Hz.*fs = \"any\""):
        read_record(str(folder), "mimic", "v418", DatabaseSettings(fs=360))
    assert read_record(str(folder), "mimic", "v418", DatabaseSettings(fs="any")).fs == 250.0
    assert read_record(str(folder), "mimic", name, DatabaseSettings(fs="any"), nan_policy="drop").fs == 360.0
    cfg = load_config("paper4", {"databases": {"mine": {"fs": "any"}}})
    assert cfg.database("mine").fs == "any" and cfg.database("mitdb").fs == 360
    with pytest.raises(ConfigError, match=r"databases\.mine\.fs"):
        load_config("paper4", {"databases": {"mine": {"fs": "all"}}})
