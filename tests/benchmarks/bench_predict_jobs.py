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
report, and evaluation.json but its wall time). With ``--cluster``, a third time with ``--scheduler`` on a
`dask scheduler` and N one-thread `dask worker` processes on 127.0.0.1, started before the clock (the cluster
exists; its workers import ecgpipe and load the model within the timing, as ``--jobs``' processes do), its files
compared too. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from ecgpipe.predict import record_paths  # noqa: E402


def command(args, records: list[str], out: Path, where: list[str]) -> float:
    if args.evaluate:
        argv = ["evaluate", "--model", args.model, "--config", args.evaluate, "--data-dir", args.data_dir, "--seed", "0",
                *(["--max-records", str(args.max_records)] if args.max_records else []), *(["--map", *args.map] if args.map else [])]
    else:
        argv = ["predict", "--model", args.model, *records, *(["--compare", args.compare] if args.compare else [])]
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ecgpipe.cli", *argv, "--out", str(out), *where], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):  # 1: some records failed, named in records.csv (the same in both runs)
        sys.exit(f"{argv[0]} {' '.join(where)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall


@contextlib.contextmanager
def local_cluster(tmp: Path, workers: int):
    """A `dask scheduler` and ``workers`` one-thread `dask worker` processes on 127.0.0.1; yields its address."""
    from distributed import Client

    dask, sched_file = str(Path(sys.executable).with_name("dask")), tmp / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
                               "--scheduler-file", str(sched_file)], **quiet)]
    try:
        while not sched_file.exists():
            time.sleep(0.2)
        procs += [subprocess.Popen([dask, "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                                    "--dashboard-address", ":0"], **quiet) for _ in range(workers)]
        with Client(scheduler_file=str(sched_file), timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
            yield client.scheduler.address
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def differing(one: Path, other: Path, evaluate: bool) -> tuple[list[str], int]:
    """Files of ``one`` that ``other`` lacks or holds otherwise (evaluation.json but its wall time), and how many."""
    files = sorted(p.relative_to(one).as_posix() for p in one.rglob("*")
                   if p.is_file() and p.name not in ("model.json", "evaluation.json"))
    differ = [f for f in files if not (other / f).is_file() or not filecmp.cmp(one / f, other / f, shallow=False)]
    if evaluate:  # its wall time apart
        docs = [json.loads((d / "evaluation.json").read_text()) for d in (one, other)]
        if {k: v for k, v in docs[0].items() if k != "wall_s"} != {k: v for k, v in docs[1].items() if k != "wall_s"}:
            differ.append("evaluation.json")
        files.append("evaluation.json")
    return differ, len(files)


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
    ap.add_argument("--cluster", action="store_true", help="also time --scheduler on a local cluster of --jobs workers")
    args = ap.parse_args()
    records = record_paths(args.records)[: args.first] if args.records else []
    line = {"benchmark": "evaluate_jobs" if args.evaluate else "predict_jobs", "model": args.model,
            "records": args.max_records if args.evaluate else len(records), "jobs": args.jobs}
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        wall_one = command(args, records, one, ["--jobs", "1"])
        wall_many = command(args, records, many, ["--jobs", str(args.jobs)])
        differ, n_files = differing(one, many, bool(args.evaluate))
        line.update({"wall_s_one_process": round(wall_one, 1), f"wall_s_jobs_{args.jobs}": round(wall_many, 1),
                     "speedup": round(wall_one / wall_many, 2), "files_compared": n_files, "files_differing": differ})
        if args.cluster:
            with local_cluster(Path(tmp), args.jobs) as address:
                wall_cluster = command(args, records, Path(tmp) / "cluster", ["--scheduler", address])
            line.update({f"wall_s_cluster_{args.jobs}_workers": round(wall_cluster, 1),
                         "speedup_cluster": round(wall_one / wall_cluster, 2),
                         "files_differing_cluster": differing(one, Path(tmp) / "cluster", bool(args.evaluate))[0]})
    print(json.dumps(line))


if __name__ == "__main__":
    main()
