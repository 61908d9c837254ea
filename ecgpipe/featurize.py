"""From windows to what a classifier sees: the one feature path of training and of ``ecgpipe predict``.

    windows (n, L) or (n, 2, L) at segments.target_fs
      -> log-spectrograms, rounded to the store's float16 (``Featurizer.spectrograms``)
      -> images, ImageNet normalisation, backbone, pooled activations (``Featurizer.cnn``)
    record + window starts -> rhythm block (``Featurizer.rhythm``)

Training runs these steps as separate stages (spectrograms and features are stored chunk by chunk); prediction runs
them back to back (``Featurizer.transform``). Both call the same methods, so prediction sees exactly the values
training stored, float16 rounding included, as one scikit-learn Pipeline serves fit and predict.
"""

from __future__ import annotations

import numpy as np

from ecgpipe.config import PipelineConfig
from ecgpipe.records import EcgRecord
from ecgpipe.rhythm_block import window_rhythm_features
from ecgpipe.spectrogram import spectrogram_chunk
from ecgpipe.store import Layout


class Featurizer:
    """The feature path of one configuration. ``device`` overrides ``features.device`` (a model trained on a GPU
    predicts on whatever the machine has: ``"auto"``)."""

    def __init__(self, cfg: PipelineConfig, device: str | None = None):
        self.cfg = cfg
        self.feature_settings = cfg.features if device is None else cfg.features.model_copy(update={"device": device})

    def spectrograms(self, windows: np.ndarray) -> np.ndarray:
        """(n, [n_leads,] F, T) log-spectrograms as stored (float16)."""
        spec = spectrogram_chunk(windows, self.cfg.segments.target_fs, self.cfg.spectrogram)
        return spec.astype(Layout.SPECTROGRAM_DTYPE)

    def extractor(self, layers: tuple[str, ...] | list[str] = ()):
        """The process-wide CNN extractor (loaded once per worker). Its own layer is the first of ``layers`` (default:
        the configured layer); the others are tapped in the same forward pass."""
        from ecgpipe.features import get_extractor

        settings = self.feature_settings
        if layers:
            first, *others = layers
            settings = settings.model_copy(update={"layer": first})
            return get_extractor(settings, tuple(others))
        return get_extractor(settings)

    def cnn(self, spectrograms: np.ndarray, layers: list[str] | None = None) -> dict[str, np.ndarray]:
        """Pooled activations ``{layer: (n, D) float32}`` of ``layers`` (default: the configured layer), all from one
        forward pass per batch."""
        return self.extractor(layers or ()).extract(spectrograms)

    def cnn_features(self, spectrograms: np.ndarray) -> np.ndarray:
        """(n, D) float32 features of the configured layer."""
        extractor = self.extractor()
        return extractor.extract(spectrograms)[extractor.layer]

    def rhythm(self, record: EcgRecord, starts: np.ndarray) -> np.ndarray:
        """(n, n_rhythm_columns) float32 rhythm block of windows starting at ``starts`` (target-rate samples)."""
        return window_rhythm_features(record, starts, self.cfg)

    def transform(self, record: EcgRecord, windows: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """What the classifier reads for these windows: (CNN features, rhythm block), float64, each None when the
        classifier does not use it."""
        inputs = self.cfg.classifier.inputs
        cnn = self.cnn_features(self.spectrograms(windows)).astype(np.float64) if inputs != "rhythm" else None
        rhythm = self.rhythm(record, starts).astype(np.float64) if inputs != "cnn" else None
        return cnn, rhythm
