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
    "few_beats",  # 1 when the context holds fewer than 3 beats (asystole, VF, or a detector failure)
)


def beat_times(signal: np.ndarray, fs: float) -> np.ndarray:
    """QRS times (seconds) of a whole single-lead record, by wfdb's xqrs detector (NaNs must be filled first)."""
    from wfdb import processing

    if len(signal) < int(5 * fs):  # xqrs needs a few seconds to learn its thresholds
        return np.zeros(0)
    qrs = processing.xqrs_detect(np.asarray(signal, dtype=np.float64), fs=fs, verbose=False)
    return np.asarray(qrs, dtype=np.float64) / fs


def rr_features(beats_s: np.ndarray, window_starts_s: np.ndarray, length_s: float, context_s: float) -> np.ndarray:
    """(n_windows, len(RHYTHM_FEATURES)) float32: RR statistics of the beats within ``context_s`` around each window."""
    beats_s = np.sort(np.asarray(beats_s, dtype=np.float64))
    starts = np.asarray(window_starts_s, dtype=np.float64)
    out = np.zeros((len(starts), len(RHYTHM_FEATURES)), dtype=np.float32)
    half = max(context_s, length_s) / 2
    for i, start in enumerate(starts):
        centre = start + length_s / 2
        lo, hi = np.searchsorted(beats_s, [centre - half, centre + half])
        in_window = np.searchsorted(beats_s, start + length_s) - np.searchsorted(beats_s, start)
        out[i, 6] = in_window / length_s
        rr = np.diff(beats_s[lo:hi])
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
