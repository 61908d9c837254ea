"""The feature stage's storage cost per image, beside the GPU's compute rate: what a GPU worker's feature task does
besides the CNN (read one chunk of spectrograms from Zarr, write one chunk of features), on a run's real store.

    python tests/benchmarks/bench_feature_io.py --run runs/paper4-best [--gpu-img-s 17834 31787]

Prints one JSON line: milliseconds per image for the read and the write (median over the chunks, second pass, so
the page cache is warm as it is for a task that follows the spectrogram stage), and what a GPU at the given compute
rates (README "GPU", one H200) would reach with that I/O in series in one worker task. Markers, Prefect's API calls
and the scheduler are not in it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import numpy as np
import zarr

from ecgpipe import store as zs
from ecgpipe.store import Layout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/paper4-best")
    ap.add_argument("--width", type=int, default=1280, help="feature columns (Lite0 pooled: 1280)")
    ap.add_argument("--gpu-img-s", type=float, nargs="*", default=[17834.0, 31787.0])
    args = ap.parse_args()
    store = zs.store_path(args.run)
    root = zarr.open_group(store, mode="r")
    if "spectrograms" not in root:
        sys.exit(f"{store}: no spectrograms (run the pipeline first)")
    name = next(f"spectrograms/{k}" for k in root["spectrograms"].group_keys())
    spec = root[Layout.data(name)]
    chunk, n = spec.chunks[0], spec.shape[0]
    n_chunks = -(-n // chunk)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="ecgpipe-io-") as tmp:
        out = f"{tmp}/store.zarr"
        zs.create_array(out, "features/x/data", (n, args.width), (chunk, args.width), Layout.FEATURE_DTYPE)
        # features as the CNN gives them (not zeros, which compress to nothing): non-negative, many small values
        features = rng.gamma(0.5, 0.3, size=(chunk, args.width)).astype(np.float32)
        reads, writes = [], []
        for repeat in range(2):
            for i in range(n_chunks):
                t = time.perf_counter()
                rows = zs.read_chunk(store, Layout.data(name), i, chunk)
                t1 = time.perf_counter()
                zs.write_chunk(out, "features/x/data", i, features[: len(rows)])
                t2 = time.perf_counter()
                if repeat:
                    reads.append((t1 - t) / len(rows))
                    writes.append((t2 - t1) / len(rows))
    read_ms, write_ms = 1000 * float(np.median(reads)), 1000 * float(np.median(writes))
    io_s = (read_ms + write_ms) / 1000
    print(json.dumps({
        "benchmark": "feature_io", "run": args.run, "images": n, "chunk": chunk, "spectrogram": list(spec.shape[1:]),
        "spectrogram_dtype": str(spec.dtype), "read_ms_per_img": round(read_ms, 4), "write_ms_per_img": round(write_ms, 4),
        "io_img_s": round(1 / io_s, 1),
        "gpu_with_io_img_s": {f"{r:g}": round(1 / (1 / r + io_s), 1) for r in args.gpu_img_s},
    }))


if __name__ == "__main__":
    main()
