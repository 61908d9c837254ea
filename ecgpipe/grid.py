"""Every window of a record on a fixed grid: what ``ecgpipe predict`` classifies, and what the run's whole-recording
endpoints (``ecgpipe.stages.recording_grid``) score. One window every stride from the record's first sample, whatever
its annotations, through the training feature path (``ecgpipe.featurize``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ecgpipe.config import PipelineConfig
from ecgpipe.dataset import flat_windows, lead_windows, nan_free_windows, resampled_leads
from ecgpipe.featurize import Featurizer
from ecgpipe.records import EcgRecord


@dataclass
class GridFeatures:
    """What the classifier reads for every window of a record on a fixed grid (``predict``'s windows: one every
    stride from the record's first sample, whatever its annotations)."""

    starts: np.ndarray  # each window's first sample at the target rate
    usable: np.ndarray  # windows without NaN samples; only these have features
    cnn: np.ndarray | None  # (n_usable, D), None when the classifier does not read it
    rhythm: np.ndarray | None  # (n_usable, n_rhythm_columns), likewise
    stride_s: float  # the stride as cut: a whole number of samples at the target rate
    note: str = ""  # how the record was cut when not as usual (shorter than one window; flat leads)


def grid_features(cfg: PipelineConfig, rec: EcgRecord, stride_s: float | None = None) -> GridFeatures:
    """Features of every window of a record already read and validated, on ``stride_s`` (default: the window
    length) from its first sample, through the training feature path on whatever device this machine has."""
    fs_out, length = cfg.segments.target_fs, cfg.segment_length
    if stride_s is not None and not stride_s > 0:
        raise ValueError(f"stride_s must be a positive number of seconds, got {stride_s}")
    stride_s = stride_s or cfg.segments.length_s
    resampled = resampled_leads(rec, fs_out)
    note = ""
    if resampled.shape[1] < length:  # every record gets an answer: one window of the record repeated to its length
        note = (f"shorter ({math.floor(resampled.shape[1] / fs_out * 1000) / 1000:g} s) than one window ({cfg.segments.length_s:g} s): scored on "
                "one window of the record repeated to the window's length")
        resampled = np.tile(resampled, (1, -(-length // resampled.shape[1])))[:, :length]
    step = int(round(stride_s * fs_out))
    if step < 1:
        raise ValueError(f"stride_s {stride_s} s is less than one sample at {fs_out:g} Hz")
    starts = np.arange(0, resampled.shape[1] - length + 1, step, dtype=np.int64)
    usable = nan_free_windows(rec, starts, length, fs_out)
    windows = lead_windows(resampled, starts[usable], length)
    cnn, rhythm = Featurizer(cfg, device="auto").transform(rec, windows, starts[usable])
    if n_flat := int(flat_windows(windows).sum()):  # classified all the same: a flat line still gets an answer
        note = "; ".join(filter(None, [note, f"{n_flat} of {len(windows)} windows with a flat lead (lead off?)"]))
    return GridFeatures(starts, usable, cnn, rhythm, step / fs_out, note)
