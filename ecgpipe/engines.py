"""Where the backbone runs: eager PyTorch, or the same graph exported to ONNX and run by ONNX Runtime or OpenVINO.

Every engine runs one graph, ``PooledTaps``: the tapped layers' activations, globally average-pooled, as a tuple in
tap order. On this project's 2-core CPU the exported graph runs 5-6x faster than eager PyTorch at float32 with the
same features to ~1e-5 (README "Feature extraction speed"), so ``features.engine = "auto"`` picks ONNX Runtime on a
CPU and PyTorch on a GPU. Engines change speed, not values: like the device, the engine is not part of any key.

OpenVINO is optional (``pip install 'ecgpipe[openvino]'``) and always runs at float32 here: its CPU plugin would
otherwise switch to bfloat16 on CPUs that support it, which changes the features.
"""

from __future__ import annotations

import importlib.util
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ecgpipe.errors import EcgpipeError

ENGINES = ("auto", "torch", "onnxruntime", "openvino")
_PACKAGES = {"onnxruntime": ("onnx", "onnxruntime"), "openvino": ("onnx", "openvino")}


class EngineUnavailable(EcgpipeError, RuntimeError):
    """The configured inference engine cannot run here (package missing or not a CPU)."""


def pool(activation: torch.Tensor) -> torch.Tensor:
    """Global average pooling of a feature map (n, C, H, W) or token sequence (n, L, C) to (n, C)."""
    if activation.ndim == 4:
        return activation.mean(dim=(2, 3))
    if activation.ndim == 3:
        return activation.mean(dim=1)
    return activation


class PooledTaps(nn.Module):
    """A layer-tapping extractor (torchvision ``create_feature_extractor``) whose outputs are pooled, in ``layers``
    order: the one graph every engine runs."""

    def __init__(self, extractor: nn.Module, layers: tuple[str, ...]):
        super().__init__()
        self.extractor = extractor
        self.layers = layers

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        acts = self.extractor(images)
        return tuple(pool(acts[name]) for name in self.layers)


def resolve_engine(name: str, device: torch.device) -> str:
    """The engine that will run: ``auto`` is ONNX Runtime on a CPU when installed, else PyTorch."""
    if name not in ENGINES:
        raise ValueError(f"features.engine must be one of {', '.join(ENGINES)}, got {name!r}")
    if name == "auto":
        return "onnxruntime" if device.type == "cpu" and _installed("onnxruntime") else "torch"
    if name != "torch" and device.type != "cpu":
        raise EngineUnavailable(f"features.engine = {name!r} runs on CPUs only; this worker's device is {device} "
                                "(use engine 'torch' or 'auto' on a GPU)")
    if name != "torch" and not _installed(name):
        missing = [p for p in _PACKAGES[name] if importlib.util.find_spec(p) is None]
        raise EngineUnavailable(f"features.engine = {name!r} needs the package(s) {', '.join(missing)}: "
                                f"pip install {' '.join(missing)} (or engine 'torch')")
    return name


def _installed(engine: str) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in _PACKAGES[engine])


def onnx_bytes(module: PooledTaps, image_size: int) -> bytes:
    """``module`` exported to ONNX (float32, any batch size, fixed image size)."""
    buf = io.BytesIO()
    example = torch.zeros(2, 3, image_size, image_size)
    names = [f"tap{i}" for i in range(len(module.layers))]
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notices
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), buf, input_names=["images"], output_names=names,
                          dynamic_axes={"images": {0: "n"}, **{n: {0: "n"} for n in names}}, opset_version=17,
                          dynamo=False)
    return buf.getvalue()


class Runner:
    """Runs ``PooledTaps`` on a batch of (n, 3, H, W) float32 images; returns one (n, D) array per tap: float32 NumPy,
    or (torch on a GPU) a tensor left on the device, which the caller copies back once for all batches."""

    def __call__(self, images: torch.Tensor) -> list[np.ndarray | torch.Tensor]:
        raise NotImplementedError


class TorchRunner(Runner):
    def __init__(self, module: nn.Module, device: torch.device, amp: bool, amp_dtype: str, compile: bool):
        self.module = module.eval().to(device, memory_format=torch.channels_last)
        if compile:
            self.module = torch.compile(self.module)
        self.device, self.amp, self.amp_dtype = device, amp and device.type == "cuda", getattr(torch, amp_dtype)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> list[np.ndarray | torch.Tensor]:
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            outs = self.module(images)
        if self.device.type == "cpu":
            return [o.float().numpy() for o in outs]
        return [o.float() for o in outs]  # no copy back per batch: that would make the host wait for the device


class OnnxRuntimeRunner(Runner):
    def __init__(self, module: PooledTaps, image_size: int, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its graph-optimiser notices are not the user's business
        self.session = ort.InferenceSession(onnx_bytes(module, image_size), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> list[np.ndarray]:
        x = np.ascontiguousarray(images.cpu().numpy(), dtype=np.float32)
        return [np.asarray(o, dtype=np.float32) for o in self.session.run(None, {"images": x})]


class OpenVinoRunner(Runner):
    def __init__(self, module: PooledTaps, image_size: int, threads: int):
        import openvino as ov

        core = ov.Core()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            path.write_bytes(onnx_bytes(module, image_size))
            model = core.read_model(str(path))
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()

    def __call__(self, images: torch.Tensor) -> list[np.ndarray]:
        x = np.ascontiguousarray(images.cpu().numpy(), dtype=np.float32)
        result = self.request.infer({0: x})
        return [np.asarray(result[out], dtype=np.float32) for out in self.compiled.outputs]


def make_runner(engine: str, module: PooledTaps, device: torch.device, settings) -> Runner:
    """The runner of an engine already resolved by ``resolve_engine``; ``settings`` is the FeatureSettings."""
    if engine == "onnxruntime":
        return OnnxRuntimeRunner(module, settings.image_size, settings.torch_threads)
    if engine == "openvino":
        return OpenVinoRunner(module, settings.image_size, settings.torch_threads)
    return TorchRunner(module, device, settings.amp, settings.amp_dtype, settings.compile)
