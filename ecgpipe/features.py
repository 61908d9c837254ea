"""CNN features of spectrograms: spectrogram -> image_size x image_size -> 3 channels (one lead repeated, or two leads
and their mean) -> ImageNet normalisation -> backbone -> pooled.

The layer tap uses torchvision's ``create_feature_extractor`` (one mechanism for every backbone); a 4-D activation is
globally average-pooled to a vector. The backbone runs on the engine of ``features.engine`` (ecgpipe/engines.py). A
worker process builds its extractor once and reuses it for every chunk.
"""

from __future__ import annotations

import functools
import json
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.feature_extraction import create_feature_extractor

from ecgpipe.backbones import backbone_spec, load_backbone
from ecgpipe.config import FeatureSettings
from ecgpipe.engines import PooledTaps, make_runner, resolve_engine
from ecgpipe.errors import PipelineError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        # a setting this worker cannot honour: no retry cures it (a RuntimeError would be retried as transient)
        raise PipelineError(f"features.device = {name!r}, but CUDA is not available on this worker: use 'auto' (CUDA "
                            "where a worker has it, else CPU) or run on GPU workers")
    return device


def spectrograms_to_images(spec: torch.Tensor, size: int) -> torch.Tensor:
    """(n, F, T) or two-lead (n, 2, F, T) log-spectrograms -> (n, 3, size, size) ImageNet-normalised images, all on
    spec's device.

    Each spectrogram (each lead's) is min-max scaled to [0, 1] on its own (a photo's pixel range), flipped so low
    frequencies are at the bottom as in a plotted spectrogram and resized bilinearly. One lead is repeated over the
    three colour channels; two leads become red and green, with their mean as blue (so the image's brightness, which
    ImageNet features respond to most, carries both leads).
    """
    x = spec.float()
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] not in (1, 2):
        raise ValueError(f"spectrograms must be (n, F, T) or (n, 2, F, T), got shape {tuple(spec.shape)}")
    x = x.flip(2)
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    x = (x - lo) / torch.clamp(hi - lo, min=1e-6)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else torch.cat([x, x.mean(dim=1, keepdim=True)], dim=1)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class FeatureExtractor:
    """Callable mapping (n, F, T) or two-lead (n, 2, F, T) spectrograms (numpy) to (n, D) float32 features.

    ``layers`` taps several layers of the one backbone in the same forward pass (a sweep over layers computes its
    feature arrays together); the extractor's own ``layer`` is ``settings.layer`` (default: the pooled output).
    """

    def __init__(self, settings: FeatureSettings, layers: tuple[str, ...] | None = None):
        self.settings = settings
        self.device = resolve_device(settings.device)
        if self.device.type == "cpu":
            torch.set_num_threads(settings.torch_threads)
        spec = backbone_spec(settings.backbone)
        model, self.weights_source = load_backbone(settings.backbone, settings.weights, settings.weights_path)
        self.layer = settings.layer or spec.pooled_layer
        self.layers = tuple(dict.fromkeys([self.layer, *(layers or ())]))  # own layer first, no duplicates
        try:
            with warnings.catch_warnings():
                # "nodes obtained in eval mode are a subsequence of train mode": we only ever run in eval mode.
                warnings.simplefilter("ignore", UserWarning)
                extractor = create_feature_extractor(model.eval(), return_nodes={name: name for name in self.layers})
        except Exception as exc:
            from torchvision.models.feature_extraction import get_graph_node_names

            nodes = get_graph_node_names(model)[1]
            raise ValueError(
                f"features.layer: {', '.join(map(repr, self.layers))} not all nodes of {settings.backbone} ({exc}); "
                f"some nodes: {', '.join(nodes[-8:])}"
            ) from None
        self.engine = resolve_engine(settings.engine, self.device)
        self.runner = make_runner(self.engine, PooledTaps(extractor.eval(), self.layers), self.device, settings)

    def __call__(self, spectrograms: np.ndarray) -> np.ndarray:
        return self.extract(spectrograms)[self.layer]

    @torch.inference_mode()
    def extract(self, spectrograms: np.ndarray) -> dict[str, np.ndarray]:
        """Pooled activations of every tapped layer, ``{layer: (n, D_layer) float32}``, in batches of batch_size."""
        out: dict[str, list] = {name: [] for name in self.layers}
        bs, on_gpu = self.settings.batch_size, self.device.type == "cuda"
        for i in range(0, len(spectrograms), bs):
            # Stored dtype (float16) to the device, float32 there: half the bytes over the bus. On a GPU the batch is
            # pinned, so its copy queues behind the previous batch's kernels instead of waiting for them (measured on
            # an H200: pageable copies and a sync per batch cost a third of torch.compile's throughput).
            batch = torch.from_numpy(np.array(spectrograms[i : i + bs]))
            if on_gpu:
                batch = batch.pin_memory()
            images = spectrograms_to_images(batch.to(self.device, non_blocking=True), self.settings.image_size)
            for name, pooled in zip(self.layers, self.runner(images)):
                out[name].append(pooled)
        if not len(spectrograms):
            return {name: np.zeros((0, width), dtype=np.float32) for name, width in self.feature_widths().items()}
        return {name: _to_numpy(parts) for name, parts in out.items()}

    def feature_widths(self) -> dict[str, int]:
        dummy = np.zeros((1, 8, 8), dtype=np.float32)
        return {name: a.shape[1] for name, a in self.extract(dummy).items()}

    def feature_width(self) -> int:
        return self.feature_widths()[self.layer]


def _to_numpy(parts: list) -> np.ndarray:
    """One (n, D) float32 array from a runner's per-batch outputs: NumPy arrays, or tensors still on the device
    (copied back once, so the device never waits on the host between batches)."""
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts).float().cpu().numpy()
    return np.concatenate(parts).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _cached_extractor(settings_json: str, layers: tuple[str, ...]) -> FeatureExtractor:
    return FeatureExtractor(FeatureSettings.model_validate_json(settings_json), layers)


def get_extractor(settings: FeatureSettings, layers: tuple[str, ...] = ()) -> FeatureExtractor:
    """The process-wide extractor for these settings (and extra ``layers`` tapped in the same pass): a Dask worker
    loads the model once, not once per chunk."""
    return _cached_extractor(json.dumps(settings.model_dump(mode="json"), sort_keys=True), tuple(layers))
