"""Waveform descriptors of ventricular arrhythmias, complementary to the CNN and RR-interval features.

VT and VF are where the CNN features and the RR intervals fail across patients: both are fast, both defeat QRS
detectors. The classic shock-advisory literature separates them by the *shape* of the signal: VF is a chaotic,
roughly sinusoidal oscillation at 4-7 Hz with no sharp QRS complexes and little regularity; monomorphic VT repeats
one wide complex; sinus rhythm and AF have narrow, peaky QRS complexes and high-frequency content. The descriptors
below are the standard ones (computed over ``rhythm.context_s`` seconds around each window, like the RR features):

* ``dominant_freq_hz`` and ``band_concentration`` (power within 0.7-1.4x the dominant frequency, Barro et al. 1989)
* ``hf_power_frac`` (power above 12 Hz: sharp QRS complexes) and ``lf_power_frac`` (below 2.5 Hz)
* ``vf_leakage`` (Kuo & Dillman 1978: how well the signal cancels against itself half a period later; a sinusoid
  leaks little)
* ``tcsc`` (threshold crossing sample count, Arafat et al. 2009: fraction of samples above 20 % of the peak in 3-s
  blocks; high in VF, low for peaky QRS trains)
* ``kurtosis`` (QRS spikes make it large; a sinusoid has 1.5)
* ``hjorth_mobility`` and ``hjorth_complexity`` (mean frequency and its spread from the signal's derivatives)
* ``autocorr_peak`` (highest normalised autocorrelation at 0.2-2 s lag: regularity of a repeating complex)
* ``lz_complexity`` (Lempel-Ziv complexity of the central 8 s binarised at its median, Zhang et al. 1999)

Pure functions: no Prefect, no Dask, no Zarr.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

from ecgpipe.units import FLAT_MV

WAVEFORM_FEATURES = (
    "dominant_freq_hz",
    "band_concentration",
    "hf_power_frac",
    "lf_power_frac",
    "vf_leakage",
    "tcsc",
    "kurtosis",
    "hjorth_mobility",
    "hjorth_complexity",
    "autocorr_peak",
    "lz_complexity",
)

BAND_HZ = (0.5, 30.0)  # the ECG band the descriptors look at: baseline wander and mains/EMG noise removed


def bandpass(x: np.ndarray, fs: float) -> np.ndarray:
    """Zero-phase 0.5-30 Hz Butterworth filter (order 2), as VF detectors pre-filter their input."""
    sos = sps.butter(2, [BAND_HZ[0], min(BAND_HZ[1], 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
    return sps.sosfiltfilt(sos, np.asarray(x, dtype=np.float64))


def _lz_complexity(bits: np.ndarray) -> float:
    """Lempel-Ziv (1976) complexity of a binary sequence, normalised by n / log2(n)."""
    s = "".join("1" if b else "0" for b in bits)
    n, i, c = len(s), 0, 0
    while i < n:
        k = 1
        # grow the phrase while it already occurs in what came before it (plus itself, minus its last symbol)
        while i + k <= n and s[i : i + k] in s[: i + k - 1]:
            k += 1
        c += 1
        i += k
    return c * np.log2(n) / n if n > 1 else 0.0


def waveform_descriptors(x: np.ndarray, fs: float) -> np.ndarray:
    """The ``WAVEFORM_FEATURES`` of one band-passed excerpt ``x`` (at least 1 s at ``fs``): float64 vector."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean()
    out = np.zeros(len(WAVEFORM_FEATURES))
    scale = np.abs(x).max()
    if len(x) < fs or scale < FLAT_MV:  # flat line (asystole, lead off): every descriptor 0
        return out
    x = x / scale
    # spectrum (Welch, 2-s segments: 0.5 Hz resolution)
    freqs, power = sps.welch(x, fs=fs, nperseg=min(len(x), int(2 * fs)))
    band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
    total = power[band].sum() + 1e-12
    in_range = (freqs >= 1.0) & (freqs <= 12.0)
    df = freqs[in_range][np.argmax(power[in_range])] if in_range.any() else 0.0
    out[0] = df
    out[1] = power[band & (freqs >= 0.7 * df) & (freqs <= 1.4 * df)].sum() / total
    out[2] = power[band & (freqs > 12.0)].sum() / total
    out[3] = power[band & (freqs < 2.5)].sum() / total
    # VF leakage: compare the signal with itself half a mean period later (Kuo & Dillman); for a sinusoid
    # pi * sum|x| / sum|dx| is exactly half its period in samples
    dx = np.diff(x)
    half_period = int(round(np.pi * np.abs(x).sum() / max(np.abs(dx).sum(), 1e-12)))
    if 0 < half_period < len(x) // 2:
        a, b = x[half_period:], x[:-half_period]
        out[4] = np.abs(a + b).sum() / max((np.abs(a) + np.abs(b)).sum(), 1e-12)
    # TCSC: fraction of samples above 20 % of each 3-s block's peak
    block = max(int(3 * fs), 1)
    fractions = []
    # blocks start every 3 s while at least half a block is left; an excerpt under 1.5 s is one (shorter) block
    for lo in range(0, max(len(x) - block // 2, 1), block):
        seg = x[lo : lo + block]
        fractions.append(np.mean(np.abs(seg) > 0.2 * np.abs(seg).max()))
    out[5] = float(np.mean(fractions))
    var = x.var()
    out[6] = np.mean(x**4) / max(var**2, 1e-12)
    ddx = np.diff(dx)
    mobility = np.sqrt(dx.var() / max(var, 1e-12))
    out[7] = mobility * fs  # in rad/s-like units: comparable across sampling rates
    out[8] = np.sqrt(ddx.var() / max(dx.var(), 1e-12)) / max(mobility, 1e-12)
    # regularity: the highest autocorrelation between 0.2 and 2 s of lag
    ac = sps.correlate(x, x, mode="full", method="fft")[len(x) - 1 :]
    ac = ac / max(ac[0], 1e-12)
    lo, hi = int(0.2 * fs), min(int(2.0 * fs), len(x) - 1)
    out[9] = ac[lo:hi].max() if hi > lo else 0.0
    # chaos: Lempel-Ziv complexity of the central 8 s (Zhang et al.'s window; the cost grows with the square of the
    # length) above/below its median, decimated to ~125 Hz
    step = max(1, int(round(fs / 125)))
    centre, half = len(x) // 2, int(4 * fs)
    xs = x[max(0, centre - half) : centre + half : step]
    out[10] = _lz_complexity(xs > np.median(xs))
    return out


def waveform_features(filtered: np.ndarray, fs: float, window_starts_s: np.ndarray, length_s: float,
                      context_s: float) -> np.ndarray:
    """(n_windows, len(WAVEFORM_FEATURES)) float32: descriptors of ``context_s`` seconds of the band-passed record
    ``filtered`` around each window (clipped at the record's ends)."""
    starts = np.asarray(window_starts_s, dtype=np.float64)
    out = np.zeros((len(starts), len(WAVEFORM_FEATURES)), dtype=np.float32)
    half = max(context_s, length_s) / 2
    for i, start in enumerate(starts):
        centre = start + length_s / 2
        lo, hi = max(0, int((centre - half) * fs)), min(len(filtered), int((centre + half) * fs))
        out[i] = waveform_descriptors(filtered[lo:hi], fs)
    return out
