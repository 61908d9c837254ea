"""``ecgpipe predict`` in one process against ``--jobs N`` worker processes, on the same records, side by side.

    python tests/benchmarks/bench_predict_jobs.py --model runs/cinc2017/model.skops \
        --records ../shared/data/physionet/cinc2017 --first 1000 --jobs 2
    python tests/benchmarks/bench_predict_jobs.py --model runs/paper4-best/model.skops --jobs 2 \
        --records ../shared/data/physionet/mitdb/100 ../shared/data/physionet/mitdb/201 \
                  ../shared/data/physionet/mitdb/207 ../shared/data/physionet/vfdb/418

    python tests/benchmarks/bench_predict_jobs.py --model runs/paper4-best/model.skops --jobs 2 \
        --evaluate cinc2017 --data-dir ../shared/data/physionet --max-records 300 --map normal=normal afib=afib

Runs the command line twice (one process, then ``--jobs N``), in that order, each into a fresh folder, timing the
whole command (model loading and the workers' start included), and checks that both wrote the same files byte for
byte (predict: the tables, the annotations and, with ``--compare``, agreement.json; evaluate: its records CSV and
report, and evaluation.json but its wall time). Prints one JSON line.
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


def command(args, records: list[str], out: Path, jobs: int) -> float:
    if args.evaluate:
        argv = ["evaluate", "--model", args.model, "--config", args.evaluate, "--data-dir", args.data_dir, "--seed", "0",
                *(["--max-records", str(args.max_records)] if args.max_records else []), *(["--map", *args.map] if args.map else [])]
    else:
        argv = ["predict", "--model", args.model, *records, *(["--compare", args.compare] if args.compare else [])]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ecgpipe.cli", *argv, "--out", str(out), "--jobs", str(jobs)],
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):  # 1: some records failed, named in records.csv (the same in both runs)
        sys.exit(f"{argv[0]} --jobs {jobs} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--records", nargs="+", default=[], help="records or folders, as predict takes them")
    ap.add_argument("--evaluate", default=None, metavar="CONFIG", help="time ecgpipe evaluate on this dataset config instead")
    ap.add_argument("--data-dir", default="../shared/data/physionet")
    ap.add_argument("--max-records", type=int, default=None)
    ap.add_argument("--map", nargs="*", default=None)
    ap.add_argument("--first", type=int, default=None, help="only the first N records")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--compare", default=None, help="reference annotator (e.g. atr)")
    args = ap.parse_args()
    records = record_paths(args.records)[: args.first] if args.records else []
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        wall_one = command(args, records, one, 1)
        wall_many = command(args, records, many, args.jobs)
        files = sorted(p.relative_to(one).as_posix() for p in one.rglob("*")
                       if p.is_file() and p.name not in ("model.json", "evaluation.json"))
        differ = [f for f in files if not (many / f).is_file() or not filecmp.cmp(one / f, many / f, shallow=False)]
        if args.evaluate:  # its wall time apart
            docs = [json.loads((d / "evaluation.json").read_text()) for d in (one, many)]
            if {k: v for k, v in docs[0].items() if k != "wall_s"} != {k: v for k, v in docs[1].items() if k != "wall_s"}:
                differ.append("evaluation.json")
            files.append("evaluation.json")
    print(json.dumps({"benchmark": "evaluate_jobs" if args.evaluate else "predict_jobs", "model": args.model,
                      "records": args.max_records if args.evaluate else len(records), "jobs": args.jobs,
                      "wall_s_one_process": round(wall_one, 1), f"wall_s_jobs_{args.jobs}": round(wall_many, 1),
                      "speedup": round(wall_one / wall_many, 2), "files_compared": len(files), "files_differing": differ}))


if __name__ == "__main__":
    main()
