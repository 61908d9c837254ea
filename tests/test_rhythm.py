"""RR-interval features and the prediction helpers: pure functions on synthetic beat trains and window classes."""

import numpy as np
import pytest
import wfdb

from ecgpipe.config import load_config
from ecgpipe.predict import episodes_from_windows
from ecgpipe.records import read_record
from ecgpipe.rhythm import IRREGULARITY_FEATURES, RHYTHM_FEATURES, beat_times, irregularity_features, rr_features, sample_entropy
from ecgpipe.rhythm_block import window_rhythm_features

COL = {name: i for i, name in enumerate(RHYTHM_FEATURES)}
IRR = {name: i for i, name in enumerate(IRREGULARITY_FEATURES)}


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


def test_irregularity_features_tell_af_from_bigeminy():
    """Both series are as irregular as plain RR statistics go; only their pattern differs."""
    rng = np.random.default_rng(0)
    af = np.cumsum(rng.uniform(0.4, 1.2, 80))  # patternless
    bigeminy = np.cumsum(np.tile([0.55, 1.05], 40))  # premature beat, compensatory pause, again and again
    regular = np.arange(0, 60, 0.8)
    starts = np.array([20.0, 30.0])
    assert rr_features(bigeminy, starts, 2.0, 30.0)[:, COL["rr_cv"]].min() > rr_features(af, starts, 2.0, 30.0)[:, COL["rr_cv"]].max()
    a, b, r = (irregularity_features(x, starts, 2.0, 30.0) for x in (af, bigeminy, regular))
    assert np.all(b[:, IRR["rr_autocorr_lag1"]] < -0.9) and np.all(b[:, IRR["rr_autocorr_lag2"]] > 0.9)
    assert np.all(np.abs(a[:, IRR["rr_autocorr_lag1"]]) < 0.3) and np.all(np.abs(a[:, IRR["rr_autocorr_lag2"]]) < 0.3)
    assert np.all(np.abs(a[:, IRR["turning_point_ratio"]] - 2 / 3) < 0.15)  # a random series' expectation
    assert np.all(a[:, IRR["rr_sample_entropy"]] > 1.0) and np.all(b[:, IRR["rr_sample_entropy"]] < 0.1)
    assert np.all(b[:, IRR["poincare_cluster_frac"]] > 0.9) and np.all(a[:, IRR["poincare_cluster_frac"]] < 0.4)
    assert np.all(b[:, IRR["lag2_delta_rel"]] < 0.01) and np.all(a[:, IRR["lag2_delta_rel"]] > 0.15)
    # a perfectly regular rhythm: no pattern to measure, and no float noise mistaken for turning points
    assert np.all(np.abs(r[:, [IRR["rr_autocorr_lag1"], IRR["turning_point_ratio"], IRR["lag2_delta_rel"]]]) < 1e-9)
    assert np.all(r[:, IRR["poincare_cluster_frac"]] == 1)
    # fewer than five intervals: zeros, never NaN
    assert np.all(irregularity_features(np.array([1.0, 2.0, 3.0]), starts, 2.0, 30.0) == 0)


def test_sample_entropy_textbook_cases():
    assert sample_entropy(np.full(30, 0.8), 1, 0.01) == 0.0  # every template matches: perfectly predictable
    assert sample_entropy(np.tile([0.5, 1.0], 15), 1, 0.01) == 0.0
    noise = np.random.default_rng(1).uniform(0, 1, 200)
    assert sample_entropy(noise, 1, 0.05) > 2.0  # uniform noise: matches of m+1 rarer than those of m by ~1/0.1
    assert sample_entropy(np.array([1.0, 2.0, 3.0]), 1, 0.1) == 0.0  # too short


def _median_block(physionet, record: str, label: str, cfg) -> dict:
    """Median rhythm block over 20 windows (30-s contexts, xqrs beats) inside ``label`` episodes of a mitdb record."""
    rec = read_record(physionet / "mitdb", "mitdb", record, cfg.database("mitdb"))
    starts_s = []
    for ep in rec.episodes:
        t = ep.start / rec.fs + 15
        while ep.label == label and t + 17 < ep.end / rec.fs and len(starts_s) < 20:
            starts_s.append(t)
            t += 10
    block = window_rhythm_features(rec, np.array(starts_s) * cfg.segments.target_fs, cfg)
    return dict(zip(cfg.rhythm_columns, np.median(block, axis=0)))


def test_real_af_and_ectopic_sinus_rhythm_differ_in_pattern_not_in_irregularity(physionet):
    """mitdb 233 is annotated normal sinus rhythm but full of ventricular ectopic beats: its RR intervals are as
    irregular as mitdb 221's atrial fibrillation, which is what makes AF patients' segments hard to tell apart."""
    cfg = load_config("paper4-best", {"rhythm": {"irregularity": True, "context_s": 30.0}})
    assert cfg.rhythm_columns == RHYTHM_FEATURES + IRREGULARITY_FEATURES
    ectopic, af = _median_block(physionet, "233", "(N", cfg), _median_block(physionet, "221", "(AFIB", cfg)
    assert ectopic["rr_cv"] >= af["rr_cv"] * 0.9 and ectopic["mad_delta_rel"] >= af["mad_delta_rel"] * 0.9
    assert af["rr_sample_entropy"] > ectopic["rr_sample_entropy"] + 1.0
    assert ectopic["poincare_cluster_frac"] > af["poincare_cluster_frac"] + 0.4
    assert ectopic["rr_autocorr_lag1"] < af["rr_autocorr_lag1"] - 0.2


def test_xqrs_beats_on_a_real_record_match_the_reference(physionet):
    path = str(physionet / "mitdb" / "100")
    sig = wfdb.rdrecord(path, channels=[0], sampto=360 * 60).p_signal[:, 0]
    beats = beat_times(sig, 360.0)
    ref = wfdb.rdann(path, "atr", sampto=360 * 60)
    ref_beats = ref.sample[np.isin(ref.symbol, list("NLRAaJSVFej"))] / 360.0
    matched = np.min(np.abs(beats[:, None] - ref_beats[None, :]), axis=0) < 0.15
    assert matched.mean() > 0.98 and abs(len(beats) - len(ref_beats)) <= 3


def test_episodes_tile_the_windows():
    eps = episodes_from_windows(np.array([0, 2, 4, 6, 8.0]), np.array([0, 0, 1, -1, 1]), 2.0, 9.5, ["n", "a"], ["(N", "(AFIB"])
    assert [(e.start_s, e.end_s, e.class_name, e.label) for e in eps] == [
        (0.0, 4.0, "n", "(N"), (4.0, 6.0, "a", "(AFIB"), (8.0, 9.5, "a", "(AFIB")]


def test_the_vectorised_peak_finder_gives_wfdb_xqrs_the_very_same_beats(physionet):
    """local_peaks replaces wfdb's find_local_peaks inside xqrs (speed): same peaks on random signals with ties and
    plateaus, and the same beats as wfdb's own code on real records (AF, ectopy, a short CinC record)."""
    from wfdb import processing
    from wfdb.processing import qrs as wfdb_qrs
    from wfdb.processing.peaks import find_local_peaks

    from ecgpipe.rhythm import local_peaks

    rng = np.random.default_rng(1)
    for trial in range(200):
        n, radius = int(rng.integers(50, 2000)), int(rng.integers(1, 50))
        x = rng.normal(size=n)
        x = np.round(x, 1) if trial % 3 == 0 else np.repeat(np.round(x[: n // 4], 1), 4) if trial % 3 == 1 else x
        assert np.array_equal(local_peaks(x, radius), find_local_peaks(x, radius)), (trial, radius)
    cases = [(physionet / "mitdb" / "203", 0, 360 * 120), (physionet / "mitdb" / "119", 0, 360 * 120),
             (physionet / "cinc2017" / "A00004", 0, None)]
    for path, lo, hi in cases:
        rec = wfdb.rdrecord(str(path), sampfrom=lo, sampto=hi, channels=[0])
        sig = rec.p_signal[:, 0]
        fast = beat_times(sig, rec.fs)
        wfdb_qrs.find_local_peaks = find_local_peaks
        try:
            own = processing.xqrs_detect(sig, fs=rec.fs, verbose=False) / rec.fs
        finally:
            wfdb_qrs.find_local_peaks = local_peaks
        assert len(fast) > 10 and np.array_equal(fast, own), path
