"""Cold run vs no-change rerun of the same config, measured side by side in one invocation.

    python tests/benchmarks/bench_incremental.py --config paper4 --data-dir ../shared/data/physionet --out runs/paper4

Both runs are the real CLI (`ecgpipe run`) in a subprocess, so the times include everything a user waits for
(Python start, the temporary Prefect server, the Dask cluster). Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def ecgpipe_run(config: str, data_dir: str, out: Path, log: Path) -> float:
    t = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run(
            [sys.executable, "-m", "ecgpipe.cli", "run", "--config", config, "--data-dir", data_dir, "--out", str(out)],
            check=True, stdout=f, stderr=subprocess.STDOUT,
        )
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="paper4")
    ap.add_argument("--data-dir", default="../shared/data/physionet")
    ap.add_argument("--out", default="runs/bench-incremental")
    ap.add_argument("--keep", action="store_true", help="reuse an existing output folder instead of starting cold")
    ap.add_argument("--max-per-class", type=int, default=None, help="size option: cap segments per class (quick run: 60)")
    args = ap.parse_args()
    if args.max_per_class:
        # a config file of the preset with a smaller cap, so the runs stay the plain CLI
        from importlib import resources

        from ecgpipe.config import load_config

        load_config(args.config)  # validate the name first
        text = resources.files("ecgpipe.configs").joinpath(f"{args.config}.toml").read_text() if not args.config.endswith(".toml") else Path(args.config).read_text()
        small = Path(tempfile.mkdtemp()) / f"{Path(args.config).stem}-{args.max_per_class}.toml"
        small.write_text(re.sub(r"(?m)^max_per_class = .*$", f"max_per_class = {args.max_per_class}", text))
        args.config = str(small)
    out = Path(args.out)
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    cold_s = ecgpipe_run(args.config, args.data_dir, out, out.parent / f"{out.name}.cold.log")
    cold = json.loads((out / "run.json").read_text())
    rerun_s = ecgpipe_run(args.config, args.data_dir, out, out.parent / f"{out.name}.rerun.log")
    rerun = json.loads((out / "run.json").read_text())
    print(f"{'':10s}{'process s':>12s}{'flow s':>10s}   computed (segments/spectrograms/features/classify)")
    for name, s, doc in (("cold", cold_s, cold), ("rerun", rerun_s, rerun)):
        c = "/".join(str(doc["stages"][k]["computed"]) for k in ("segments", "spectrograms", "features", "classify"))
        print(f"{name:10s}{s:12.1f}{doc['wall_s']:10.1f}   {c}")
    result = {
        "benchmark": "incremental",
        "config": args.config,
        "cold_s": round(cold_s, 2),
        "rerun_s": round(rerun_s, 2),
        "ratio": round(rerun_s / cold_s, 4),
        "cold_flow_s": cold["wall_s"],
        "rerun_flow_s": rerun["wall_s"],
        "flow_ratio": round(rerun["wall_s"] / cold["wall_s"], 4),
        "rerun_computed": {k: v["computed"] for k, v in rerun["stages"].items()},
        "cold_stage_seconds": cold["stage_seconds"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
