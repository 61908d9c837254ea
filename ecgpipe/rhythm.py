"""Beat-to-beat (RR-interval) rhythm features, complementary to the CNN features of a spectrogram.

A 2-s spectrogram holds two or three beats: too few to see the irregular irregularity of atrial fibrillation. The
RR features of a window are therefore computed over a *context* centred on it (``rhythm.context_s``, default 10 s),
from QRS complexes found by wfdb's ``xqrs`` detector on the whole record. The context ignores episode boundaries on
purpose: at prediction time nobody knows where episodes start.

Pure functions: no Prefect, no Dask, no Zarr.
"""

from __future__ import annotations

import numpy as np

RHYTHM_FEATURES = (
    "heart_rate_bpm",  # 60 / mean RR
    "rr_cv",  # std RR / mean RR: irregularity
    "rmssd_rel",  # root mean square of successive RR differences / mean RR
    "pnn50",  # fraction of successive RR differences above 50 ms
    "mad_delta_rel",  # median |successive RR difference| / median RR: robust irregularity
    "log_rr_range",  # log(max RR / min RR)
    "beats_in_window_per_s",  # QRS detections inside the window itself, per second
    "few_beats",  # 1 when the context holds < 2 RR intervals (asystole, VF, a detector failure, a NaN gap)
)

# Irregularity is not atrial fibrillation: ectopic beats (bigeminy, trigeminy, frequent PVCs) make a sinus rhythm's
# RR intervals just as variable. What sets AF apart is that its irregularity has no pattern: successive intervals are
# unpredictable and uncorrelated, where ectopy repeats a short-long motif. These are the classic measures of that
# difference (Tateno & Glass 2001; Lake & Moorman 2011; Sarkar et al. 2008), over the same context as above.
IRREGULARITY_FEATURES = (
    "rr_autocorr_lag1",  # bigeminy: strongly negative (short, long, short...); AF: near 0
    "rr_autocorr_lag2",  # bigeminy: strongly positive; AF: near 0
    "turning_point_ratio",  # share of intervals that are a local peak or trough: 2/3 for a random series
    "rr_sample_entropy",  # SampEn(m=1, r=3.75 % of the median RR): AF unpredictable (high), ectopic motifs repeat
    "poincare_cluster_frac",  # share of (RR_i, RR_i+1) points with >= 2 others within 40 ms: ectopy clusters, AF scatters
    "lag2_delta_rel",  # median |RR_i+2 - RR_i| / median RR: irregularity that survives an alternating short-long motif
)

# A record with NaN samples (nan_policy = "drop") is searched for beats with the NaNs interpolated; its kept windows
# may still have a gap in their context. The gap holds no beats, so the interval across it would be a fake pause:
# such intervals are left out (``real_intervals``), and so are beats found within GAP_MARGIN_S of a gap, where the
# interpolated line and its corners are all the detector saw (half a QRS complex's worth of the edge: a real beat
# that close to a gap has lost part of its complex anyway). The real intervals either side of a gap are then joined
# into one series: one successive difference crosses the gap, a far smaller error than the pause.
GAP_MARGIN_S = 0.05


def beat_times(signal: np.ndarray, fs: float) -> np.ndarray:
    """QRS times (seconds) of a whole single-lead record, by wfdb's xqrs detector (NaNs must be filled first)."""
    from wfdb import processing
    from wfdb.processing import qrs as wfdb_qrs

    if len(signal) < int(5 * fs):  # xqrs needs a few seconds to learn its thresholds
        return np.zeros(0)
    # xqrs spends a third of a record's segments stage in find_local_peaks (a Python loop calling max() per sample);
    # local_peaks gives the same peaks, vectorised (tested against it), so xqrs finds the same beats ~2x faster
    wfdb_qrs.find_local_peaks = local_peaks
    qrs = processing.xqrs_detect(np.asarray(signal, dtype=np.float64), fs=fs, verbose=False)
    return np.asarray(qrs, dtype=np.float64) / fs


def local_peaks(sig: np.ndarray, radius: int) -> np.ndarray:
    """``wfdb.processing.find_local_peaks``, vectorised, with the same result: a sample is a peak when it equals the
    maximum of ``sig[i - radius : i + radius]``; after a peak the scan moves on by ``radius`` samples."""
    from scipy.ndimage import maximum_filter1d
    from wfdb.processing.peaks import find_local_peaks

    sig = np.asarray(sig)
    if sig.ndim != 1 or len(sig) <= radius + 1 or radius < 1 or not np.isfinite(sig).all():
        return find_local_peaks(sig, radius)  # the original's edge cases, as it handles them
    if np.min(sig) == np.max(sig):
        return np.empty(0)
    # window [i - radius, i + radius - 1], cut at the ends (repeating an end sample never changes a maximum)
    window_max = maximum_filter1d(sig, size=2 * radius, mode="nearest")
    peaks, next_allowed = [], 0
    for i in np.flatnonzero(sig == window_max).tolist():
        if i >= next_allowed:
            peaks.append(i)
            next_allowed = i + radius
    return np.array(peaks)


def nan_gaps(signal: np.ndarray, fs: float) -> np.ndarray:
    """(k, 2) ``[start, end)`` (s) of every run of NaN samples of a lead, in order: its first NaN sample's time and
    the time just after its last (the next sample's), so that ``end - start`` is the seconds of signal missing."""
    bad = np.isnan(np.asarray(signal, dtype=np.float64))
    if not bad.any():
        return np.zeros((0, 2))
    edges = np.diff(np.concatenate([[0], bad.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1) / fs


def beats_outside_gaps(beats_s: np.ndarray, gaps_s: np.ndarray, margin_s: float = GAP_MARGIN_S) -> np.ndarray:
    """The beats that lie at least ``margin_s`` from every NaN gap (``nan_gaps``). A "beat" in a gap or at its edge
    was found in the straight line that ``ecgpipe.segments.fill_nan`` draws across it (or its corners): not a beat."""
    beats_s = np.asarray(beats_s, dtype=np.float64)
    if not len(gaps_s) or not len(beats_s):
        return beats_s
    return beats_s[~overlaps_gap(beats_s - margin_s, beats_s + margin_s, gaps_s)]


def overlaps_gap(lo_s: np.ndarray, hi_s: np.ndarray, gaps_s: np.ndarray) -> np.ndarray:
    """Whether each span ``[lo_s, hi_s]`` meets one of the ordered, disjoint ``gaps_s`` (``nan_gaps``)."""
    nxt = np.searchsorted(gaps_s[:, 1], lo_s, side="right")  # the first gap that ends after lo
    return (nxt < len(gaps_s)) & (gaps_s[np.minimum(nxt, len(gaps_s) - 1), 0] <= hi_s)


def real_intervals(beats_s: np.ndarray, gaps_s: np.ndarray | None) -> np.ndarray | None:
    """(n_beats - 1,) bool: which RR intervals of the sorted beats hold no NaN sample; None when there are no gaps.
    An interval across a gap is not an RR interval (the gap's beats are missing, it would be a fake pause)."""
    if gaps_s is None or not len(gaps_s) or len(beats_s) < 2:
        return None
    return ~overlaps_gap(beats_s[:-1], beats_s[1:], np.asarray(gaps_s, dtype=np.float64))


def context_beats(beats_s: np.ndarray, start: float, length_s: float, context_s: float) -> tuple[int, int]:
    """Index range ``[lo, hi)`` of the sorted beats within ``context_s`` centred on the window ``[start, start +
    length_s)``."""
    centre, half = start + length_s / 2, max(context_s, length_s) / 2
    lo, hi = np.searchsorted(beats_s, [centre - half, centre + half])
    return int(lo), int(hi)


def context_rr(beats_s: np.ndarray, lo: int, hi: int, real: np.ndarray | None) -> np.ndarray:
    """RR intervals (s) between the beats ``beats_s[lo:hi]``, without those that ``real`` (``real_intervals``) marks
    as spanning a gap: a window's RR statistics come from real intervals only."""
    rr = np.diff(beats_s[lo:hi])
    return rr if real is None or hi - lo < 2 else rr[real[lo : hi - 1]]


def _context_rr(beats_s: np.ndarray, start: float, length_s: float, context_s: float,
                real: np.ndarray | None = None) -> np.ndarray:
    """RR intervals (s) of the sorted beats within ``context_s`` centred on the window ``[start, start + length_s)``."""
    return context_rr(beats_s, *context_beats(beats_s, start, length_s, context_s), real)


def rr_features(beats_s: np.ndarray, window_starts_s: np.ndarray, length_s: float, context_s: float,
                gaps_s: np.ndarray | None = None) -> np.ndarray:
    """(n_windows, len(RHYTHM_FEATURES)) float32: RR statistics of the beats within ``context_s`` around each window.
    ``gaps_s`` (``nan_gaps``): stretches without signal, whose intervals do not count (``real_intervals``)."""
    beats_s = np.sort(np.asarray(beats_s, dtype=np.float64))
    real = real_intervals(beats_s, gaps_s)
    starts = np.asarray(window_starts_s, dtype=np.float64)
    out = np.zeros((len(starts), len(RHYTHM_FEATURES)), dtype=np.float32)
    for i, start in enumerate(starts):
        in_window = np.searchsorted(beats_s, start + length_s) - np.searchsorted(beats_s, start)
        out[i, 6] = in_window / length_s
        rr = _context_rr(beats_s, start, length_s, context_s, real)
        if len(rr) < 2:
            out[i, 7] = 1.0
            continue
        mean_rr, median_rr = rr.mean(), np.median(rr)
        delta = np.abs(np.diff(rr))
        out[i, :6] = (
            60.0 / mean_rr,
            rr.std() / mean_rr,
            np.sqrt(np.mean(delta**2)) / mean_rr,
            np.mean(delta > 0.05),
            np.median(delta) / median_rr,
            np.log(rr.max() / max(rr.min(), 1e-3)),
        )
    return out


def _chebyshev_distances(points: np.ndarray) -> np.ndarray:
    """(n, n) largest coordinate difference between every two rows of ``points`` (n, k)."""
    return np.abs(points[:, None, :] - points[None, :, :]).max(axis=-1)


def sample_entropy(x: np.ndarray, m: int, r: float) -> float:
    """Sample entropy -ln(A/B) of a short series: B pairs of length-m templates within ``r`` (Chebyshev), A of
    length m+1 (Richman & Moorman 2000). No match of length m+1 counts as one, so the value stays finite."""
    n = len(x)
    if n < m + 3:
        return 0.0

    def matching_pairs(k: int) -> int:
        templates = np.lib.stride_tricks.sliding_window_view(x, k)[: n - m]
        return int((_chebyshev_distances(templates) <= r).sum() - len(templates))  # without each template's match with itself

    b = matching_pairs(m)
    return float(-np.log(max(matching_pairs(m + 1), 1) / b)) if b else 0.0


def rr_irregularity(rr: np.ndarray) -> np.ndarray:
    """The ``IRREGULARITY_FEATURES`` of one series of RR intervals (s); zeros with fewer than 5 intervals."""
    out = np.zeros(len(IRREGULARITY_FEATURES))
    if len(rr) < 5:
        return out
    rr = np.round(rr, 6)  # equal intervals (whole samples) exactly equal: float noise would make turning points up
    median_rr = np.median(rr)
    x = rr - rr.mean()
    energy = max((x * x).sum(), 1e-12)
    delta = np.diff(rr)
    pairs = np.stack([rr[:-1], rr[1:]], axis=1)
    near = (_chebyshev_distances(pairs) < 0.04).sum(axis=1) - 1
    out[:] = (
        (x[1:] * x[:-1]).sum() / energy,
        (x[2:] * x[:-2]).sum() / energy,
        np.mean(delta[1:] * delta[:-1] < 0),
        sample_entropy(rr, 1, 0.0375 * median_rr),
        np.mean(near >= 2),
        np.median(np.abs(rr[2:] - rr[:-2])) / median_rr,
    )
    return out


def irregularity_features(beats_s: np.ndarray, window_starts_s: np.ndarray, length_s: float, context_s: float,
                          gaps_s: np.ndarray | None = None) -> np.ndarray:
    """(n_windows, len(IRREGULARITY_FEATURES)) float32: ``rr_irregularity`` of the beats within ``context_s`` around
    each window, like ``rr_features`` (intervals across ``gaps_s`` left out)."""
    beats_s = np.sort(np.asarray(beats_s, dtype=np.float64))
    real = real_intervals(beats_s, gaps_s)
    starts = np.asarray(window_starts_s, dtype=np.float64)
    out = np.zeros((len(starts), len(IRREGULARITY_FEATURES)), dtype=np.float32)
    for i, start in enumerate(starts):
        out[i] = rr_irregularity(_context_rr(beats_s, start, length_s, context_s, real))
    return out
