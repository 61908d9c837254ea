"""What a rerun that changes nothing spends proving a finished run intact: the files' stamps against hashing the data.

    python tests/benchmarks/bench_verify.py --run runs/paper4-best [--repeats 2]

Times ``ecgpipe status`` on a finished run (the very checks a rerun makes before it computes anything: every record,
the segment table, every spectrogram and feature chunk, every recording grid) with ``run.verify = "stamp"`` (the
default: a unit whose files' names, sizes and times are its marker's is not read) and ``"content"`` (every unit's
data read and hashed, as before 0.6.0), alternating, in one process. Both must reach the same verdicts. The page cache
is warm after the first pass, which favours hashing: a rerun on a cold cache or a network file system reads the whole
store from disk. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ecgpipe.config import config_from_dict  # noqa: E402
from ecgpipe.status import run_status  # noqa: E402


def store_size(run: Path) -> tuple[int, int]:
    """Bytes and files of the run's store."""
    files = [p for p in (run / "store.zarr").rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/paper4-best", help="output folder of a finished run")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    run = Path(args.run)
    saved = json.loads((run / "config.json").read_text())
    base = config_from_dict(saved["config"], str(run / "config.json"))
    times: dict[str, list[float]] = {"stamp": [], "content": []}
    verdicts = {}
    for _ in range(args.repeats):
        for mode in ("content", "stamp"):
            cfg = base.model_copy(update={"run": base.run.model_copy(update={"verify": mode})})
            t = time.perf_counter()
            status = run_status(cfg, saved.get("data_dir"), str(run))
            times[mode].append(time.perf_counter() - t)
            verdicts[mode] = {s: {k: c[k] for k in ("done", "stale", "missing", "total")} for s, c in status["stages"].items()}
    if verdicts["stamp"] != verdicts["content"]:
        sys.exit(f"the two checks disagree: {verdicts}")
    # a stage status reports without its own units (the model: one file) has no count of missing units
    stale = {s: n for s, c in verdicts["stamp"].items() if (n := c["stale"] + (c["missing"] or 0))}
    size, n_files = store_size(run)
    best = {mode: min(ts) for mode, ts in times.items()}
    print(f"{run}: store {size / 1e6:.0f} MB in {n_files} files; units not done: {stale or 'none'}")
    print(f"{'check':10s} {'seconds (best of ' + str(args.repeats) + ')':>24s}")
    for mode in ("content", "stamp"):
        print(f"{mode:10s} {best[mode]:24.2f}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(json.dumps({"bench": "verify", "run": str(run), "commit": commit, "store_mb": round(size / 1e6, 1),
                      "store_files": n_files, "units": {s: c["total"] for s, c in verdicts["stamp"].items()},
                      "content_s": round(best["content"], 3), "stamp_s": round(best["stamp"], 3),
                      "ratio_stamp_over_content": round(best["stamp"] / best["content"], 3)}))


if __name__ == "__main__":
    main()
