"""Segments: fixed-length windows lying completely inside one rhythm episode, at one common sampling rate.

Pure functions (numpy/scipy only). Every database is resampled to the same rate so that no classifier can tell the
source database (and through it the class) from the sampling rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from ecgpipe.records import RhythmEpisode

# Polyphase resampling's work per output sample does not grow with the ratio's terms (only its filter's length, 20
# taps per unit of the larger term): MIMIC-IV's 62.4725 Hz frames hold ECG at 249.89 Hz, 25000/24989 of 250 Hz
MAX_RATIO_TERM = 100_000
# a rate no ratio of such terms gives exactly (300.0003 Hz) is resampled by the nearest ratio of small terms when it
# is this close, relative: a time scale off by 10 ppm shifts a window 36 ms per hour of record
RATE_TOLERANCE = 1e-5


def resample_ratio(fs_in: float, fs_out: float) -> Fraction:
    """The rational up/down factor from ``fs_in`` to ``fs_out``: exact where terms up to ``MAX_RATIO_TERM`` give it,
    else the nearest with terms up to 1000 within ``RATE_TOLERANCE``; a ValueError otherwise."""
    exact = fs_out / fs_in
    for limit in (1000, MAX_RATIO_TERM):
        ratio = Fraction(exact).limit_denominator(limit)
        if abs(float(ratio) - exact) <= 1e-9 * exact and max(ratio.numerator, ratio.denominator) <= MAX_RATIO_TERM:
            return ratio
    ratio = Fraction(exact).limit_denominator(1000)
    if abs(float(ratio) - exact) <= RATE_TOLERANCE * exact:
        return ratio
    raise ValueError(f"cannot resample {fs_in:g} Hz to {fs_out:g} Hz: no ratio of whole numbers up to {MAX_RATIO_TERM} "
                     f"gives it within {RATE_TOLERANCE:g} (is the header's sampling rate right?)")


def resample(signal: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling (``scipy.signal.resample_poly``, anti-aliasing FIR built in) from fs_in to fs_out."""
    if fs_in == fs_out:
        return np.asarray(signal, dtype=np.float64)
    ratio = resample_ratio(fs_in, fs_out)
    return resample_poly(signal, ratio.numerator, ratio.denominator)


@dataclass(frozen=True)
class SegmentWindows:
    """Windows of one record: start samples (at the target rate) and the index of the episode each comes from."""

    starts: np.ndarray  # int64
    episode: np.ndarray  # int32, index into the record's episode list


def segment_windows(
    episodes: list[RhythmEpisode],
    usable_labels: set[str],
    fs_in: float,
    fs_out: float,
    length: int,
    stride: int,
    n_out: int | None = None,
    tail: str = "drop",
) -> SegmentWindows:
    """Starts (in target-rate samples) of windows of ``length`` samples, every ``stride`` samples from each episode's
    start, that lie completely inside an episode whose label is in ``usable_labels``. ``n_out`` is the resampled
    signal's length, so no window runs past it. ``tail``: what becomes of an episode's end after its last whole
    window: ``"drop"`` (unused) or ``"end"`` (one more window, aligned to the episode's end, overlapping the one
    before it)."""
    starts, owner = [], []
    scale = fs_out / fs_in
    for i, ep in enumerate(episodes):
        if ep.label not in usable_labels:
            continue
        first = math.ceil(ep.start * scale)
        last_end = math.floor(ep.end * scale)  # exclusive end at the target rate
        if n_out is not None:
            last_end = min(last_end, n_out)
        if last_end - first < length:
            continue
        s = np.arange(first, last_end - length + 1, stride, dtype=np.int64)
        if tail == "end" and s[-1] + length < last_end:
            s = np.append(s, last_end - length)
        starts.append(s)
        owner.append(np.full(len(s), i, dtype=np.int32))
    if not starts:
        return SegmentWindows(np.zeros(0, np.int64), np.zeros(0, np.int32))
    return SegmentWindows(np.concatenate(starts), np.concatenate(owner))


def cut_windows(signal: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Stack ``signal[s:s+length]`` for every start into an (n, length) array (vectorised gather)."""
    if len(starts) == 0:
        return np.zeros((0, length), dtype=signal.dtype)
    idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(length)[None, :]
    return signal[idx]


def nan_free(signal_native: np.ndarray, starts: np.ndarray, length: int, fs_in: float, fs_out: float) -> np.ndarray:
    """Mask of windows whose span (plus a margin for the resampling filter, where there is one) holds no NaN in the
    native signal."""
    bad = np.isnan(signal_native)
    if not bad.any():
        return np.ones(len(starts), dtype=bool)
    scale = fs_in / fs_out
    # resample_poly's FIR reaches ~10 taps per phase each side; a signal at the target rate is not filtered (resample)
    margin = 0 if fs_in == fs_out else int(math.ceil(20 * max(scale, 1.0)))
    cum = np.concatenate([[0], np.cumsum(bad)])
    lo = np.clip(np.floor(starts * scale).astype(np.int64) - margin, 0, len(bad))
    hi = np.clip(np.ceil((starts + length) * scale).astype(np.int64) + margin, 0, len(bad))
    return (cum[hi] - cum[lo]) == 0


def fill_nan(signal: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN samples (only so the resampling filter can run; such windows are dropped)."""
    bad = np.isnan(signal)
    if not bad.any():
        return signal
    if bad.all():
        return np.zeros_like(signal)
    out = signal.copy()
    idx = np.arange(len(signal))
    out[bad] = np.interp(idx[bad], idx[~bad], signal[~bad])
    return out
