"""What waiting for a stage's tasks costs the flow process: 0.22.0's wait against 0.21.0's, side by side.

    python tests/benchmarks/bench_wait.py --futures 1000 2000 4000

A stage's futures (tasks that sleep ``--task-s`` each, on one in-process worker with 8 threads, so that most wait
in the queue as a large stage's do) are waited for by ``bookkeeping._completed`` as it is, and by 0.21.0's loop
(copied below: ``distributed.wait(pending, FIRST_COMPLETED, timeout=0.5)`` on every pass while none finished).
Measured for each: the wall time against the ideal (futures x task-s / threads), the largest count of asyncio tasks
on the client's event loop (each watcher of a future is one) and the resident memory added. One JSON line per size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from types import SimpleNamespace

import distributed
from distributed import Client

from ecgpipe.orchestration.bookkeeping import _completed

THREADS = 8


def completed_021(futures: list):
    """0.21.0's bookkeeping._completed, less its Ctrl-C and progress handling (which cost nothing here)."""
    pending = list(futures)
    while pending:
        done = [f for f in pending if f.wrapped_future.done()]
        if not done:
            try:
                distributed.wait([f.wrapped_future for f in pending], timeout=0.5, return_when="FIRST_COMPLETED")
            except TimeoutError:
                pass
            continue
        for f in done:
            pending.remove(f)
            yield f


def resident_mb() -> float:
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


def measure(client: Client, wait, n: int, task_s: float) -> dict:
    async def watchers():
        return len(asyncio.all_tasks())

    futures = [SimpleNamespace(wrapped_future=f) for f in
               (client.submit(time.sleep, task_s, key=f"sleep-{wait.__name__}-{n}-{i}") for i in range(n))]
    peak = {"tasks": 0, "mb": 0.0}
    start_mb, stop = resident_mb(), threading.Event()

    def sample():  # every 0.2 s: the loop's tasks and this process's memory
        while not stop.wait(0.2):
            peak["tasks"] = max(peak["tasks"], client.sync(watchers))
            peak["mb"] = max(peak["mb"], resident_mb() - start_mb)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.perf_counter()
    yielded = sum(1 for _ in wait(futures))
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    assert yielded == n
    return {"wall_s": round(wall, 1), "peak_loop_tasks": peak["tasks"], "peak_added_mb": round(peak["mb"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--futures", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--task-s", type=float, default=0.1)
    args = parser.parse_args()
    with Client(processes=False, n_workers=1, threads_per_worker=THREADS, dashboard_address=None) as client:
        for n in args.futures:
            now = measure(client, _completed, n, args.task_s)
            before = measure(client, completed_021, n, args.task_s)
            print(json.dumps({"benchmark": "stage_wait", "futures": n, "task_s": args.task_s,
                              "ideal_wall_s": round(n * args.task_s / THREADS, 1), "0.22.0": now, "0.21.0": before,
                              "memory_ratio_021_over_022": round(before["peak_added_mb"] / max(now["peak_added_mb"], 1), 1),
                              "loop_tasks_ratio": round(before["peak_loop_tasks"] / max(now["peak_loop_tasks"], 1), 1)}),
                  flush=True)


if __name__ == "__main__":
    main()
