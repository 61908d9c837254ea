"""Per-stage bookkeeping of a run, once for every stage: counts, failed units, stage timers (``OUT/run.json``), and
the two ways a stage runs its units (wait for futures; submit the chunks that are not done)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import distributed

from ecgpipe.location import Location
from ecgpipe.orchestration import interrupt
from ecgpipe.orchestration.cluster import gpu_workers
from ecgpipe.orchestration.console import PROGRESS_RECORD, stage_bar
from ecgpipe.plan import OPTIONAL_STAGES, STAGES, RunPlan, chunk_unit
from ecgpipe.progress import PROGRESS_EVERY_S, progress_line


def error_text(exc: Exception) -> str:
    return getattr(exc, "problem", None) or f"{type(exc).__name__}: {exc}"


def _no_units() -> dict[str, int]:
    return {"computed": 0, "skipped": 0, "failed": 0, "tasks": 0}


@dataclass
class RunLog:
    """Per-stage counts and failed units of one run, written to OUT/run.json whatever happens."""

    out: Location
    t0: float = field(default_factory=time.perf_counter)
    stages: dict = field(default_factory=lambda: {s: _no_units() for s in STAGES if s not in OPTIONAL_STAGES})
    failures: list = field(default_factory=list)
    stage_seconds: dict = field(default_factory=dict)
    rows_computed: dict = field(default_factory=dict)  # chunk stages: rows through a computed chunk task (images)
    records: dict = field(default_factory=dict)  # the records' accounting once they are read (run.json even on failure)

    def rate(self, stage: str) -> float | None:
        """Rows per second of the stage's wall time (``features``: images/s), None when it computed nothing."""
        rows, seconds = self.rows_computed.get(stage, 0), self.stage_seconds.get(stage, 0.0)
        return round(rows / seconds, 1) if rows and seconds > 0 else None

    def count(self, stage: str, computed: int = 0, skipped: int = 0, tasks: int = 0) -> None:
        self.stages.setdefault(stage, _no_units())  # an optional stage appears once it runs
        self.stages[stage]["computed"] += computed
        self.stages[stage]["skipped"] += skipped
        self.stages[stage]["tasks"] += tasks

    def fail(self, stage: str, unit: str, error: str) -> None:
        self.stages.setdefault(stage, _no_units())
        self.stages[stage]["failed"] += 1
        self.failures.append({"stage": stage, "unit": unit, "error": error})

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def timed(self, stage: str):
        """``with log.timed("features"): ...`` adds the block's wall time to the stage's seconds."""
        log = self

        class _Timer:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                log.stage_seconds[stage] = log.stage_seconds.get(stage, 0.0) + time.perf_counter() - self.t
                return False

        return _Timer()

    def write(self, status: str, error: str | None = None, **extra) -> dict:
        doc = {
            "status": status,
            "wall_s": round(time.perf_counter() - self.t0, 2),
            "stages": self.stages,
            "stage_seconds": {k: round(v, 2) for k, v in self.stage_seconds.items()},
            "failed": self.failures,
            **({"error": error} if error else {}),
            **extra,
        }
        try:
            self.out.write_text("run.json", json.dumps(doc, indent=2))
        except OSError as exc:  # e.g. the disk is full: the run's own error matters more than its summary
            import sys

            print(f"ecgpipe: could not write {self.out.child('run.json')}: {exc}", file=sys.stderr)
        return doc


def cluster_workers(futures: list, gpu: bool = False) -> int | None:
    """How many workers (``gpu``: with the GPU resource) the Dask cluster running ``futures`` has now (None: not Dask
    futures, or not known)."""
    try:
        client = futures[0].wrapped_future.client
        return len(gpu_workers(client)) if gpu else len(client.scheduler_info(n_workers=-1)["workers"])
    except Exception:
        return None


# tasks that need the GPU resource wait for a worker that has it, however many others the cluster has
NO_GPU_WORKER_LEFT = (": no worker with the GPU resource is left (its job ended or was preempted?) and these tasks "
                      "wait for one: start a `dask worker <scheduler address> --resources GPU=1`, or stop the run with "
                      "Ctrl-C (a rerun computes only what is missing, on CPU workers when the cluster has no GPU one)")


def idle_reason(futures: list, gpu_only: bool) -> str:
    """Why nothing finishes, when it can be told: no worker at all, or (``gpu_only`` tasks) none with a GPU."""
    workers = cluster_workers(futures)
    if workers == 0:
        return no_worker_advice(futures)
    if gpu_only and workers and cluster_workers(futures, gpu=True) == 0:
        return NO_GPU_WORKER_LEFT
    return ""


def no_worker_advice(futures: list) -> str:
    """What to say while a cluster has no worker: a local cluster's workers are starting or were restarted after a
    crash (its log says which); an existing cluster needs one started on it."""
    try:
        local = getattr(futures[0].wrapped_future.client, "cluster", None) is not None
    except Exception:
        local = False
    if local:
        return (": the local Dask cluster has no worker at the moment (still starting, or restarted after a crash: "
                "see the lines above; Ctrl-C stops the run, and a rerun computes only what is missing)")
    return (": the Dask cluster has no worker left (start one, `dask worker <scheduler address>`, or stop the run "
            "with Ctrl-C; a rerun computes only what is missing)")


def result_of(future, stage: str, logger, gpu_only: bool = False):
    """One task's result, waited for as a stage's tasks are: Ctrl-C stops the wait, and a cluster left without
    workers (or, ``gpu_only``, without GPU workers) is reported every ``PROGRESS_EVERY_S`` (a bare
    ``future.result()`` waited for ever, deaf to Ctrl-C)."""
    def waiting(idle_s: float) -> None:
        if why := idle_reason([future], gpu_only):
            logger.warning(f"{stage}: waiting {idle_s:.0f} s for a task" + why)

    for fut in _completed([future], on_wait=waiting):
        return fut.result()


def _completed(futures: list, on_wait=None):
    """Yield futures as they finish, checking twice a second whether the run was asked to stop; ``on_wait(seconds)``
    is called every ``PROGRESS_EVERY_S`` while none finishes (seconds since the last one did). Dask futures are
    followed by one ``distributed.as_completed`` (one watcher each, for the whole wait): a ``distributed.wait(...,
    FIRST_COMPLETED)`` per pass started a watcher per pending future every time and none ended before its future did,
    so memory grew with passes x pending (3.4 GB at 4000 futures, tens of GB for a stage of 30 000 tasks); others
    (a thread pool's) are polled."""
    on_dask: dict[str, list] = {}  # a Dask future's key -> the futures that wrap it
    polled = []
    for f in futures:
        inner = getattr(f, "wrapped_future", None)
        if isinstance(inner, distributed.Future):
            on_dask.setdefault(inner.key, []).append(f)
        else:
            polled.append(f)
    inners = [wrapped[0].wrapped_future for wrapped in on_dask.values()]
    finished = distributed.as_completed(inners, loop=inners[0].client.loop) if inners else None
    left = len(futures)
    last_done = last_said = time.perf_counter()
    while left:
        done = [f for inner in (finished.next_batch(block=False) if finished is not None else []) for f in on_dask[inner.key]]
        if polled:
            finished_now = [f.wrapped_future.done() for f in polled]  # asked once: one finishing meanwhile waits a pass
            done += [f for f, d in zip(polled, finished_now) if d]
            polled = [f for f, d in zip(polled, finished_now) if not d]
        if interrupt.requested():  # start nothing new; what finished is still accounted for; then stop
            for f in [*polled, *(w for wrapped in on_dask.values() for w in wrapped)]:
                if not f.wrapped_future.done():
                    f.wrapped_future.cancel()
            yield from done
            interrupt.check()
        if not done:
            if finished is not None:
                with finished.thread_condition:  # woken as one finishes
                    if not finished.has_ready():
                        finished.thread_condition.wait(timeout=0.1 if polled else 0.5)
            else:
                time.sleep(0.1)
            now = time.perf_counter()
            if on_wait is not None and now - last_said >= PROGRESS_EVERY_S:
                on_wait(now - last_done)
                last_said = now
            continue
        last_done = last_said = time.perf_counter()
        left -= len(done)
        yield from done
    interrupt.check()


def wait_all(futures: list, stage: str, logger, strict: bool = False, on_done=None, stop_after=None, gpu_only: bool = False
             ) -> tuple[list, list[tuple[int, Exception]]]:
    """Wait for a stage's futures, logging progress; returns (results in submission order, (index, error) failures).
    A failed task never stops the others: the rest of the stage keeps running. ``on_done(i, error or None)`` is
    called as each finishes (counts stay right if the run is interrupted); ``stop_after(failures, n_done)`` may
    raise to stop waiting (a systematic error). ``gpu_only``: the tasks need the GPU resource (a wait says when no
    worker has it any more)."""
    order = {id(f): i for i, f in enumerate(futures)}
    results: list = [None] * len(futures)
    failures = []
    step = max(1, len(futures) // 10)
    t0 = last = time.perf_counter()
    n_done = 0

    def waiting(idle_s: float) -> None:  # a line every 15 s even when nothing finishes, saying why when it can
        why = idle_reason(futures, gpu_only)
        say = logger.warning if why else logger.info
        say(progress_line(stage, n_done, len(futures), len(failures), time.perf_counter() - t0)
            + f"; no task finished for {idle_s:.0f} s" + why, extra={PROGRESS_RECORD: True})

    with stage_bar(stage, len(futures)) as advance:
        for done, fut in enumerate(_completed(futures, on_wait=waiting), start=1):
            n_done = done
            i = order[id(fut)]
            try:
                results[i] = fut.result()
            except Exception as exc:
                if strict:
                    raise
                failures.append((i, exc))
                logger.warning(f"{stage}: {exc}")
                if on_done:
                    on_done(i, exc)
            else:
                if on_done:
                    on_done(i, None)
            advance()
            if stop_after:
                stop_after(failures, done)
            now = time.perf_counter()
            if done % step == 0 or done == len(futures) or now - last > PROGRESS_EVERY_S:
                logger.info(progress_line(stage, done, len(futures), len(failures), now - t0), extra={PROGRESS_RECORD: True})
                last = now
    return results, failures


def run_chunk_stage(stage: str, targets: list[tuple[str, list[str]]], n_rows: int, plan: RunPlan, submit, logger,
                    log: RunLog, blocked=(), gpu_only: bool = False) -> set[int]:
    """Submit the chunks of a stage that are not done; returns the chunk indices that failed (or were blocked).

    ``targets`` are (array, chunk keys) pairs filled by the same tasks (the layers of one backbone share a forward
    pass); ``submit(i, [(array, key), ...])`` gets the targets of chunk i that are missing or stale. Units are counted
    per (array, chunk)."""
    todo: dict[int, list[tuple[str, str]]] = {}
    failed: set[int] = set()
    n_chunks, skipped = len(targets[0][1]), 0
    for i in range(n_chunks):
        if i in blocked:
            failed.add(i)
            for array, _ in targets:
                log.fail(stage, f"{array}/{chunk_unit(i)}", "upstream chunk failed")
            continue
        missing = [(array, keys[i]) for array, keys in targets if not plan.chunk_done(array, i, keys[i], n_rows)]
        skipped += len(targets) - len(missing)
        if missing:
            todo[i] = missing
    log.count(stage, skipped=skipped)
    n_units = sum(len(t) for t in todo.values())
    logger.info(f"{stage}: {n_units} of {len(targets) * n_chunks} chunks to compute ({skipped} up to date)")
    chunks = list(todo)
    settled: set[int] = set()

    def on_done(idx: int, exc: Exception | None) -> None:  # counted as they finish: right even if interrupted
        i = chunks[idx]
        settled.add(i)
        if exc is None:
            log.count(stage, computed=len(todo[i]))
            chunk = plan.cfg.run.chunk_size
            log.rows_computed[stage] = log.rows_computed.get(stage, 0) + min(chunk, n_rows - i * chunk)
            return
        failed.add(i)
        for array, _ in todo[i]:
            log.fail(stage, f"{array}/{chunk_unit(i)}", error_text(exc))

    log.count(stage, tasks=len(chunks))
    try:
        wait_all([submit(i, todo[i]) for i in chunks], stage, logger, on_done=on_done, gpu_only=gpu_only)
    except interrupt.RunInterrupted:  # units that finished (their marker is written) as the run stopped count too
        log.count(stage, computed=sum(plan.chunk_done(array, i, key, n_rows) for i in chunks if i not in settled
                                      for array, key in todo[i]))
        raise
    return failed
