"""The rhythm block of a record's windows: RR-interval, RR-irregularity and waveform features over a context.

Pure functions: no Prefect, no Dask, no Zarr. Computed with a record's windows and stored beside them, but keyed apart
from them (``ecgpipe.stages.segments``): spectrograms never read it.
"""

from __future__ import annotations

import numpy as np

from ecgpipe.beat_detail import beat_detail_features
from ecgpipe.beats import beat_features
from ecgpipe.config import PipelineConfig
from ecgpipe.records import EcgRecord
from ecgpipe.rhythm import beat_times, beats_outside_gaps, irregularity_features, nan_gaps, rr_features
from ecgpipe.segments import fill_nan, resample
from ecgpipe.waveform import bandpass, waveform_features


def window_rhythm_features(record: EcgRecord, starts: np.ndarray, config: PipelineConfig) -> np.ndarray:
    """The 'rhythm' block of windows starting at ``starts`` (target-rate samples), columns ``config.rhythm_columns``:
    RR-interval features (``ecgpipe.rhythm``), with ``rhythm.irregularity`` the RR-pattern features, with
    ``rhythm.beats`` the beat-level features (``ecgpipe.beats``), with ``rhythm.beat_detail`` the beat-detail
    features (``ecgpipe.beat_detail``), and with
    ``rhythm.waveform`` waveform descriptors (``ecgpipe.waveform``), all over ``rhythm.context_s`` seconds of the
    first lead around each window (the waveform descriptors over ``rhythm.waveform_context_s`` when set)."""
    fs_out, length_s, context_s = config.segments.target_fs, config.segments.length_s, config.rhythm.context_s
    if len(starts) == 0:
        # no window, nothing to describe; a record of a few samples would not even survive the filters below
        return np.zeros((0, len(config.rhythm_columns)), dtype=np.float32)
    signal = fill_nan(record.signal)
    starts_s = np.asarray(starts) / fs_out
    # NaN gaps (nan_policy = "drop") are interpolated for the detector and the filters, but hold no beats: the
    # features leave out the "beats" found there and the RR intervals across them (ecgpipe.rhythm.GAP_MARGIN_S)
    gaps_s = nan_gaps(record.signal, record.fs)
    beats_s = beats_outside_gaps(beat_times(signal, record.fs), gaps_s)
    blocks = [rr_features(beats_s, starts_s, length_s, context_s, gaps_s)]
    if config.rhythm.irregularity:
        blocks.append(irregularity_features(beats_s, starts_s, length_s, context_s, gaps_s))
    if config.rhythm.beats or config.rhythm.beat_detail or config.rhythm.waveform:
        # at the common rate, so that every database's beats and descriptors are measured alike
        raw = resample(signal, record.fs, fs_out)
        filtered = bandpass(raw, fs_out)
    if config.rhythm.beats:
        blocks.append(beat_features(raw, filtered, fs_out, beats_s, starts_s, length_s, context_s, gaps_s))
    if config.rhythm.beat_detail:
        blocks.append(beat_detail_features(filtered, fs_out, beats_s, starts_s, length_s, context_s, gaps_s))
    if config.rhythm.waveform:
        blocks.append(waveform_features(filtered, fs_out, starts_s, length_s, config.rhythm.waveform_seconds))
    return np.hstack(blocks).astype(np.float32)
