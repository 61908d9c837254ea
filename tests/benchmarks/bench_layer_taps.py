"""A sweep over layers of one backbone: one forward pass tapping every layer (what the flow's feature tasks do) vs one
pass per layer (what a sweep cost before), on the same real spectrograms.

    python tests/benchmarks/bench_layer_taps.py --data-dir ../shared/data/physionet --n 256 \
        --layers _avg_pooling _blocks.14

Checks that both give the same features, prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import real_segments  # noqa: E402
from bench_features import timed  # noqa: E402

from ecgpipe.config import FeatureSettings, load_config  # noqa: E402
from ecgpipe.features import FeatureExtractor  # noqa: E402
from ecgpipe.spectrogram import spectrogram_chunk  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data/physionet")
    ap.add_argument("--n", type=int, default=256, help="images")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--layers", nargs="+", default=["_avg_pooling", "_blocks.14"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--random-weights", action="store_true")
    args = ap.parse_args()

    cfg = load_config("paper4")
    spec = spectrogram_chunk(real_segments(args.data_dir, args.n), cfg.segments.target_fs, cfg.spectrogram).astype(np.float16)
    base = FeatureSettings(backbone=args.backbone, torch_threads=args.threads,
                           weights="random" if args.random_weights else "pretrained")
    torch.set_num_threads(args.threads)
    together = FeatureExtractor(base.model_copy(update={"layer": args.layers[0]}), tuple(args.layers[1:]))
    alone = [FeatureExtractor(base.model_copy(update={"layer": layer})) for layer in args.layers]

    one_pass = together.extract(spec)
    for layer, extractor in zip(args.layers, alone):
        assert np.allclose(one_pass[layer], extractor(spec), atol=1e-4), f"{layer}: one pass and its own pass differ"

    together_s = timed(lambda: together.extract(spec), args.repeats)
    separate_s = timed(lambda: [extractor(spec) for extractor in alone], args.repeats)
    result = {
        "benchmark": "layer_taps",
        "backbone": args.backbone,
        "layers": args.layers,
        "threads": args.threads,
        "n_images": len(spec),
        "one_pass_s": round(together_s, 2),
        "pass_per_layer_s": round(separate_s, 2),
        "ratio": round(together_s / separate_s, 3),
    }
    print(f"one pass tapping {len(args.layers)} layers: {together_s:.2f} s for {len(spec)} images")
    print(f"one pass per layer:              {separate_s:.2f} s")
    print(f"ratio one-pass / pass-per-layer: {result['ratio']} (same features within 1e-4)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
