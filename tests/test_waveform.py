"""Waveform descriptors (ecgpipe/waveform.py): synthetic signals whose answers are known, then real VF vs sinus rhythm."""

import numpy as np
import pytest

from ecgpipe.config import ConfigError, load_config
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


def test_a_short_waveform_context_sees_the_rhythm_under_the_window_not_its_neighbours(physionet):
    """rhythm.waveform_context_s: a window 7 s before vfdb 426's first VF. Over a 30-s context its waveform
    descriptors take in 9 s of VF; over 4 s they see sinus rhythm only (peaky QRS complexes: higher kurtosis, fewer
    samples above threshold). The RR columns keep their 30 s either way."""
    overrides = {"waveform": True, "context_s": 30.0}
    long_cfg = load_config("paper4-sweep", {"rhythm": overrides})
    short_cfg = load_config("paper4-sweep", {"rhythm": {**overrides, "waveform_context_s": 4.0}})
    rec = read_record(physionet / "vfdb", "vfdb", "426", long_cfg.database("vfdb"))
    onset_s = next(ep.start for ep in rec.episodes if ep.label == "(VF") / rec.fs
    starts = np.array([(onset_s - 7.0) * long_cfg.segments.target_fs])
    long_block, short_block = (window_rhythm_features(rec, starts, cfg) for cfg in (long_cfg, short_cfg))
    n_rr = len(RHYTHM_FEATURES)
    np.testing.assert_array_equal(long_block[:, :n_rr], short_block[:, :n_rr])
    long_wave, short_wave = (dict(zip(WAVEFORM_FEATURES, block[0, n_rr:])) for block in (long_block, short_block))
    assert short_wave["kurtosis"] > long_wave["kurtosis"]
    assert short_wave["tcsc"] < long_wave["tcsc"]
    assert "(waveform over 4 s)" in short_cfg.rhythm_description
    assert "waveform over" not in long_cfg.rhythm_description


def test_a_waveform_context_without_the_waveform_descriptors_is_an_error():
    with pytest.raises(ConfigError, match=r"waveform_context_s is set but rhythm\.waveform is false"):
        load_config("paper4-best", {"rhythm": {"waveform_context_s": 4.0}})
    with pytest.raises(ConfigError, match="waveform_context_s"):
        load_config("paper4-best", {"rhythm": {"waveform": True, "waveform_context_s": 0.0}})
