"""Spectrogram stage: the pipeline's batched function vs a bare per-segment scipy loop, on the same real segments.

    python tests/benchmarks/bench_spectrograms.py --data-dir ../shared/data/physionet --n 10000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import signal as sps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import real_segments  # noqa: E402

from ecgpipe.config import load_config  # noqa: E402
from ecgpipe.spectrogram import spectrogram_chunk  # noqa: E402


def bare_loop(segments: np.ndarray, fs: float, s) -> np.ndarray:
    out = []
    for x in segments:  # what one would write first: one call per segment
        x = (x - x.mean()) / (x.std() or 1.0)
        f, _, p = sps.spectrogram(x, fs=fs, window=s.window, nperseg=s.nperseg, noverlap=s.noverlap, nfft=s.nfft)
        out.append(np.log10(p[(f >= s.fmin) & (f <= s.fmax)] + s.eps))
    return np.stack(out).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data/physionet")
    ap.add_argument("--n", type=int, default=10000, help="segments")
    ap.add_argument("--chunk", type=int, default=256, help="segments per pipeline chunk (run.chunk_size)")
    args = ap.parse_args()
    cfg = load_config("paper4")
    fs, s = cfg.segments.target_fs, cfg.spectrogram
    segs = real_segments(args.data_dir, args.n)
    t = time.perf_counter()
    piped = np.concatenate([spectrogram_chunk(segs[i : i + args.chunk], fs, s) for i in range(0, len(segs), args.chunk)])
    pipe_s = time.perf_counter() - t
    t = time.perf_counter()
    bare = bare_loop(segs, fs, s)
    bare_s = time.perf_counter() - t
    # same numbers up to float rounding (log10 of tiny powers amplifies the last bits of the batched FFT)
    max_diff = float(np.abs(piped - bare).max())
    assert max_diff < 0.05, f"pipeline and bare loop disagree (max |diff| {max_diff})"
    result = {
        "benchmark": "spectrograms",
        "n_segments": len(segs),
        "shape": list(piped.shape[1:]),
        "pipeline_seg_s": round(len(segs) / pipe_s, 1),
        "bare_loop_seg_s": round(len(segs) / bare_s, 1),
        "ratio": round(bare_s / pipe_s, 2),
        "max_abs_diff_log10": round(max_diff, 5),
    }
    print(f"pipeline (batched per chunk of {args.chunk}): {result['pipeline_seg_s']} segments/s")
    print(f"bare scipy loop (one call per segment):     {result['bare_loop_seg_s']} segments/s")
    print(f"pipeline / bare throughput ratio: {result['ratio']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
