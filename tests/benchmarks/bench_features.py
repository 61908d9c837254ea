"""Feature stage speed: the shipped feature path against today's reference path and a bare model loop, side by side.

    python tests/benchmarks/bench_features.py --data-dir ../shared/data/physionet --n 256 [--grid]

- ``pipeline_img_s``: the shipped default (``FeatureSettings()``: its engine, ``auto`` = ONNX Runtime on a CPU, and
  its image size), from stored float16 spectrograms to pooled features;
- ``reference_img_s``: the path before engines existed: eager PyTorch, channels_last, 224 x 224, same backbone,
  batch and threads;
- ``bare_img_s``: a bare eager ``model(x)`` loop over the same batches already prepared as 224 x 224 tensors;
- ``max_abs_diff``: shipped vs reference features (same image size only), relative to the largest feature.
``--grid`` adds every engine x image size (96, 128, 160, 224) as ``grid`` in the JSON line. On a CUDA machine the
default engine is PyTorch with AMP (see gpu_check.sh). ``--random-weights`` for backbones whose ImageNet weights are
not available offline (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import real_segments  # noqa: E402

from ecgpipe.backbones import backbone_spec, load_backbone  # noqa: E402
from ecgpipe.config import FeatureSettings, load_config  # noqa: E402
from ecgpipe.features import FeatureExtractor, spectrograms_to_images  # noqa: E402
from ecgpipe.spectrogram import spectrogram_chunk  # noqa: E402


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (lazy init, graph optimisation, cudnn autotune, allocator)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data/physionet")
    ap.add_argument("--n", type=int, default=256, help="images")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--grid", action="store_true", help="also every engine x image size")
    ap.add_argument("--random-weights", action="store_true")
    args = ap.parse_args()

    cfg = load_config("paper4")
    spec = spectrogram_chunk(real_segments(args.data_dir, args.n), cfg.segments.target_fs, cfg.spectrogram).astype(np.float16)
    common = dict(backbone=args.backbone, batch_size=args.batch_size, device=args.device, torch_threads=args.threads,
                  weights="random" if args.random_weights else "pretrained")
    shipped = FeatureExtractor(FeatureSettings(**common))
    reference = FeatureExtractor(FeatureSettings(**common, engine="torch", image_size=224))
    device = shipped.device
    torch.set_num_threads(args.threads)

    # bare: the plain model, pooled output, on ready-made normalised 224x224 batches already on the device
    model, _ = load_backbone(args.backbone, common["weights"])
    model = model.eval().to(device, memory_format=torch.channels_last)
    batches = [
        spectrograms_to_images(torch.from_numpy(spec[i : i + args.batch_size].astype(np.float32)).to(device), 224).contiguous(
            memory_format=torch.channels_last
        )
        for i in range(0, len(spec), args.batch_size)
    ]
    use_amp = device.type == "cuda"

    @torch.inference_mode()
    def bare():
        for x in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                model(x)

    # side by side, interleaved, so a busy neighbour slows all three alike
    pipe_s = timed(lambda: shipped(spec), args.repeats)
    ref_s = timed(lambda: reference(spec), args.repeats)
    bare_s = timed(bare, args.repeats)
    ours, ref = shipped(spec), reference(spec)
    result = {
        "benchmark": "features",
        "backbone": args.backbone,
        "layer": shipped.layer,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "n_images": len(spec),
        "amp": use_amp,
        "engine": shipped.engine,
        "image_size": shipped.settings.image_size,
        "pipeline_img_s": round(len(spec) / pipe_s, 1),
        "reference_img_s": round(len(spec) / ref_s, 1),
        "bare_img_s": round(len(spec) / bare_s, 1),
        "speedup": round(ref_s / pipe_s, 2),
        "ratio_reference_to_bare": round(bare_s / ref_s, 3),
        "max_abs_diff": (round(float(np.abs(ours - ref).max() / np.abs(ref).max()), 7)
                         if ours.shape == ref.shape and shipped.settings.image_size == 224 else None),
        "feature_width": backbone_spec(args.backbone).feature_width,
    }
    if args.grid:
        engines = ["torch", "onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
        grid = {}
        for engine in engines if device.type == "cpu" else ["torch"]:
            for size in (96, 128, 160, 224):
                ex = FeatureExtractor(FeatureSettings(**common, engine=engine, image_size=size))
                grid[f"{engine}@{size}"] = round(len(spec) / timed(lambda ex=ex: ex(spec), args.repeats), 1)
                print(f"  {engine:12s} {size:4d} px  {grid[f'{engine}@{size}']:8.1f} img/s", flush=True)
        result["grid"] = grid
    print(f"shipped  ({shipped.engine}, {shipped.settings.image_size} px, from float16 spectrograms): {result['pipeline_img_s']} img/s")
    print(f"reference (eager torch, channels_last, 224 px):                  {result['reference_img_s']} img/s")
    print(f"bare model(x) on prepared 224x224 batches:                        {result['bare_img_s']} img/s")
    print(f"speed-up shipped/reference: {result['speedup']}x; features differ by {result['max_abs_diff']} (relative)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
