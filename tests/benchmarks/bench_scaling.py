"""Scaling: the same slice of paper4 on a local Dask cluster of 1 and of 2 worker processes, side by side.

    python tests/benchmarks/bench_scaling.py --data-dir ../shared/data/physionet --max-per-class 150

Each run starts cold (fresh output folder) in this process's Prefect API; prints per-stage seconds, the speed-up,
and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from ecgpipe.config import load_config  # noqa: E402
from ecgpipe.orchestration.cluster import prefect_api  # noqa: E402
from flows.ecg_pipeline import run_pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data/physionet")
    ap.add_argument("--config", default="paper4")
    ap.add_argument("--max-per-class", type=int, default=150, help="size option: segments per class")
    ap.add_argument("--chunk-size", type=int, default=64)
    args = ap.parse_args()
    results = {}
    with prefect_api():
        for workers in (1, 2):
            cfg = load_config(args.config, {"sampling": {"max_per_class": args.max_per_class},
                                            "run": {"n_workers": workers, "chunk_size": args.chunk_size}})
            out = tempfile.mkdtemp(prefix=f"ecgpipe-scaling-{workers}-")
            try:
                report = run_pipeline(cfg, args.data_dir, out)
                run = json.load(open(os.path.join(out, "run.json")))
            finally:
                shutil.rmtree(out, ignore_errors=True)
            results[workers] = {"wall_s": run["wall_s"], **{f"{k}_s": v for k, v in run["stage_seconds"].items()},
                                "n_segments": report["n_segments"]}
    print(f"{'workers':>8s}" + "".join(f"{k:>16s}" for k in results[1]))
    for w, r in results.items():
        print(f"{w:>8d}" + "".join(f"{v:>16}" for v in r.values()))
    speedup = {k: round(results[1][k] / results[2][k], 2) for k in results[1] if k.endswith("_s") and results[2][k] > 0}
    print("speed-up 2 vs 1 worker:", speedup)
    print(json.dumps({"benchmark": "scaling", "n_segments": results[1]["n_segments"], "workers_1": results[1],
                      "workers_2": results[2], "speedup": speedup}))


if __name__ == "__main__":
    main()
