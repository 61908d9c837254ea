import numpy as np

from ecgpipe.config import SpectrogramSettings
from ecgpipe.spectrogram import spectrogram_chunk, spectrogram_frequencies, spectrogram_shape

FS = 250.0


def test_shape_dtype_and_frequency_range():
    s = SpectrogramSettings(nperseg=64, noverlap=56, nfft=256, fmin=0.0, fmax=50.0)
    out = spectrogram_chunk(np.random.default_rng(0).normal(size=(7, 500)), FS, s)
    freqs = spectrogram_frequencies(FS, s)
    assert out.shape == (7, len(freqs), (500 - 64) // 8 + 1) and out.dtype == np.float32
    assert freqs[0] == 0 and freqs[-1] <= 50 and len(freqs) == 52
    assert spectrogram_shape(500, FS, s) == out.shape[1:]


def test_tone_peaks_at_its_frequency():
    s = SpectrogramSettings()
    t = np.arange(500) / FS
    out = spectrogram_chunk(np.stack([np.sin(2 * np.pi * f * t) for f in (5.0, 20.0)]), FS, s)
    freqs = spectrogram_frequencies(FS, s)
    peaks = freqs[out.mean(axis=2).argmax(axis=1)]
    assert abs(peaks[0] - 5) < 1.5 and abs(peaks[1] - 20) < 1.5


def test_batched_equals_one_by_one_and_scale_invariance():
    s = SpectrogramSettings()
    x = np.random.default_rng(1).normal(size=(5, 500))
    batched = spectrogram_chunk(x, FS, s)
    single = np.concatenate([spectrogram_chunk(x[i : i + 1], FS, s) for i in range(5)])
    assert np.allclose(batched, single, atol=1e-5)
    # standardize=True: gain (mV vs ADC units) does not change the picture
    assert np.allclose(spectrogram_chunk(1000 * x, FS, s), batched, atol=1e-4)


def test_scalings():
    x = np.random.default_rng(2).normal(size=(2, 500))
    log = spectrogram_chunk(x, FS, SpectrogramSettings(scaling="log"))
    db = spectrogram_chunk(x, FS, SpectrogramSettings(scaling="db"))
    lin = spectrogram_chunk(x, FS, SpectrogramSettings(scaling="linear"))
    assert np.allclose(db, 10 * log, atol=1e-3)
    assert np.allclose(np.log10(lin.astype(np.float64) + 1e-10), log, atol=1e-3)
