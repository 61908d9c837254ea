"""Stage 4, one unit per chunk: CNN features of a chunk of spectrograms, one array per extractor of the sweep
(``features/<settings hash>/data``, (N, D) float32). Extractors that differ only in the layer share one forward pass
per chunk: a task fills the chunk of each of their arrays.

Key of a chunk: its spectrogram chunk's key, the feature settings that change values (not device, engine, batch
size, threads or compilation: moving a run to a GPU does not recompute its features) and the code version.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecgpipe import store as zs
from ecgpipe.config import FeatureSettings, PipelineConfig
from ecgpipe.errors import PipelineError
from ecgpipe.featurize import Featurizer
from ecgpipe.keys import code_version, content_key, file_digest
from ecgpipe.stages import spectrograms
from ecgpipe.stages.segments import CLASSIFY_MODULES, RHYTHM_MODULES
from ecgpipe.store import Layout

STAGE = "features"
# Feature settings that change speed, not values (beyond float rounding): not part of the feature keys.
SPEED_ONLY = {"device", "engine", "batch_size", "torch_threads", "compile"}


def code() -> str:
    return code_version(__name__, without=RHYTHM_MODULES + CLASSIFY_MODULES)


@dataclass
class FeatureArray:
    """One extractor of the sweep: its settings, its array, its chunk keys and (once known) its attributes."""

    cfg: PipelineConfig  # the run's config with this extractor's [features]
    array: str  # features/<hash>
    keys: list[str]  # per chunk
    attrs: dict = field(default_factory=dict)  # backbone, layer, weights source, width

    @property
    def data(self) -> str:
        return Layout.data(self.array)

    @property
    def layer(self) -> str:
        return self.attrs["layer"]

    @property
    def width(self) -> int:
        return int(self.attrs["width"])

    @property
    def weights(self) -> str:
        return self.attrs["weights"]


def value_settings(features: FeatureSettings) -> dict:
    """The feature settings that change values; with ``weights_path``, also the weights file's content digest
    (new weights saved over the same file must recompute the features, not reuse the old ones)."""
    settings = features.model_dump(mode="json", exclude=SPEED_ONLY)
    if features.weights_path:
        settings["weights_sha256"] = weights_digest(features.weights_path)
    return settings


def weights_digest(path: str) -> str | None:
    """Digest of a local weights file's content (None where there is no such file here: preflight reports that)."""
    p = Path(path).expanduser()
    try:
        stat = p.stat()
    except OSError:
        return None
    return _file_digest(str(p.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a rewritten file is read again
    return file_digest([path])


def array_name(cfg: PipelineConfig) -> str:
    h = content_key(spectrograms.array_name(cfg), value_settings(cfg.features))
    return f"{Layout.FEATURES}/{h[:12]}"


def chunk_keys(cfg: PipelineConfig, spectrogram_keys: list[str]) -> list[str]:
    settings = value_settings(cfg.features)
    return [content_key(STAGE, code(), settings, k) for k in spectrogram_keys]


def feature_arrays(cfg: PipelineConfig, spectrogram_keys: list[str]) -> list[FeatureArray]:
    """One feature array per extractor of the sweep (``[features]`` alone without a sweep), in sweep order."""
    arrays = []
    for settings in cfg.feature_variants:
        vcfg = cfg.with_stage(features=settings)
        arrays.append(FeatureArray(vcfg, array_name(vcfg), chunk_keys(vcfg, spectrogram_keys)))
    return arrays


def feature_groups(variants: list[FeatureSettings]) -> list[list[int]]:
    """Indices of a sweep's feature settings grouped by everything but the layer: each group is one backbone whose
    layers are tapped in the same forward pass. Groups keep the order of first appearance."""
    groups: dict[str, list[int]] = {}
    for k, settings in enumerate(variants):
        groups.setdefault(content_key(settings.model_dump(mode="json", exclude={"layer"})), []).append(k)
    return list(groups.values())


def describe_extractor(cfg: PipelineConfig) -> dict:
    """The attributes of an extractor's array: backbone, tapped layer, weights source and feature width (this loads
    the backbone: run it where the features will be computed)."""
    extractor = Featurizer(cfg).extractor()
    weights = extractor.weights_source
    if cfg.features.weights_path and (digest := weights_digest(cfg.features.weights_path)):
        weights += f" (file digest {digest})"  # a file saved over with other weights is told apart in the report
    return {"backbone": cfg.features.backbone, "layer": extractor.layer, "weights": weights, "width": extractor.feature_width()}


def compute_chunk(store: str, spec_array: str, chunk_index: int, targets: list[tuple[str, str]], cfg: PipelineConfig
                  ) -> dict[str, np.ndarray]:
    """One chunk of spectrograms through the backbone ONCE, tapping every target's layer (``targets``: (feature
    array, layer) pairs); writes each array's chunk and returns ``{array: features}``."""
    spec = zs.read_chunk(store, Layout.data(spec_array), chunk_index, cfg.run.chunk_size)
    activations = Featurizer(cfg).cnn(spec, [layer for _, layer in targets])
    for feat_array, layer in targets:  # never stored, never marked done
        if not np.isfinite(activations[layer]).all():
            # float16 autocast (the GPU default) overflows past 65504, where bfloat16 and float32 do not
            hint = ("; on a GPU this can be float16 overflowing: set features.amp_dtype = 'bfloat16' or features.amp = false"
                    if cfg.features.amp and cfg.features.amp_dtype == "float16" else "")
            raise PipelineError(f"{feat_array} chunk {chunk_index}: features with NaN or inf (layer {layer}), computed from "
                                f"{Layout.data(spec_array)} chunk {chunk_index}; nothing was stored{hint}")
    out = {}
    for feat_array, layer in targets:
        zs.write_chunk(store, Layout.data(feat_array), chunk_index, activations[layer])
        out[feat_array] = activations[layer]
    return out
