"""From a validated record to labelled windows, and from all records' windows to the (capped, seeded) dataset.

Pure functions: no Prefect, no Dask, no Zarr.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgpipe.config import PipelineConfig
from ecgpipe.records import EcgRecord
from ecgpipe.rhythm import beat_times, irregularity_features, rr_features
from ecgpipe.segments import cut_windows, fill_nan, nan_free, resample, segment_windows
from ecgpipe.waveform import bandpass, waveform_features


@dataclass
class RecordWindows:
    windows: np.ndarray  # (n, L) float32 at target_fs; (n, n_leads, L) with more than one lead
    starts: np.ndarray  # (n,) int64, target-rate samples
    episode: np.ndarray  # (n,) int32, index into record.episodes
    class_index: np.ndarray  # (n,) int16, index into config.class_names


def resampled_leads(record: EcgRecord, fs_out: float) -> np.ndarray:
    """The record's leads resampled to ``fs_out``: (n_leads, n_samples_out)."""
    return np.stack([resample(fill_nan(lead), record.fs, fs_out) for lead in record.signals])


def lead_windows(resampled: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """Windows of every lead: (n, length) for one lead, (n, n_leads, length) for more (leads become image channels)."""
    windows = np.stack([cut_windows(lead, starts, length) for lead in resampled], axis=1).astype(np.float32)
    return windows[:, 0] if len(resampled) == 1 else windows


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
        record.episodes, usable, record.fs, fs_out, config.segment_length, config.segment_stride, n_out=resampled.shape[1]
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
    )


def window_rhythm_features(record: EcgRecord, starts: np.ndarray, config: PipelineConfig) -> np.ndarray:
    """The 'rhythm' block of windows starting at ``starts`` (target-rate samples), columns ``config.rhythm_columns``:
    RR-interval features (``ecgpipe.rhythm``), with ``rhythm.irregularity`` the RR-pattern features, and with
    ``rhythm.waveform`` waveform descriptors (``ecgpipe.waveform``), all over ``rhythm.context_s`` seconds of the
    first lead around each window."""
    fs_out, length_s, context_s = config.segments.target_fs, config.segments.length_s, config.rhythm.context_s
    signal = fill_nan(record.signal)
    starts_s = np.asarray(starts) / fs_out
    beats_s = beat_times(signal, record.fs)
    blocks = [rr_features(beats_s, starts_s, length_s, context_s)]
    if config.rhythm.irregularity:
        blocks.append(irregularity_features(beats_s, starts_s, length_s, context_s))
    if config.rhythm.waveform:
        # at the common rate, so that every database's descriptors are measured alike
        filtered = bandpass(resample(signal, record.fs, fs_out), fs_out)
        blocks.append(waveform_features(filtered, fs_out, starts_s, length_s, context_s))
    return np.hstack(blocks).astype(np.float32)


def class_caps(config: PipelineConfig) -> dict[int, int | None]:
    return {i: config.class_cap(name) for i, name in enumerate(config.class_names)}
