"""From a validated record to its labelled windows (the signal a segment's spectrogram is computed from).

The rhythm block beside the windows (RR and waveform features) is ``ecgpipe.rhythm_block``: keyed apart, so that
changing it recomputes no spectrogram.

Pure functions: no Prefect, no Dask, no Zarr.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgpipe.config import PipelineConfig
from ecgpipe.records import EcgRecord
from ecgpipe.segments import cut_windows, fill_nan, nan_free, resample, segment_windows
from ecgpipe.units import FLAT_MV


@dataclass
class RecordWindows:
    windows: np.ndarray  # (n, L) float32 at target_fs; (n, n_leads, L) with more than one lead
    starts: np.ndarray  # (n,) int64, target-rate samples
    episode: np.ndarray  # (n,) int32, index into record.episodes
    class_index: np.ndarray  # (n,) int16, index into config.class_names
    n_with_gaps: int = 0  # windows inside a configured class's episode left out for missing samples (NaN)


def resampled_leads(record: EcgRecord, fs_out: float) -> np.ndarray:
    """The record's leads resampled to ``fs_out``: (n_leads, n_samples_out)."""
    return np.stack([resample(fill_nan(lead), record.fs, fs_out) for lead in record.signals])


def lead_windows(resampled: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Windows of every lead: (n, length) for one lead, (n, n_leads, length) for more (leads become image channels)."""
    windows = np.stack([cut_windows(lead, starts, length) for lead in resampled], axis=1).astype(np.float32)
    return windows[:, 0] if len(resampled) == 1 else windows


def flat_windows(windows: np.ndarray) -> np.ndarray:
    """Mask of windows (``lead_windows``' shape) in which a lead is a flat line (std under ``units.FLAT_MV``: a lead
    off, a disconnected channel, a recorder's zeros), where no rhythm can be seen."""
    if not len(windows):
        return np.zeros(0, dtype=bool)
    return (np.asarray(windows).std(axis=-1) < FLAT_MV).reshape(len(windows), -1).any(axis=1)


def nan_free_windows(record: EcgRecord, starts: np.ndarray, length: int, fs_out: float) -> np.ndarray:
    """Mask of windows with no NaN in any of the record's leads."""
    return np.logical_and.reduce([nan_free(lead, starts, length, record.fs, fs_out) for lead in record.signals])


def record_windows(record: EcgRecord, config: PipelineConfig) -> RecordWindows:
    """Every window of ``record`` that lies inside an episode of a configured class (noise and other labels excluded),
    cut from its leads resampled to ``segments.target_fs``."""
    fs_out = config.segments.target_fs
    label_to_class = config.label_to_class
    usable = set(label_to_class) - set(config.segments.exclude_labels)
    resampled = resampled_leads(record, fs_out)
    found = segment_windows(
        record.episodes, usable, record.fs, fs_out, config.segment_length, config.segment_stride, n_out=resampled.shape[1],
        tail=config.segments.tail,
    )
    keep = nan_free_windows(record, found.starts, config.segment_length, fs_out)
    starts, episode = found.starts[keep], found.episode[keep]
    class_of_episode = np.array(
        [config.class_names.index(label_to_class[ep.label]) if ep.label in usable else -1 for ep in record.episodes],
        dtype=np.int16,
    )
    return RecordWindows(
        windows=lead_windows(resampled, starts, config.segment_length),
        starts=starts,
        episode=episode,
        class_index=class_of_episode[episode] if len(episode) else np.zeros(0, np.int16),
        n_with_gaps=int((~keep).sum()),
    )
