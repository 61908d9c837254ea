"""``ecgpipe predict`` in one process against ``--jobs N`` worker processes, on the same records, side by side.

    python tests/benchmarks/bench_predict_jobs.py --model runs/cinc2017/model.skops \
        --records ../shared/data/physionet/cinc2017 --first 1000 --jobs 2
    python tests/benchmarks/bench_predict_jobs.py --model runs/paper4-best/model.skops --jobs 2 \
        --records ../shared/data/physionet/mitdb/100 ../shared/data/physionet/mitdb/201 \
                  ../shared/data/physionet/mitdb/207 ../shared/data/physionet/vfdb/418

Runs the command line twice (one process, then ``--jobs N``), in that order, each into a fresh folder, timing the
whole command (model loading and the workers' start included), and checks that both wrote the same files byte for
byte (the tables, the annotations and, with ``--compare``, agreement.json). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from ecgpipe.predict import record_paths  # noqa: E402


def predict(model: str, records: list[str], out: Path, jobs: int, compare: str | None) -> float:
    argv = [sys.executable, "-m", "ecgpipe.cli", "predict", "--model", model, *records, "--out", str(out), "--jobs", str(jobs)]
    started = time.perf_counter()
    proc = subprocess.run(argv + (["--compare", compare] if compare else []), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):  # 1: some records failed, named in records.csv (the same in both runs)
        sys.exit(f"predict --jobs {jobs} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--records", nargs="+", required=True, help="records or folders, as predict takes them")
    ap.add_argument("--first", type=int, default=None, help="only the first N records")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--compare", default=None, help="reference annotator (e.g. atr)")
    args = ap.parse_args()
    records = record_paths(args.records)[: args.first]
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        wall_one = predict(args.model, records, one, 1, args.compare)
        wall_many = predict(args.model, records, many, args.jobs, args.compare)
        files = sorted(p.relative_to(one).as_posix() for p in one.rglob("*") if p.is_file() and p.name != "model.json")
        differ = [f for f in files if not (many / f).is_file() or not filecmp.cmp(one / f, many / f, shallow=False)]
    print(json.dumps({"benchmark": "predict_jobs", "model": args.model, "records": len(records), "jobs": args.jobs,
                      "wall_s_one_process": round(wall_one, 1), f"wall_s_jobs_{args.jobs}": round(wall_many, 1),
                      "speedup": round(wall_one / wall_many, 2), "files_compared": len(files), "files_differing": differ}))


if __name__ == "__main__":
    main()
