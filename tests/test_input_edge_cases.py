"""Inputs at the edges of what the readers and the rhythm block see: NaN gaps, records in subfolders, byte-order marks,
flat leads, short contexts and records of a few samples. Real WFDB files wherever the real data has the case;
synthetic signals only where it has not (it has no NaN gap, no flat lead, no record of a few samples)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ecgpipe.config import DatabaseSettings, SpectrogramSettings, load_config
from ecgpipe.dataset import record_windows
from ecgpipe.labels import LabelsError, read_record_labels
from ecgpipe.records import EcgRecord, RecordError, RhythmEpisode, list_records, read_record
from ecgpipe.rhythm import IRREGULARITY_FEATURES, RHYTHM_FEATURES, beats_outside_gaps, nan_gaps, real_intervals
from ecgpipe.rhythm_block import window_rhythm_features
from ecgpipe.segments import resample
from ecgpipe.spectrogram import spectrogram_chunk
from ecgpipe.units import FLAT_MV
from ecgpipe.waveform import WAVEFORM_FEATURES, bandpass, waveform_descriptors, waveform_features

MITDB = DatabaseSettings(lead=["MLII", "V5"], fs=360.0)
# every rhythm column, over 30 s: a context wide enough to reach across a gap from the kept windows around it
ALL_RHYTHM = {"enabled": True, "irregularity": True, "beats": True, "beat_detail": True, "waveform": True, "context_s": 30.0}
# the columns that are statistics of the RR intervals alone
RR_COLUMNS = RHYTHM_FEATURES[:6] + IRREGULARITY_FEATURES + (
    "premature_frac", "pause_rel", "rr_p05_rel", "rr_p25_rel", "rr_p75_rel", "rr_p95_rel", "compensatory_pause_frac",
    "hr_max_running_bpm", "hr_min_running_bpm", "rr_regular_std_rel",
)


def _record(signal: np.ndarray, fs: float, database: str = "mitdb", label: str = "(N") -> EcgRecord:
    return EcgRecord(database, "x", f"/nowhere/{database}/x", fs, ["ECG"], np.asarray(signal, float)[None],
                     [RhythmEpisode(label, 0, len(signal))])


def _rhythm(signal: np.ndarray, fs: float, cfg) -> tuple[np.ndarray, np.ndarray]:
    """(window starts in seconds, rhythm block) of the windows ``record_windows`` keeps."""
    rec = _record(signal, fs)
    found = record_windows(rec, cfg)
    return found.starts / cfg.segments.target_fs, window_rhythm_features(rec, found.starts, cfg)


def _sinus(seconds: float, fs: float, rr_s: float = 0.8) -> np.ndarray:
    """A regular 75-bpm train of 10-ms Gaussian QRS spikes on a little noise."""
    t = np.arange(int(seconds * fs)) / fs
    x = sum(np.exp(-(((t - beat) / 0.01) ** 2)) for beat in np.arange(0.3, seconds, rr_s))
    return x + 0.01 * np.random.default_rng(0).normal(size=len(t))


# --- NaN gaps in the rhythm features -------------------------------------------------------------------------------


def test_nan_gaps_and_the_intervals_across_them():
    fs = 100.0
    x = np.zeros(1000)
    x[200:250] = x[700:701] = np.nan
    gaps = nan_gaps(x, fs)
    np.testing.assert_array_equal(gaps, [[2.0, 2.5], [7.0, 7.01]])
    assert len(nan_gaps(np.zeros(10), fs)) == 0
    beats = np.array([1.0, 1.8, 1.96, 2.2, 2.52, 2.6, 3.4, 6.9, 7.2, 8.0])
    # 2.2 lies in the first gap, 1.96 and 2.52 within GAP_MARGIN_S (50 ms) of its ends; 2.6 and 6.9 are 0.1 s away
    kept = beats_outside_gaps(beats, gaps)
    np.testing.assert_array_equal(kept, [1.0, 1.8, 2.6, 3.4, 6.9, 7.2, 8.0])
    # 1.8 -> 2.6 spans the first gap, 6.9 -> 7.2 the one-sample second gap
    np.testing.assert_array_equal(real_intervals(kept, gaps), [True, False, True, True, False, True])
    assert real_intervals(kept, np.zeros((0, 2))) is None  # no gap: every interval, nothing to mask


@pytest.mark.parametrize("gap_s", [(30.0, 33.0), (30.1, 33.25), (29.95, 30.5)])
def test_a_nan_gap_is_no_pause_in_the_rr_features_of_the_windows_kept_around_it(gap_s):
    """nan_policy = "drop": the windows on the gap are dropped, the ones around it kept. The gap holds no beats; before
    the fix the interval across it (a 4-RR "pause") entered every kept window whose context reached over it (68.9 bpm
    instead of 75, pause_rel 4). A regular rhythm's RR statistics are now the clean record's."""
    fs = 360.0
    cfg = load_config("paper4", {"segments": {"nan_policy": "drop"}, "rhythm": ALL_RHYTHM})
    clean = _sinus(60, fs)
    gapped = clean.copy()
    gapped[int(gap_s[0] * fs) : int(gap_s[1] * fs)] = np.nan
    clean_starts, clean_block = _rhythm(clean, fs, cfg)
    starts, block = _rhythm(gapped, fs, cfg)
    assert 0 < len(starts) < len(clean_starts)  # windows on the gap dropped, the others kept
    reaching = np.abs(starts + cfg.segments.length_s / 2 - np.mean(gap_s)) < cfg.rhythm.context_s / 2
    assert reaching.sum() >= 10  # kept windows whose context holds the gap
    same = clean_block[np.isin(clean_starts, starts)]
    cols = cfg.rhythm_columns
    rr = [cols.index(c) for c in RR_COLUMNS]
    np.testing.assert_allclose(block[:, rr], same[:, rr], atol=1e-5)
    hr, pause = block[reaching, cols.index("heart_rate_bpm")], block[reaching, cols.index("pause_rel")]
    np.testing.assert_allclose(hr, 75.0, atol=1e-3)
    np.testing.assert_allclose(pause, 1.0, atol=1e-3)
    # beats per second of signal: the gap's seconds are not counted as beatless signal
    np.testing.assert_allclose(block[:, cols.index("beat_rate_per_s")], same[:, cols.index("beat_rate_per_s")], atol=0.05)


def test_a_nan_gap_in_a_real_record_leaves_its_rr_features_as_they_were(physionet):
    """mitdb 100 (sinus rhythm, ~74 bpm), 3 minutes with 3 s of it NaN: the kept windows around the gap get the RR
    features of the intact record, to within what the few missing intervals change (before: 8 bpm and a pause_rel of
    4 off)."""
    rec = read_record(physionet / "mitdb", "mitdb", "100", MITDB)
    clean = rec.signal[: int(180 * rec.fs)]
    gapped = clean.copy()
    gapped[int(60 * rec.fs) : int(63 * rec.fs)] = np.nan
    cfg = load_config("paper4", {"segments": {"nan_policy": "drop"}, "rhythm": ALL_RHYTHM})
    clean_starts, clean_block = _rhythm(clean, rec.fs, cfg)
    starts, block = _rhythm(gapped, rec.fs, cfg)
    same = clean_block[np.isin(clean_starts, starts)]
    reaching = np.abs(starts + 1.0 - 61.5) < 15
    assert reaching.sum() >= 10
    cols = cfg.rhythm_columns
    for name, tolerance in [("heart_rate_bpm", 1.0), ("rr_cv", 0.01), ("log_rr_range", 0.02), ("pause_rel", 0.02),
                            ("hr_min_running_bpm", 1.0), ("beat_rate_per_s", 0.05)]:
        j = cols.index(name)
        assert np.abs(block[reaching, j] - same[reaching, j]).max() < tolerance, name


# --- records in subfolders, byte-order marks -------------------------------------------------------------------------


def test_a_record_in_a_subfolder_reads_like_the_same_record_in_a_flat_folder(tmp_path, physionet):
    """PhysioNet's RECORDS list records in subfolders (ptbdb "patient001/s0010_re", PTB-XL "records100/00000/00001_lr");
    a header names its signal file relative to its own folder. Before the fix: "signal file <db>/100.dat not found"."""
    db = tmp_path / "db"
    (db / "sub").mkdir(parents=True)
    for ext in ("hea", "dat", "atr"):
        shutil.copy(physionet / "mitdb" / f"100.{ext}", db / "sub" / f"100.{ext}")
    (db / "RECORDS").write_text("sub/100\n")
    names = list_records(db)
    assert names == ["sub/100"]
    nested = read_record(db, "mitdb", names[0], MITDB)
    flat = read_record(physionet / "mitdb", "mitdb", "100", MITDB)
    np.testing.assert_array_equal(nested.signals, flat.signals)
    assert nested.episodes == flat.episodes and nested.leads == flat.leads and nested.fs == flat.fs
    assert nested.path == str(db / "sub" / "100")
    # its errors name the files where they are
    (db / "sub" / "100.dat").unlink()
    with pytest.raises(RecordError, match=r"signal file .*sub/100\.dat not found"):
        read_record(db, "mitdb", "sub/100", MITDB)


def test_the_records_in_a_folder_are_its_headers_and_edf_files_less_segments_and_a_run_s_store(tmp_path, physionet):
    """What a folder without RECORDS holds (``ecgpipe predict``'s folder, a labels CSV's unlisted records): one name
    per record whatever files it has, a multi-segment record's segments not as records of their own, subfolders only
    when asked (not hidden ones, nor a run's Zarr store, whose files are never records)."""
    from ecgpipe.sources import records_in_folder

    db = tmp_path / "db"
    for folder in (db, db / "site1" / "day2", db / ".trash", db / "out" / "store.zarr"):
        folder.mkdir(parents=True, exist_ok=True)
    for ext in ("hea", "dat", "atr"):
        shutil.copy(physionet / "mitdb" / f"100.{ext}", db / f"100.{ext}")
        shutil.copy(physionet / "mitdb" / f"100.{ext}", db / "site1" / "day2" / f"100.{ext}")
    for folder in (db / ".trash", db / "out" / "store.zarr"):
        shutil.copy(physionet / "mitdb" / "100.hea", folder / "100.hea")
    (db / "100.qrs").write_bytes((db / "100.atr").read_bytes())
    (db / "200.edf").write_bytes(b"")
    (db / "big.hea").write_text("big/2 1 360 20\nbig_1 10\nbig_2 10\n")  # a multi-segment record and its segments
    for segment in ("big_1", "big_2"):
        (db / f"{segment}.hea").write_text(f"{segment} 1 360 10\n{segment}.dat 16 200 11 1024 0 0 0 MLII\n")
    assert records_in_folder(db) == ["100", "200", "big"]
    assert records_in_folder(db, nested=True) == ["100", "200", "big", "site1/day2/100"]


def test_a_byte_order_mark_loses_no_record_from_records_or_the_labels_csv(tmp_path, physionet):
    """Windows editors and Excel save UTF-8 with a byte-order mark; it used to stick to the first name ("\\ufeff100",
    then "missing record")."""
    real_rows = (physionet / "cinc2017" / "REFERENCE-v3.csv").read_text().splitlines()[:3]
    (tmp_path / "REFERENCE.csv").write_bytes(("\n".join(real_rows) + "\n").encode("utf-8-sig"))
    labels = read_record_labels(tmp_path, "REFERENCE.csv")
    assert labels == dict(row.split(",") for row in real_rows) and "A00002" in labels
    (tmp_path / "REFERENCE.csv").write_bytes("record,label\r\nA1,N\r\n".encode("utf-8-sig"))
    assert read_record_labels(tmp_path, "REFERENCE.csv") == {"A1": "N"}  # the header row is still recognised
    (tmp_path / "REFERENCE.csv").write_bytes(b"A1,\xe9\n")
    with pytest.raises(LabelsError, match=r"REFERENCE.csv: not UTF-8 text"):
        read_record_labels(tmp_path, "REFERENCE.csv")

    db = tmp_path / "mitdb"
    db.mkdir()
    for ext in ("hea", "dat", "atr"):
        shutil.copy(physionet / "mitdb" / f"100.{ext}", db)
    (db / "RECORDS").write_bytes("100\r\n101\r\n".encode("utf-8-sig"))
    assert list_records(db) == ["100", "101"]
    assert read_record(db, "mitdb", list_records(db)[0], MITDB).signal.shape == (650000,)


def test_a_record_name_wfdb_cannot_read_is_named_as_such_not_as_a_malformed_header(tmp_path, physionet):
    """WFDB record names have only letters, digits, '_' and '-': a copy of mitdb 100 saved as "100.v2" read as a
    "malformed header: invalid syntax in record line", though the header was fine."""
    db = tmp_path / "db"
    db.mkdir()
    for ext in ("dat", "atr"):
        shutil.copy(physionet / "mitdb" / f"100.{ext}", db / f"100.v2.{ext}")
    header = (physionet / "mitdb" / "100.hea").read_text().splitlines()
    (db / "100.v2.hea").write_text("\n".join([header[0].replace("100 ", "100.v2 ", 1), *header[1:]]) + "\n")
    with pytest.raises(RecordError, match=r"record name '100\.v2' cannot be read by WFDB.*rename.*'100_v2'") as err:
        read_record(db, "mitdb", "100.v2", MITDB)
    assert "malformed" not in str(err.value) and str(db / "100.v2") in str(err.value)
    # a real malformed header with a legal name still says so
    (db / "bad.hea").write_text("bad two 360\n")
    with pytest.raises(RecordError, match=r"malformed header .*bad\.hea"):
        read_record(db, "mitdb", "bad", MITDB)


def test_a_record_written_with_its_file_suffix_in_records_or_the_labels_csv_is_that_record(tmp_path, physionet):
    """A labels CSV or RECORDS made from a file listing names "A00001.hea": it is the record A00001 (it read as a
    record without a header, "A00001.hea.hea not found")."""
    real_rows = (physionet / "cinc2017" / "REFERENCE-v3.csv").read_text().splitlines()[:3]
    (tmp_path / "REFERENCE.csv").write_text("".join(f"{name}.hea,{label}\n" for name, label in
                                                    (row.split(",") for row in real_rows)))
    assert read_record_labels(tmp_path, "REFERENCE.csv") == dict(row.split(",") for row in real_rows)
    (tmp_path / "REFERENCE.csv").write_text("A00001.hea,N\nA00001,A\n")  # one record, two labels: still refused
    with pytest.raises(LabelsError, match=r"line 2: record 'A00001' has two labels"):
        read_record_labels(tmp_path, "REFERENCE.csv")

    db = tmp_path / "mitdb"
    db.mkdir()
    for ext in ("hea", "dat", "atr"):
        shutil.copy(physionet / "mitdb" / f"100.{ext}", db)
    (db / "RECORDS").write_text("# my records\n100.hea\n100.DAT\n  # 102 left out\n101\n100\n")
    assert list_records(db) == ["100", "101"]  # each record once; comments are no records
    assert read_record(db, "mitdb", list_records(db)[0], MITDB).signal.shape == (650000,)


# --- flat leads: no trace of the source sampling rate ----------------------------------------------------------------


@pytest.mark.parametrize("offset_mv", [0.0, 1.0, -3.0, 5.0])
def test_a_flat_lead_resampled_from_360_hz_is_as_flat_as_one_recorded_at_250_hz(offset_mv):
    """Resampling a constant lead 360 -> 250 Hz leaves a ripple of ~1e-4 of its offset. Before the fix the spectrogram
    z-scored it to full scale and the waveform and signal-quality features described it, where the same flat lead
    at 250 Hz got zeros: the database showed through."""
    resampled = resample(np.full(360 * 40, offset_mv), 360.0, 250.0)
    interior = resampled[1000:-1000]  # the ends carry resample_poly's edge transient, flat or not
    assert np.ptp(interior) > 0 or offset_mv == 0  # the ripple is there...
    windows = interior[: 500 * 10].reshape(10, 500)
    settings = SpectrogramSettings()
    zeros = spectrogram_chunk(np.zeros((10, 500)), 250.0, settings)
    np.testing.assert_array_equal(spectrogram_chunk(windows, 250.0, settings), zeros)  # ...and seen as flat
    np.testing.assert_array_equal(spectrogram_chunk(np.full((10, 500), offset_mv), 250.0, settings), zeros)
    unscaled = SpectrogramSettings(standardize=False)
    np.testing.assert_array_equal(spectrogram_chunk(windows, 250.0, unscaled),
                                  spectrogram_chunk(np.zeros((10, 500)), 250.0, unscaled))
    assert np.all(waveform_descriptors(bandpass(resampled, 250.0)[1000:3500], 250.0) == 0)

    cfg = load_config("paper4", {"rhythm": {**ALL_RHYTHM, "context_s": 10.0}})
    starts_360, block_360 = _rhythm(np.full(360 * 60, offset_mv), 360.0, cfg)
    starts_250, block_250 = _rhythm(np.full(250 * 60, offset_mv), 250.0, cfg)
    np.testing.assert_array_equal(starts_360, starts_250)
    inner = (starts_360 >= 10) & (starts_360 <= 48)  # contexts clear of the edge transient
    np.testing.assert_array_equal(block_360[inner], block_250[inner])
    few_beats = cfg.rhythm_columns.index("few_beats")
    assert np.all(np.delete(block_360[inner], few_beats, axis=1) == 0) and np.all(block_360[:, few_beats] == 1)


def test_the_flat_line_floor_is_far_below_every_real_window(physionet):
    """The floor must leave real ECG alone: mitdb 100's and vfdb 418's quietest windows (resampled as the pipeline
    does) and band-passed contexts are orders of magnitude above it."""
    cfg = load_config("paper4")
    for db, record in [("mitdb", "100"), ("vfdb", "418")]:
        rec = read_record(physionet / db, db, record, cfg.database(db))
        found = record_windows(rec, cfg)
        assert len(found.starts) > 100
        assert found.windows.std(axis=-1).min() > 20 * FLAT_MV
        filtered = bandpass(resample(rec.signal, rec.fs, 250.0), 250.0)
        peaks = [np.abs(filtered[s : s + 2500] - filtered[s : s + 2500].mean()).max() for s in found.starts[::10]]
        assert min(peaks) > 100 * FLAT_MV


# --- short waveform contexts, records of a few samples -------------------------------------------------------------


def test_tcsc_of_a_context_under_one_and_a_half_seconds_is_a_number():
    """Threshold crossings are counted in 3-s blocks while half a block is left: a shorter excerpt had no block, and
    its tcsc was the mean of nothing (NaN). Now the excerpt is its one block."""
    fs = 250.0
    x = np.sin(2 * np.pi * 5 * np.arange(int(1.2 * fs)) / fs)
    tcsc = waveform_descriptors(x, fs)[WAVEFORM_FEATURES.index("tcsc")]
    # a sinusoid is above 20 % of its peak for 1 - 2 asin(0.2) / pi of the time
    assert tcsc == pytest.approx(1 - 2 * np.arcsin(0.2) / np.pi, abs=0.02)
    noise = bandpass(np.random.default_rng(0).normal(size=int(20 * fs)), fs)
    out = waveform_features(noise, fs, np.array([5.0, 12.0]), 1.0, 1.0)  # 1-s windows and context
    assert np.isfinite(out).all() and np.all(out[:, WAVEFORM_FEATURES.index("tcsc")] > 0)


@pytest.mark.parametrize("n_samples", [1, 5, 12, 15, 16, 40])
def test_a_record_of_a_few_samples_has_an_empty_rhythm_block(n_samples):
    """Too short for any window; it used to crash in the band-pass filter (sosfiltfilt needs > 15 samples)."""
    cfg = load_config("cinc2017")
    rec = _record(np.sin(np.arange(n_samples) / 5.0), 300.0, database="cinc2017", label="N")
    found = record_windows(rec, cfg)
    assert len(found.starts) == 0
    block = window_rhythm_features(rec, found.starts, cfg)
    assert block.shape == (0, len(cfg.rhythm_columns)) and block.dtype == np.float32
    few = load_config("paper4", {"rhythm": {"enabled": True}})  # the RR columns alone
    assert window_rhythm_features(rec, np.zeros(0, np.int64), few).shape == (0, len(RHYTHM_FEATURES))


@pytest.mark.parametrize("gain", ["200000/V", "0.2/uV", "200/mV"])  # 200 adu per mV, in three units
def test_leads_in_volts_or_microvolts_are_read_in_millivolts(tmp_path, physionet, gain):
    """The same samples with a header in V or uV read as the same millivolts (the flat-line floor and the QRS
    detector assume mV); a unit that is not a voltage is a named error."""
    db = tmp_path / "db"
    db.mkdir()
    for ext in ("dat", "atr"):
        shutil.copy(physionet / "mitdb" / f"100.{ext}", db / f"100.{ext}")
    lines = (physionet / "mitdb" / "100.hea").read_text().splitlines()
    for i in (1, 2):  # each signal line: file, format, gain, ...
        fields = lines[i].split()
        fields[2] = gain
        lines[i] = " ".join(fields)
    (db / "100.hea").write_text("\n".join(lines) + "\n")
    original = read_record(physionet / "mitdb", "mitdb", "100", MITDB)
    rescaled = read_record(db, "mitdb", "100", MITDB)
    np.testing.assert_allclose(rescaled.signals, original.signals, rtol=1e-12, atol=1e-12)
    lines[1] = lines[1].replace(gain, "200/NU")
    (db / "100.hea").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"lead MLII is in 'NU': ecgpipe reads voltages"):
        read_record(db, "mitdb", "100", MITDB)


def test_windows_of_a_flat_lead_are_used_as_labelled_and_named_in_training_and_predict(tmp_path, cinc):
    """A real CinC 2017 record whose last 20 s were zeroed in its signal file (a lead off): a run uses its windows with
    the record's label (nothing is dropped) and its summary counts the flat ones, which the report lists under
    "Records with flat leads"; predict's note says how many of its windows had a flat lead."""
    from ecgpipe.dataset import flat_windows
    from ecgpipe.grid import grid_features
    from ecgpipe.stages.segments import compute_record, record_unit
    from ecgpipe.store import store_path

    assert flat_windows(np.zeros((0, 10))).tolist() == []
    two_leads = np.random.default_rng(0).normal(size=(3, 2, 50))
    two_leads[0, 0] = 5.0  # a constant lead (a recorder's offset) is flat as zeros are
    two_leads[1, 1] = 0.0  # one flat lead makes its window flat
    assert flat_windows(two_leads).tolist() == [True, True, False]
    folder = tmp_path / "cinc2017"
    folder.mkdir()
    for f in cinc.glob("A00002.*"):
        shutil.copy(f, folder / f.name)
    mat = bytearray((folder / "A00002.mat").read_bytes())
    n = (len(mat) - 24) // 2  # format 16 after a 24-byte prefix (byte offset 24): 9000 samples, 30 s at 300 Hz
    mat[24 + 2 * (n - 6000):] = bytes(2 * 6000)
    (folder / "A00002.mat").write_bytes(bytes(mat))  # the header's checksum is 0 (not recorded), as published
    cfg = load_config("cinc2017")
    unit = record_unit(cfg, "cinc2017", "A00002", str(folder), label="N")
    summary, _ = compute_record(store_path(str(tmp_path / "out")), unit, cfg)
    assert summary.n_windows == 3 and summary.flat_windows == 2 and summary.no_window_reason is None
    rec = read_record(str(folder), "cinc2017", "A00002", cfg.database("cinc2017"), record_label="N")
    assert grid_features(cfg, rec).note == "2 of 3 windows with a flat lead (lead off?)"
    whole = read_record(str(cinc), "cinc2017", "A00002", cfg.database("cinc2017"), record_label="N")
    assert grid_features(cfg, whole).note == ""


def test_a_cuda_device_on_a_worker_without_cuda_is_a_setting_error_that_no_retry_cures(monkeypatch):
    """features.device = 'cuda' on a CPU-only worker raised a RuntimeError, which tasks retry as transient and the run
    ended saying a rerun may cure it; it is a setting, said so once."""
    import torch

    from ecgpipe.errors import PipelineError
    from ecgpipe.features import resolve_device
    from ecgpipe.orchestration.tasks import is_transient

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PipelineError, match="features.device = 'cuda', but CUDA is not available on this worker") as caught:
        resolve_device("cuda")
    assert not is_transient(caught.value)
    assert resolve_device("auto").type == "cpu"


def test_a_record_whose_every_window_holds_missing_samples_says_so():
    """nan_policy = "drop" on a record with a gap in every window: no window is kept, and the reason says why (it said
    there was no stretch inside an episode of a configured class, though the episode was there)."""
    from ecgpipe.stages.segments import no_window_reason

    fs = 360.0
    cfg = load_config("paper4", {"segments": {"nan_policy": "drop"}})
    x = _sinus(60, fs)
    x[::int(fs)] = np.nan  # one missing sample a second
    rec = _record(x, fs)
    found = record_windows(rec, cfg)
    assert len(found.starts) == 0 and found.n_with_gaps == 30  # 2-s windows of 60 s
    reason = no_window_reason(rec.episodes, 60.0, cfg, found.n_with_gaps)
    assert reason.startswith("no 2-s window without missing samples: each of its 30 window(s)") and "nan_policy" in reason
    clean = record_windows(_record(_sinus(60, fs), fs), cfg)
    assert clean.n_with_gaps == 0 and len(clean.starts) == 30
