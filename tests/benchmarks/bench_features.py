"""Feature stage: the pipeline's extractor (from stored float16 spectrograms: resize + normalise on the device, layer
tap, pooling) vs a bare ``model(x)`` loop over the same batches already prepared as 224x224 tensors.

    python tests/benchmarks/bench_features.py --data-dir ../shared/data/physionet --n 256 --backbone efficientnet_lite0

Prints a table and one JSON line. On a CUDA machine both sides use the same device, channels_last and (pipeline and
bare alike) bf16 autocast. ``--random-weights`` allows backbones whose ImageNet weights are not available offline
(speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
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
    fn()  # warm-up (lazy init, cudnn autotune, allocator)
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
    ap.add_argument("--random-weights", action="store_true")
    args = ap.parse_args()

    cfg = load_config("paper4")
    spec = spectrogram_chunk(real_segments(args.data_dir, args.n), cfg.segments.target_fs, cfg.spectrogram).astype(np.float16)
    settings = FeatureSettings(
        backbone=args.backbone, batch_size=args.batch_size, device=args.device, torch_threads=args.threads,
        weights="random" if args.random_weights else "pretrained",
    )
    extractor = FeatureExtractor(settings)
    device = extractor.device
    torch.set_num_threads(args.threads)

    # bare: the plain model, pooled output, on ready-made normalised 224x224 batches already on the device
    model, _ = load_backbone(args.backbone, settings.weights)
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

    pipe_s = timed(lambda: extractor(spec), args.repeats)
    bare_s = timed(bare, args.repeats)
    result = {
        "benchmark": "features",
        "backbone": args.backbone,
        "layer": extractor.layer,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "n_images": len(spec),
        "amp": use_amp,
        "pipeline_img_s": round(len(spec) / pipe_s, 1),
        "bare_img_s": round(len(spec) / bare_s, 1),
        "ratio": round(bare_s / pipe_s, 3),
        "feature_width": backbone_spec(args.backbone).feature_width,
    }
    print(f"pipeline (float16 spectrograms -> resize/normalise on device -> tap -> pool): {result['pipeline_img_s']} img/s")
    print(f"bare model(x) on prepared 224x224 batches:                                   {result['bare_img_s']} img/s")
    print(f"ratio pipeline/bare: {result['ratio']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
