"""Beat-level features (ecgpipe/beats.py): textbook answers on synthetic beat trains, and what real CinC 2017
recordings show (atrial fibrillation has no repeating P wave and leaves fibrillatory waves between beats)."""

from __future__ import annotations

import numpy as np
import pytest
import wfdb

from ecgpipe.beats import BEAT_FEATURES, beat_features
from ecgpipe.rhythm import beat_times
from ecgpipe.waveform import bandpass

FS = 250.0
col = BEAT_FEATURES.index


def beat_train(rr_s: np.ndarray, p_wave: bool = True, qrs_sigma_s: float = 0.012, fwave_mv: float = 0.0, seed: int = 0):
    """A synthetic lead: Gaussian P (160 ms before R), QRS and T (250 ms after) waves at the beats; optionally
    6-Hz fibrillatory waves of random phase drift. Returns (signal, beat times in s)."""
    beats = 0.5 + np.concatenate([[0], np.cumsum(rr_s)])
    t = np.arange(int((beats[-1] + 1.0) * FS)) / FS
    x = np.zeros_like(t)
    for b in beats:
        x += 1.0 * np.exp(-0.5 * ((t - b) / qrs_sigma_s) ** 2)
        x += 0.25 * np.exp(-0.5 * ((t - b - 0.25) / 0.04) ** 2)
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


def test_real_cinc_af_records_lack_the_p_wave_that_normal_records_have(physionet):
    """Twelve AF and twelve normal records of the real CinC 2017 data: AF's median P-wave consistency is far lower,
    its fibrillatory-band residual and premature beats far higher."""
    folder = physionet / "cinc2017"
    labels = dict(line.split(",") for line in (folder / "REFERENCE-v3.csv").read_text().split())
    names = (folder / "RECORDS").read_text().split()
    medians = {}
    for label in ("N", "A"):
        rows = []
        for name in [n for n in names if labels[n] == label][:12]:
            rec = wfdb.rdrecord(str(folder / name))
            x, fs = rec.p_signal[:, 0].astype(np.float64), float(rec.fs)
            beats = beat_times(x, fs)
            rows.append(beat_features(x, bandpass(x, fs), fs, beats, np.array([0.0]), len(x) / fs, len(x) / fs)[0])
        medians[label] = dict(zip(BEAT_FEATURES, np.median(rows, axis=0)))
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
