"""Beat-level features (ecgpipe/beats.py) and beat-detail features (ecgpipe/beat_detail.py): textbook answers on synthetic beat trains, and what real CinC 2017
recordings show (atrial fibrillation has no repeating P wave and leaves fibrillatory waves between beats)."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from ecgpipe.beat_detail import BEAT_DETAIL_FEATURES, beat_detail_features
from ecgpipe.beats import BEAT_FEATURES, beat_features
from ecgpipe.rhythm import beat_times
from ecgpipe.waveform import bandpass

FS = 250.0
col = BEAT_FEATURES.index


def beat_train(rr_s: np.ndarray, p_wave: bool = True, qrs_sigma_s: float = 0.012, fwave_mv: float = 0.0, seed: int = 0,
               t_wave_mv: float = 0.25):
    """A synthetic lead: Gaussian P (160 ms before R), QRS and T (250 ms after, ``t_wave_mv`` high) waves at the
    beats; optionally 6-Hz fibrillatory waves of random phase drift. Returns (signal, beat times in s)."""
    beats = 0.5 + np.concatenate([[0], np.cumsum(rr_s)])
    t = np.arange(int((beats[-1] + 1.0) * FS)) / FS
    x = np.zeros_like(t)
    for b in beats:
        x += 1.0 * np.exp(-0.5 * ((t - b) / qrs_sigma_s) ** 2)
        x += t_wave_mv * np.exp(-0.5 * ((t - b - 0.25) / 0.04) ** 2)
        if p_wave:
            x += 0.15 * np.exp(-0.5 * ((t - b + 0.16) / 0.02) ** 2)
    if fwave_mv:
        rng = np.random.default_rng(seed)
        phase = np.cumsum(rng.normal(0, 0.3, len(t)))
        x += fwave_mv * np.sin(2 * np.pi * 6 * t + phase)
    return x, beats


def features_of(x, beats):
    return dict(zip(BEAT_FEATURES, beat_features(x, bandpass(x, FS), FS, beats, np.array([0.0]), len(x) / FS, len(x) / FS)[0]))


def test_sinus_beats_show_a_repeating_p_wave_and_af_like_beats_do_not():
    rng = np.random.default_rng(1)
    sinus = features_of(*beat_train(np.full(30, 0.8)))
    af = features_of(*beat_train(rng.uniform(0.45, 1.1, 30), p_wave=False, fwave_mv=0.08))
    assert sinus["p_wave_consistency"] > 0.9 and af["p_wave_consistency"] < 0.5
    assert sinus["p_wave_rel"] > 1.5 * af["p_wave_rel"]  # short AF intervals bring the last T wave into the P stretch
    assert af["fwave_power_frac"] > sinus["fwave_power_frac"] + 0.2
    assert sinus["premature_frac"] == 0 and af["premature_frac"] > 0.15
    assert sinus["pause_rel"] == pytest.approx(1.0) and af["pause_rel"] > 1.2
    assert sinus["template_corr_median"] > 0.99 and sinus["atypical_beat_frac"] == 0


def test_wide_complexes_measure_wider_than_narrow_ones():
    narrow = features_of(*beat_train(np.full(20, 0.8), qrs_sigma_s=0.010))
    wide = features_of(*beat_train(np.full(20, 0.8), qrs_sigma_s=0.030))
    assert wide["qrs_width_s"] > narrow["qrs_width_s"] + 0.03


def test_bigeminy_counts_every_other_beat_as_premature():
    x, beats = beat_train(np.tile([0.55, 1.05], 15))
    f = features_of(x, beats)
    assert f["premature_frac"] == pytest.approx(0.5, abs=0.05)


def test_too_few_beats_give_zeros_and_quality_stays_finite():
    x, beats = beat_train(np.full(2, 0.8))
    out = beat_features(x, bandpass(x, FS), FS, beats, np.array([0.0]), len(x) / FS, len(x) / FS)
    assert out.shape == (1, len(BEAT_FEATURES)) and np.isfinite(out).all()
    assert (out[0, : col("kurtosis_sqi")] == 0).all()
    flat = np.zeros(2000)
    assert np.isfinite(beat_features(flat, flat, FS, np.zeros(0), np.array([0.0, 2.0]), 2.0, 4.0)).all()


def test_windows_use_only_the_beats_in_their_context():
    """A record whose first half is sinus and second half AF-like: each window's context sees its own half."""
    rng = np.random.default_rng(2)
    x1, b1 = beat_train(np.full(40, 0.8))
    x2, b2 = beat_train(rng.uniform(0.45, 1.1, 40), p_wave=False, fwave_mv=0.08)
    x, beats = np.concatenate([x1, x2]), np.concatenate([b1, b2 + len(x1) / FS])
    starts = np.array([5.0, len(x1) / FS + 5.0])
    out = beat_features(x, bandpass(x, FS), FS, beats, starts, 10.0, 20.0)
    assert out[0, col("p_wave_consistency")] > 0.9 > 0.5 > out[1, col("p_wave_consistency")]


def real_cinc_medians(physionet, rows_of, names_of, records: slice) -> dict:
    """Per label (N, A): median over ``records`` (a slice of that label's records, in RECORDS order) of the real CinC
    2017 records' ``rows_of(x, filtered, fs, beats, start, length)`` (one row each), named by ``names_of``."""
    folder = physionet / "cinc2017"
    labels = dict(line.split(",") for line in (folder / "REFERENCE-v3.csv").read_text().split())
    names = (folder / "RECORDS").read_text().split()
    medians = {}
    for label in ("N", "A"):
        rows = []
        for name in [n for n in names if labels[n] == label][records]:
            rec = wfdb.rdrecord(str(folder / name))
            x, fs = rec.p_signal[:, 0].astype(np.float64), float(rec.fs)
            rows.append(rows_of(x, bandpass(x, fs), fs, beat_times(x, fs), np.array([0.0]), len(x) / fs)[0])
        medians[label] = dict(zip(names_of, np.median(rows, axis=0)))
    return medians


def test_real_cinc_af_records_lack_the_p_wave_that_normal_records_have(physionet):
    """Twelve AF and twelve normal records of the real CinC 2017 data: AF's median P-wave consistency is far lower,
    its fibrillatory-band residual and premature beats far higher."""
    medians = real_cinc_medians(physionet, lambda x, f, fs, b, start, n: beat_features(x, f, fs, b, start, n, n),
                                BEAT_FEATURES, slice(0, 12))
    n, a = medians["N"], medians["A"]
    assert n["p_wave_consistency"] > 0.8 and a["p_wave_consistency"] < 0.5
    assert a["fwave_power_frac"] > 1.5 * n["fwave_power_frac"]
    assert a["premature_frac"] > n["premature_frac"] + 0.1


def test_welch_equals_scipys_for_the_lengths_the_features_use():
    """beats.welch (one FFT call for all segments) gives scipy.signal.welch's frequencies and densities."""
    import scipy.signal as sps

    from ecgpipe.beats import welch

    rng = np.random.default_rng(0)
    for n, nperseg in [(64, 64), (65, 64), (300, 256), (257, 256), (3000, 300), (2999, 300), (1000, 255), (100, 99)]:
        x = rng.normal(size=n) + 3.0
        f_ref, p_ref = sps.welch(x, fs=300.0, nperseg=nperseg)
        f, p = welch(x, 300.0, nperseg)
        assert np.array_equal(f, f_ref) and p.shape == p_ref.shape
        assert np.abs(p - p_ref).max() <= 1e-12 * np.abs(p_ref).max(), (n, nperseg)


# ---------------------------------------------------------------------------------------------- beat detail
def detail_of(x, beats):
    return dict(zip(BEAT_DETAIL_FEATURES, beat_detail_features(bandpass(x, FS), FS, beats, np.array([0.0]), len(x) / FS,
                                                               len(x) / FS)[0]))


def test_inverted_t_waves_and_inverted_leads_change_sign():
    upright = detail_of(*beat_train(np.full(20, 0.8)))
    inverted_t = detail_of(*beat_train(np.full(20, 0.8), t_wave_mv=-0.25))
    x, beats = beat_train(np.full(20, 0.8))
    inverted_lead = detail_of(-x, beats)
    assert upright["t_wave_signed"] > 0.1 and inverted_t["t_wave_signed"] < -0.1
    assert upright["t_peak_latency_s"] == pytest.approx(0.25, abs=0.02)
    assert upright["qrs_polarity"] > 0.5 and inverted_lead["qrs_polarity"] < -0.5


def test_premature_beats_with_compensatory_pauses_and_rate_runs():
    sinus = detail_of(*beat_train(np.full(24, 0.8)))
    assert sinus["compensatory_pause_frac"] == 0
    assert sinus["rr_p05_rel"] == pytest.approx(1.0, abs=0.01) and sinus["rr_p95_rel"] == pytest.approx(1.0, abs=0.01)
    assert sinus["beat_rate_per_s"] == pytest.approx(25 / (24 * 0.8 + 1.5), rel=0.02)
    # one premature ventricular beat every fourth interval: 0.5 s early, then a 1.1 s compensatory pause
    ectopy = detail_of(*beat_train(np.tile([0.8, 0.8, 0.5, 1.1], 6)))
    assert ectopy["compensatory_pause_frac"] == pytest.approx(6 / 23, abs=0.01)
    assert ectopy["rr_p05_rel"] < 0.7 < 1.3 < ectopy["rr_p95_rel"]
    # a run of tachycardia (150 bpm) inside a 60-bpm rhythm
    run = detail_of(*beat_train(np.concatenate([np.full(12, 1.0), np.full(10, 0.4), np.full(12, 1.0)])))
    assert run["hr_max_running_bpm"] == pytest.approx(150, rel=0.01) and run["hr_min_running_bpm"] == pytest.approx(60, rel=0.01)


def test_fibrillatory_residual_has_its_dominant_frequency():
    rng = np.random.default_rng(3)
    af = detail_of(*beat_train(rng.uniform(0.45, 1.1, 40), p_wave=False, fwave_mv=0.08))
    assert 4.0 <= af["residual_dominant_hz"] <= 8.0  # the 6-Hz waves, broadened by their phase drift
    assert 0 < af["residual_spectral_entropy"] < 1 and af["rr_regular_std_rel"] > 0.1


def test_beat_detail_with_too_few_beats_is_zero():
    x, beats = beat_train(np.full(2, 0.8))
    out = beat_detail_features(bandpass(x, FS), FS, beats, np.array([0.0, 1.0]), 2.0, 4.0)
    assert out.shape == (2, len(BEAT_DETAIL_FEATURES)) and (out == 0).all()


def test_real_cinc_af_records_have_wider_rr_tails_than_normal_ones(physionet):
    """Twelve AF and twelve normal records of the real CinC 2017 data: AF's RR percentiles spread far wider about the
    median, and stay irregular with the long intervals left out."""
    medians = real_cinc_medians(physionet, lambda x, f, fs, b, start, n: beat_detail_features(f, fs, b, start, n, n),
                                BEAT_DETAIL_FEATURES, slice(12, 24))
    n, a = medians["N"], medians["A"]
    assert a["rr_p95_rel"] - a["rr_p05_rel"] > 2 * (n["rr_p95_rel"] - n["rr_p05_rel"])
    assert a["rr_regular_std_rel"] > 2 * n["rr_regular_std_rel"]
    assert 50 < n["hr_min_running_bpm"] <= n["hr_max_running_bpm"] < 120


def test_the_cinc2017_preset_names_every_beat_detail_column_once():
    from ecgpipe.config import load_config

    columns = load_config("cinc2017").rhythm_columns
    assert set(BEAT_DETAIL_FEATURES) <= set(columns) and len(set(columns)) == len(columns)
    assert load_config("paper4-best").rhythm.beat_detail is False  # the paper4 presets keep their measured block
