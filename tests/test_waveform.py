"""Waveform descriptors (ecgpipe/waveform.py): synthetic signals whose answers are known, then real VF vs sinus rhythm."""

import numpy as np
import pytest

from ecgpipe.config import load_config
from ecgpipe.records import read_record
from ecgpipe.rhythm import RHYTHM_FEATURES
from ecgpipe.rhythm_block import window_rhythm_features
from ecgpipe.waveform import WAVEFORM_FEATURES, bandpass, waveform_descriptors, waveform_features

COL = {name: i for i, name in enumerate(WAVEFORM_FEATURES)}


def sine(fs: float, hz: float = 5.0, seconds: float = 8.0) -> np.ndarray:
    """VF-like: a 5-Hz oscillation with a little noise."""
    t = np.arange(0, seconds, 1 / fs)
    return np.sin(2 * np.pi * hz * t) + 0.05 * np.random.default_rng(0).standard_normal(len(t))


def qrs_train(fs: float, rr_s: float = 0.8, seconds: float = 8.0) -> np.ndarray:
    """Sinus-like: narrow 40-ms Gaussian spikes every ``rr_s`` seconds on a quiet baseline."""
    t = np.arange(0, seconds, 1 / fs)
    x = np.zeros_like(t)
    for beat in np.arange(0.3, seconds, rr_s):
        x += np.exp(-0.5 * ((t - beat) / 0.012) ** 2)
    return x + 0.01 * np.random.default_rng(1).standard_normal(len(t))


def describe(x: np.ndarray, fs: float) -> dict:
    return dict(zip(WAVEFORM_FEATURES, waveform_descriptors(bandpass(x, fs), fs)))


def test_a_sinusoid_and_a_qrs_train_get_the_textbook_answers():
    fs = 250.0
    vf, sinus = describe(sine(fs), fs), describe(qrs_train(fs), fs)
    assert vf["dominant_freq_hz"] == pytest.approx(5.0, abs=0.5)
    assert vf["band_concentration"] > 0.9 > sinus["band_concentration"]
    assert vf["vf_leakage"] < 0.3 < 0.8 < sinus["vf_leakage"]  # a sinusoid cancels against itself half a period on
    assert vf["kurtosis"] < 2.0 and sinus["kurtosis"] > 5.0  # sharp spikes, heavy tails
    assert vf["tcsc"] > 0.6 > 0.3 > sinus["tcsc"]
    assert sinus["hf_power_frac"] > 0.1 > vf["hf_power_frac"]
    assert vf["autocorr_peak"] > 0.8 and sinus["autocorr_peak"] > 0.8  # both are regular
    noise = describe(np.random.default_rng(2).standard_normal(int(8 * fs)), fs)
    assert noise["autocorr_peak"] < 0.5 and noise["lz_complexity"] > vf["lz_complexity"]


def test_descriptors_do_not_depend_on_the_sampling_rate_or_amplitude():
    a, b = describe(sine(250.0), 250.0), describe(3.7 * sine(360.0), 360.0)
    for name in ("dominant_freq_hz", "band_concentration", "vf_leakage", "tcsc", "kurtosis", "hjorth_mobility"):
        assert a[name] == pytest.approx(b[name], rel=0.1, abs=0.02), name


def test_flat_and_short_excerpts_give_zeros_not_nan():
    assert np.all(waveform_descriptors(np.zeros(2000), 250.0) == 0)
    assert np.all(waveform_descriptors(np.ones(100), 250.0) == 0)  # shorter than one second
    out = waveform_features(bandpass(sine(250.0, seconds=20), 250.0), 250.0, np.array([0.0, 9.0, 19.5]), 2.0, 10.0)
    assert out.shape == (3, len(WAVEFORM_FEATURES)) and np.isfinite(out).all()


def test_real_vf_and_sinus_rhythm_differ_as_expected(physionet):
    """vfdb 426: sinus rhythm early on, ventricular fibrillation later (its annotations say where)."""
    cfg = load_config("paper4-sweep", {"rhythm": {"waveform": True, "context_s": 8.0}})
    rec = read_record(physionet / "vfdb", "vfdb", "426", cfg.database("vfdb"))
    starts = {}
    for ep in rec.episodes:
        if ep.label in ("(N", "(VF") and ep.n_samples > 20 * rec.fs and ep.label not in starts:
            starts[ep.label] = (ep.start + 5 * rec.fs) / rec.fs * cfg.segments.target_fs  # target-rate samples
    assert set(starts) == {"(N", "(VF"}
    block = window_rhythm_features(rec, np.array([starts["(N"], starts["(VF"]]), cfg)
    assert block.shape == (2, len(cfg.rhythm_columns)) == (2, len(RHYTHM_FEATURES) + len(WAVEFORM_FEATURES))
    normal, vf = (dict(zip(WAVEFORM_FEATURES, row[len(RHYTHM_FEATURES):])) for row in block)
    assert vf["kurtosis"] < normal["kurtosis"]
    assert vf["tcsc"] > normal["tcsc"]
    assert vf["vf_leakage"] < normal["vf_leakage"]
