"""RR-interval features and the prediction helpers: pure functions on synthetic beat trains and window classes."""

import numpy as np
import pytest
import wfdb

from ecgpipe.predict import episodes_from_windows, majority_smooth
from ecgpipe.rhythm import RHYTHM_FEATURES, beat_times, rr_features

COL = {name: i for i, name in enumerate(RHYTHM_FEATURES)}


def test_regular_and_irregular_rhythms_are_told_apart():
    regular = np.arange(0, 60, 0.8)  # 75 bpm, perfectly regular
    rng = np.random.default_rng(0)
    irregular = np.cumsum(rng.uniform(0.4, 1.2, 80))  # AF-like: irregularly irregular
    starts = np.array([10.0, 20.0, 30.0])
    reg = rr_features(regular, starts, 2.0, 10.0)
    irr = rr_features(irregular, starts, 2.0, 10.0)
    assert reg[:, COL["heart_rate_bpm"]] == pytest.approx(75.0)
    assert np.all(reg[:, COL["rr_cv"]] < 1e-6) and np.all(reg[:, COL["pnn50"]] == 0)
    assert np.all(irr[:, COL["rr_cv"]] > 0.15) and np.all(irr[:, COL["pnn50"]] >= 0.5)
    assert reg[0, COL["beats_in_window_per_s"]] in (1.0, 1.5)  # 2 or 3 of the 0.8-s beats fall in a 2-s window
    assert np.all(reg[:, COL["few_beats"]] == 0)


def test_too_few_beats_are_flagged_not_nan():
    out = rr_features(np.array([5.0, 5.9]), np.array([0.0, 4.0, 50.0]), 2.0, 10.0)
    assert np.isfinite(out).all()
    assert out[:, COL["few_beats"]].tolist() == [1.0, 1.0, 1.0]


def test_xqrs_beats_on_a_real_record_match_the_reference(physionet):
    path = str(physionet / "mitdb" / "100")
    sig = wfdb.rdrecord(path, channels=[0], sampto=360 * 60).p_signal[:, 0]
    beats = beat_times(sig, 360.0)
    ref = wfdb.rdann(path, "atr", sampto=360 * 60)
    ref_beats = ref.sample[np.isin(ref.symbol, list("NLRAaJSVFej"))] / 360.0
    matched = np.min(np.abs(beats[:, None] - ref_beats[None, :]), axis=0) < 0.15
    assert matched.mean() > 0.98 and abs(len(beats) - len(ref_beats)) <= 3


def test_majority_smoothing_removes_isolated_flips_only():
    classes = np.array([0, 0, 1, 0, 0, 2, 2, 2, 2, -1, 2])
    smoothed = majority_smooth(classes, 5)
    assert smoothed.tolist() == [0, 0, 0, 0, 0, 2, 2, 2, 2, -1, 2]
    assert majority_smooth(classes, 1).tolist() == classes.tolist()


def test_episodes_tile_the_windows():
    eps = episodes_from_windows(np.array([0, 2, 4, 6, 8.0]), np.array([0, 0, 1, -1, 1]), 2.0, 9.5, ["n", "a"], ["(N", "(AFIB"])
    assert [(e.start_s, e.end_s, e.class_name, e.label) for e in eps] == [
        (0.0, 4.0, "n", "(N"), (4.0, 6.0, "a", "(AFIB"), (8.0, 9.5, "a", "(AFIB")]
