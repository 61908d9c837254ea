"""Log-power spectrograms of segments, computed for a whole chunk at once (no per-segment Python loop).

Pure function over numpy arrays; the result is stored at its native (frequency x time) resolution. Turning it into a
224x224 RGB image is the feature stage's job.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

from ecgpipe.config import SpectrogramSettings
from ecgpipe.units import FLAT_MV


def spectrogram_frequencies(fs: float, settings: SpectrogramSettings) -> np.ndarray:
    """Frequencies (Hz) of the rows kept by :func:`spectrogram_chunk`."""
    f = np.fft.rfftfreq(settings.nfft, d=1.0 / fs)
    return f[(f >= settings.fmin) & (f <= settings.fmax)]


def spectrogram_chunk(segments: np.ndarray, fs: float, settings: SpectrogramSettings) -> np.ndarray:
    """Spectrograms of an (n, length) array of segments -> (n, n_freq, n_time) float32; of (n, n_leads, length)
    two-lead segments -> (n, n_leads, n_freq, n_time).

    Each segment (each lead) is optionally z-scored (amplitude units and gains differ between databases), then
    ``scipy.signal.spectrogram`` (STFT power spectral density) is taken along the last axis for all segments together,
    rows outside [fmin, fmax] are dropped and the power is scaled (log10, dB or linear).
    """
    x = np.asarray(segments, dtype=np.float64)
    if x.ndim not in (2, 3):
        raise ValueError(f"segments must be (n, length) or (n, n_leads, length), got shape {x.shape}")
    # a window (lead) with a std under FLAT_MV mV is a flat line: its spectrogram is a constant's, whatever ripple
    # resampling left in it (ecgpipe.units.FLAT_MV), instead of that ripple z-scored to full scale
    std = x.std(axis=-1, keepdims=True)
    flat = std < FLAT_MV
    if settings.standardize:
        x = np.where(flat, 0.0, (x - x.mean(axis=-1, keepdims=True)) / np.where(flat, 1.0, std))
    elif flat.any():
        x = np.where(flat, x.mean(axis=-1, keepdims=True), x)
    f, _, power = sps.spectrogram(
        x,
        fs=fs,
        window=settings.window,
        nperseg=settings.nperseg,
        noverlap=settings.noverlap,
        nfft=settings.nfft,
        detrend="constant",
        scaling="density",
        mode="psd",
        axis=-1,
    )
    keep = (f >= settings.fmin) & (f <= settings.fmax)
    power = power[..., keep, :]
    if settings.scaling == "log":
        power = np.log10(power + settings.eps)
    elif settings.scaling == "db":
        power = 10.0 * np.log10(power + settings.eps)
    return power.astype(np.float32)


def spectrogram_shape(window_shape: int | tuple[int, ...], fs: float, settings: SpectrogramSettings) -> tuple[int, ...]:
    """Shape of one segment's spectrogram: (n_freq, n_time) for a (length,) window, (n_leads, n_freq, n_time) for
    an (n_leads, length) one."""
    shape = (window_shape,) if isinstance(window_shape, int) else tuple(window_shape)
    return spectrogram_chunk(np.zeros((1, *shape)), fs, settings).shape[1:]
