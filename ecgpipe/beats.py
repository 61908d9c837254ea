"""Beat-level features: what the average beat and each beat's departure from it say about the rhythm.

RR intervals see *when* the ventricles beat; a short single-lead recording says more about *how*. The classic
feature-based entries of the PhysioNet/CinC Challenge 2017 (Datta et al.; Zabihi et al.; Teijeiro et al.) all add
morphology to the RR statistics, because atrial fibrillation has no P wave and leaves fibrillatory waves between
beats, and "other rhythms" are largely ectopic beats, blocks and wide complexes. From the QRS times wfdb's ``xqrs``
already found (``ecgpipe.rhythm.beat_times``), over the same context around a window as the RR features:

* ``p_wave_rel`` -- peak-to-peak of the median beat 280-80 ms before the R peak, over its QRS peak-to-peak: a
  P wave survives the median of sinus beats; AF's fibrillatory waves average out.
* ``p_wave_consistency`` -- median correlation of each beat's P-wave stretch with the median beat's: sinus P waves
  repeat, fibrillatory waves do not.
* ``atrial_residual_rel`` -- RMS of what is left 280-80 ms before each R peak once the median beat is subtracted
  (QRST cancellation), over the QRS peak-to-peak: fibrillatory waves stay, a repeating P wave cancels.
* ``qrs_width_s`` -- width of the median beat's QRS (where its slope exceeds a fifth of its steepest): wide
  complexes (bundle-branch block, ventricular rhythms) are part of "other".
* ``template_corr_median`` and ``template_corr_p10`` -- correlation of each beat (100 ms before to 350 ms after R)
  with the median beat: ectopic beats and noise pull the low tail down.
* ``premature_frac`` -- share of beats that come more than 15 % early against the median RR: ectopy.
* ``pause_rel`` -- longest RR over the median RR: pauses, dropped beats and blocks.
* ``atypical_beat_frac`` -- share of beats correlating below 0.8 with the median beat: ectopic or aberrant beats.
* ``t_wave_rel`` -- peak-to-peak of the median beat 150-400 ms after R over its QRS's: flat or inverted T waves,
  repolarisation changes.
* ``fwave_power_frac`` -- share of the residual's power (the signal with the median beat subtracted at every beat)
  in 4-10 Hz, the band of fibrillatory waves (Stridh & Soernmo's QRST cancellation).
* ``qrs_amplitude_cv`` -- variation of the beats' QRS peak-to-peak (electrical alternans, noise, ectopy).
* ``kurtosis_sqi`` and ``hf_noise_frac`` -- signal quality: a clean ECG is peaky (kurtosis well above 5, Li et al.
  2008) and holds little power above 40 Hz (muscle noise), so a classifier can discount a noisy stretch.

Pure functions: no Prefect, no Dask, no Zarr. ``signal`` is the record's first lead at one sampling rate ``fs``.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

from ecgpipe.rhythm import context_rr, overlaps_gap, real_intervals
from ecgpipe.units import FLAT_MV

BEAT_FEATURES = (
    "p_wave_rel",
    "p_wave_consistency",
    "atrial_residual_rel",
    "qrs_width_s",
    "template_corr_median",
    "template_corr_p10",
    "premature_frac",
    "qrs_amplitude_cv",
    "pause_rel",
    "atypical_beat_frac",
    "t_wave_rel",
    "fwave_power_frac",
    "kurtosis_sqi",
    "hf_noise_frac",
)

# Beat stretch around each R peak (s), and the parts of it that the features look at.
BEAT_SPAN = (-0.30, 0.45)
P_WAVE = (-0.28, -0.08)
QRS = (-0.06, 0.06)
QRST = (-0.10, 0.35)
T_WAVE = (0.15, 0.40)
MIN_BEATS = 4  # fewer beats in a context make no median beat: the features stay 0


def _corr_rows(rows: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``rows`` (n, k) with ``template`` (k,); 0 for a flat row."""
    a = rows - rows.mean(axis=1, keepdims=True)
    b = template - template.mean()
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum())
    return np.divide(a @ b, denom, out=np.zeros(len(rows)), where=denom > 0)


def beat_matrix(filtered: np.ndarray, fs: float, beats_s: np.ndarray,
                gaps_s: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(n_beats, span) stretches of ``filtered`` around every beat whose whole span lies in the signal (and, with
    ``gaps_s`` from ``ecgpipe.rhythm.nan_gaps``, holds no NaN sample: the line interpolated across a gap is no
    beat's shape), and the indices (into ``beats_s``) of those beats."""
    lo, hi = int(round(BEAT_SPAN[0] * fs)), int(round(BEAT_SPAN[1] * fs))
    peaks = np.round(np.asarray(beats_s) * fs).astype(np.int64)
    inside = (peaks + lo >= 0) & (peaks + hi < len(filtered))
    if gaps_s is not None and len(gaps_s) and len(peaks):
        inside &= ~overlaps_gap((peaks + lo) / fs, (peaks + hi) / fs, np.asarray(gaps_s, dtype=np.float64))
    kept = np.flatnonzero(inside)
    if not len(kept):
        return np.zeros((0, hi - lo)), kept
    index = peaks[kept, None] + np.arange(lo, hi)[None, :]
    return filtered[index], kept


def span_columns(fs: float, part: tuple[float, float]) -> slice:
    """Columns of a beat stretch between ``part`` seconds around its R peak."""
    origin = -int(round(BEAT_SPAN[0] * fs))
    return slice(origin + int(round(part[0] * fs)), origin + int(round(part[1] * fs)))


def welch(x: np.ndarray, fs: float, nperseg: int) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.signal.welch(x, fs, nperseg=nperseg)`` with its defaults (Hann window, half overlap, each segment's
    mean removed, one-sided density), all segments in one FFT call: scipy 1.17 detrends and transforms segment by
    segment in Python, a fifth of a CinC record's segments stage. Equal to scipy's to ~1e-12 (tested)."""
    x = np.asarray(x, dtype=np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(x, nperseg)[:: nperseg - nperseg // 2]
    window = sps.get_window("hann", nperseg)
    spectrum = np.abs(np.fft.rfft((frames - frames.mean(axis=1, keepdims=True)) * window, axis=1)) ** 2
    power = spectrum.mean(axis=0) / (fs * (window**2).sum())
    power[1 : None if nperseg % 2 else -1] *= 2  # one-sided: every bin but DC (and Nyquist, for even lengths) twice
    return np.fft.rfftfreq(nperseg, 1 / fs), power


def fwave_power_frac(beats: np.ndarray, template: np.ndarray, fs: float) -> float:
    """Share of the QRST-cancelled beats' power in 4-10 Hz (of 1-40 Hz): what is left between the ventricular
    complexes once the median beat is subtracted, where atrial fibrillation leaves its fibrillatory waves."""
    residual = (beats - template).ravel()
    if len(residual) < 64:
        return 0.0
    freqs, power = welch(residual, fs, min(len(residual), 256))
    band, total = power[(freqs >= 4) & (freqs <= 10)].sum(), power[(freqs >= 1) & (freqs <= 40)].sum()
    return float(band / total) if total > 0 else 0.0


def beat_block(beats: np.ndarray, rr: np.ndarray, fs: float) -> np.ndarray:
    """The morphology part of ``BEAT_FEATURES`` (all but the two signal-quality columns) of one context's beat
    stretches (n, span) and RR intervals (s)."""
    out = np.zeros(len(BEAT_FEATURES) - 2)
    if len(beats) < MIN_BEATS:
        return out
    template = np.median(beats, axis=0)
    p, qrs, qrst = span_columns(fs, P_WAVE), span_columns(fs, QRS), span_columns(fs, QRST)
    qrs_ptp = max(float(np.ptp(template[qrs])), 1e-6)
    slope = np.abs(np.diff(template[span_columns(fs, (-0.12, 0.12))]))
    steep = np.flatnonzero(slope > 0.2 * slope.max()) if slope.max() > 0 else np.zeros(1, np.int64)
    residual = beats[:, p] - template[p]
    corr = _corr_rows(beats[:, qrst], template[qrst])
    beat_ptp = np.ptp(beats[:, qrs], axis=1)
    premature = np.mean(rr < 0.85 * np.median(rr)) if len(rr) >= 2 else 0.0
    out[:] = (
        np.ptp(template[p]) / qrs_ptp,
        np.median(_corr_rows(beats[:, p], template[p])),
        np.sqrt(np.mean(residual**2)) / qrs_ptp,
        (steep[-1] - steep[0] + 1) / fs,
        np.median(corr),
        np.percentile(corr, 10),
        premature,
        beat_ptp.std() / max(beat_ptp.mean(), 1e-6),
        rr.max() / np.median(rr) if len(rr) >= 2 else 0.0,
        np.mean(corr < 0.8),
        np.ptp(template[span_columns(fs, T_WAVE)]) / qrs_ptp,
        fwave_power_frac(beats, template, fs),
    )
    return out


def signal_quality(raw: np.ndarray, filtered: np.ndarray, fs: float) -> tuple[float, float]:
    """(kurtosis of the filtered signal, share of the raw signal's power above 40 Hz) of one context; 0 for a flat
    line (std under ``ecgpipe.units.FLAT_MV`` mV: what resampling leaves of a flat lead is no signal's quality)."""
    x = filtered - filtered.mean()
    var = float((x * x).mean())
    kurtosis = float((x**4).mean() / var**2) if var > FLAT_MV**2 else 0.0
    if len(raw) < 16 or fs <= 80 or np.std(raw) < FLAT_MV:
        return kurtosis, 0.0
    freqs, power = welch(raw - raw.mean(), fs, min(len(raw), int(fs)))
    total = power.sum()
    return kurtosis, float(power[freqs > 40].sum() / total) if total > 0 else 0.0


def beat_features(raw: np.ndarray, filtered: np.ndarray, fs: float, beats_s: np.ndarray, window_starts_s: np.ndarray,
                  length_s: float, context_s: float, gaps_s: np.ndarray | None = None) -> np.ndarray:
    """(n_windows, len(BEAT_FEATURES)) float32: ``BEAT_FEATURES`` over ``context_s`` seconds centred on each window
    ``[start, start + length_s)``. ``raw`` and ``filtered`` (band-passed, e.g. ``ecgpipe.waveform.bandpass``) are
    the same lead at ``fs``; ``beats_s`` its QRS times (s); ``gaps_s`` its NaN gaps (``ecgpipe.rhythm.nan_gaps``),
    across which no RR interval counts and in which no beat stretch is taken."""
    beats_s = np.sort(np.asarray(beats_s, dtype=np.float64))
    real = real_intervals(beats_s, gaps_s)
    stretches, kept = beat_matrix(filtered, fs, beats_s, gaps_s)
    kept_s = beats_s[kept]
    starts = np.asarray(window_starts_s, dtype=np.float64)
    out = np.zeros((len(starts), len(BEAT_FEATURES)), dtype=np.float32)
    half = max(context_s, length_s) / 2
    for i, start in enumerate(starts):
        centre = start + length_s / 2
        lo_s, hi_s = centre - half, centre + half
        lo, hi = np.searchsorted(kept_s, [lo_s, hi_s])
        b_lo, b_hi = np.searchsorted(beats_s, [lo_s, hi_s])
        out[i, :-2] = beat_block(stretches[lo:hi], context_rr(beats_s, b_lo, b_hi, real), fs)
        a, b = max(int(lo_s * fs), 0), min(int(hi_s * fs), len(filtered))
        out[i, -2:] = signal_quality(raw[a:b], filtered[a:b], fs)
    return out
