"""From a validated record to labelled windows, and from all records' windows to the (capped, seeded) dataset.

Pure functions: no Prefect, no Dask, no Zarr.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ecgpipe.config import PipelineConfig
from ecgpipe.records import EcgRecord
from ecgpipe.rhythm import beat_times, rr_features
from ecgpipe.segments import cut_windows, fill_nan, nan_free, resample, segment_windows


@dataclass
class RecordWindows:
    windows: np.ndarray  # (n, L) float32 at target_fs
    starts: np.ndarray  # (n,) int64, target-rate samples
    episode: np.ndarray  # (n,) int32, index into record.episodes
    class_index: np.ndarray  # (n,) int16, index into config.class_names


def record_windows(record: EcgRecord, config: PipelineConfig) -> RecordWindows:
    """Every window of ``record`` that lies inside an episode of a configured class (noise and other labels excluded),
    cut from the lead resampled to ``segments.target_fs``."""
    fs_out = config.segments.target_fs
    label_to_class = config.label_to_class
    usable = set(label_to_class) - set(config.segments.exclude_labels)
    resampled = resample(fill_nan(record.signal), record.fs, fs_out)
    found = segment_windows(
        record.episodes, usable, record.fs, fs_out, config.segment_length, config.segment_stride, n_out=len(resampled)
    )
    keep = nan_free(record.signal, found.starts, config.segment_length, record.fs, fs_out)
    starts, episode = found.starts[keep], found.episode[keep]
    class_of_episode = np.array(
        [config.class_names.index(label_to_class[ep.label]) if ep.label in usable else -1 for ep in record.episodes],
        dtype=np.int16,
    )
    return RecordWindows(
        windows=cut_windows(resampled, starts, config.segment_length).astype(np.float32),
        starts=starts,
        episode=episode,
        class_index=class_of_episode[episode] if len(episode) else np.zeros(0, np.int16),
    )


def window_rhythm_features(record: EcgRecord, starts: np.ndarray, config: PipelineConfig) -> np.ndarray:
    """RR-interval features (``ecgpipe.rhythm``) of windows starting at ``starts`` (target-rate samples)."""
    beats = beat_times(fill_nan(record.signal), record.fs)
    return rr_features(beats, np.asarray(starts) / config.segments.target_fs, config.segments.length_s, config.rhythm.context_s)


def class_caps(config: PipelineConfig) -> dict[int, int | None]:
    return {i: config.class_cap(name) for i, name in enumerate(config.class_names)}
