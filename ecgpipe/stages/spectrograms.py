"""Stage 3, one unit per chunk of ``run.chunk_size`` rows of the segment table: the log-spectrograms of its segments,
in ``spectrograms/<settings hash>/data`` ((N, [n_leads,] F, T) float16).

Key of a chunk: its rows' segments (record and start) and their records' signal keys, the spectrogram settings, and the code version
(this module's, and the segment table's: an edit to how the table is built recomputes every chunk).
"""

from __future__ import annotations

import numpy as np

from ecgpipe import store as zs
from ecgpipe.config import PipelineConfig
from ecgpipe.errors import PipelineError
from ecgpipe.featurize import Featurizer
from ecgpipe.keys import array_digest, code_version, content_key
from ecgpipe.spectrogram import spectrogram_frequencies, spectrogram_shape
from ecgpipe.stages import table
from ecgpipe.stages.segments import CLASSIFY_MODULES, RHYTHM_MODULES
from ecgpipe.stages.table import SegmentTable
from ecgpipe.store import Layout

STAGE = "spectrograms"


# The CNN's modules: ``featurize`` imports them (inside a method), but no spectrogram is computed by them
CNN_MODULES = ("ecgpipe.features", "ecgpipe.backbones", "ecgpipe.engines")


def code() -> str:
    # the rhythm block is stored beside the windows but never read here; nor is the CNN run here
    return code_version(__name__, without=RHYTHM_MODULES + CLASSIFY_MODULES + CNN_MODULES)


def array_name(cfg: PipelineConfig) -> str:
    """The spectrogram array group of these settings: ``spectrograms/<hash>``."""
    h = content_key(cfg.segments.target_fs, cfg.window_shape, cfg.spectrogram.model_dump(mode="json"), cfg.run.chunk_size)
    return f"{Layout.SPECTROGRAMS}/{h[:12]}"


def chunk_keys(cfg: PipelineConfig, segment_table: SegmentTable) -> list[str]:
    """Key of each chunk: its rows' segments (record names and starts, not the table's record indices, which shift
    when a record is added) and their records' signal keys, the settings, the code."""
    size, t = cfg.run.chunk_size, segment_table
    settings = cfg.spectrogram.model_dump(mode="json")
    keys = []
    for lo in range(0, len(t), size):
        used, row_record = np.unique(t.source[lo:lo + size], return_inverse=True)
        names = [t.sources[i] for i in used.tolist()]
        inputs = (names, [t.signal_keys[n] for n in names], array_digest(row_record.astype(np.int64)),
                  array_digest(t.start[lo:lo + size].astype(np.int64)))
        keys.append(content_key(STAGE, code(), table.code(), cfg.segments.target_fs, settings, inputs))
    return keys


def row_shape(cfg: PipelineConfig) -> tuple[int, ...]:
    """One stored spectrogram: ([n_leads,] F, T)."""
    return spectrogram_shape(cfg.window_shape, cfg.segments.target_fs, cfg.spectrogram)


def array_attrs(cfg: PipelineConfig) -> dict:
    freqs = spectrogram_frequencies(cfg.segments.target_fs, cfg.spectrogram)
    return {"frequencies_hz": freqs.tolist(), "settings": cfg.spectrogram.model_dump(mode="json")}


def compute_chunk(store: str, spec_array: str, chunk_index: int, cfg: PipelineConfig) -> np.ndarray:
    """Spectrograms of chunk ``chunk_index`` of ``segments/signal``, written into ``spec_array``; returns them."""
    segments = zs.read_chunk(store, Layout.segment("signal"), chunk_index, cfg.run.chunk_size)
    spec = Featurizer(cfg).spectrograms(segments)
    if not np.isfinite(spec).all():  # never stored, never marked done
        bad = int((~np.isfinite(spec)).reshape(len(spec), -1).any(axis=1).sum())
        raise PipelineError(f"{spec_array} chunk {chunk_index}: {bad} spectrogram(s) with NaN or inf, computed from "
                            f"{Layout.segment('signal')} chunk {chunk_index}; nothing was stored")
    zs.write_chunk(store, Layout.data(spec_array), chunk_index, spec)
    return spec
