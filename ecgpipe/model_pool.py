"""A trained model applied to many records in worker processes, each loading the model once; results in order.

``ecgpipe predict --jobs`` and ``ecgpipe evaluate --jobs`` go through :func:`in_order`. Workers are spawned, not
forked (a forked copy of a process running torch or ONNX Runtime threads can hang); each shares the machine's cores
with the others (its BLAS and OpenMP pools, and a CNN's threads when asked), ignores Ctrl-C and SIGTERM (the parent
decides and stops the pool) and leaves when its parent is gone (killed, out of memory), so that no process is left
holding a model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ecgpipe.errors import PipelineError
from ecgpipe.model import TrainedModel, load_model

IN_FLIGHT_PER_JOB = 4  # items submitted ahead per process: enough to keep it busy, few held in memory

_WORKER: dict = {}


def with_cnn_threads(model: TrainedModel, threads: int) -> TrainedModel:
    """``model`` whose CNN inference uses ``threads`` CPU threads (the training workers' setting otherwise)."""
    features = model.config.features.model_copy(update={"torch_threads": threads})
    return dataclasses.replace(model, config=model.config.model_copy(update={"features": features}))


def _start_worker(model_path: str, digest: str, require_signed: bool | None, jobs: int, cnn_threads: int | None) -> None:
    from threadpoolctl import threadpool_limits

    from ecgpipe.progress import one_line_warning

    warnings.formatwarning = one_line_warning  # a record read with a warning says so as the command line does
    for sig in (signal.SIGINT, signal.SIGTERM):  # a terminal's Ctrl-C, a batch system's SIGTERM to every process
        signal.signal(sig, signal.SIG_IGN)  # of the job: the parent decides, and stops the pool
    # the cores shared out: each process's BLAS and OpenMP pools (gradient boosting predicts with every core) would
    # otherwise start one thread per core in every process, and ``jobs`` processes ran slower than one
    _WORKER["threads"] = threadpool_limits(max(1, (os.cpu_count() or 1) // jobs))
    model = load_model(model_path, require_signed=require_signed)
    if model.digest != digest:  # replaced since the command started: its records would mix two models
        raise PipelineError(f"{model_path}: changed while in use (sha256 {model.digest[:16]}..., was {digest[:16]}...)")
    _WORKER["model"] = with_cnn_threads(model, cnn_threads) if cnn_threads else model
    parent = os.getppid()

    def leave_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=leave_with_parent, daemon=True).start()


def _in_worker(work: Callable, item: tuple):
    return work(_WORKER["model"], *item)


def _ready() -> bool:
    return True


def _stop_broken(pool: ProcessPoolExecutor) -> None:
    """Shut a pool down after one of its processes died. The survivors ignore SIGTERM (``_start_worker``), so the
    executor's own terminate cannot stop them, and one blocked writing a large result to the pipe nobody reads any
    more waits for ever, and the shutdown with it (an evaluation hung so): they are killed first."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def in_order(work: Callable, items: Iterable[tuple], model: TrainedModel, jobs: int = 1, require_signed: bool | None = None,
             cnn_threads: int | None = None, lost: str = "", killed: Callable[[tuple, str], object] | None = None) -> Iterator:
    """``work(model, *item)`` for each item, in the order of ``items``: in this process with ``model`` when ``jobs``
    is 1, else from ``jobs`` processes that each load ``model.path`` (checked against its digest; ``cnn_threads``:
    their CNN threads). ``work`` is a module-level function (sent by reference).

    A process that dies (the kernel's out-of-memory killer, a crash in a library) takes every item in flight with it.
    With ``killed``, those items are tried again one at a time in a process of their own: one that kills it again is
    ``killed(item, why)``, its failure, and the others go on (the cluster's workers do the same,
    ``model_cluster``). Without ``killed``, or when a new process cannot even start, an error names ``item[0]``,
    followed by ``lost`` (what the caller kept of the items done)."""
    if jobs == 1:
        for item in items:
            yield work(model, *item)
        return

    def start(processes: int) -> ProcessPoolExecutor:  # the cores shared out between ``processes``, not ``jobs``
        threads = cnn_threads and max(1, cnn_threads * jobs // processes)
        return ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                                   initargs=(model.path, model.digest, require_signed, processes, threads))

    def died(name: str, exc: BaseException) -> PipelineError:
        return PipelineError(f"{name}: a worker process died on it or on a record beside it (out of memory? or the "
                             f"model could not be loaded in a new process){lost}")

    waiting, pending = iter(items), deque()
    pool = start(jobs)
    try:
        while True:
            while len(pending) < IN_FLIGHT_PER_JOB * jobs and (item := next(waiting, None)) is not None:
                pending.append((item, pool.submit(_in_worker, work, item)))
            if not pending:
                return
            item, future = pending.popleft()
            try:
                result = future.result()
            except BrokenProcessPool as exc:
                _stop_broken(pool)
                if killed is None:
                    raise died(item[0], exc) from exc
                suspects = [item] + [it for it, _ in pending]
                pending.clear()
                yield from _one_at_a_time(work, suspects, start, killed, died)
                pool = start(jobs)
                continue
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _one_at_a_time(work: Callable, items: list[tuple], start: Callable, killed: Callable, died: Callable) -> Iterator:
    """The items a dead process took with it, each alone in a process of one: the one that dies again is killed."""
    alone = start(1)
    try:
        for item in items:
            try:
                alone.submit(_ready).result()  # a process that cannot start (no memory, the model unloadable) is no
            except BrokenProcessPool as exc:   # record's fault: the command stops, naming where it was
                raise died(item[0], exc) from exc
            try:
                yield alone.submit(_in_worker, work, item).result()
            except BrokenProcessPool:
                yield killed(item, f"{item[0]}: a worker process died on it twice, the second time with it alone (out "
                                   "of memory, or a crash in a library): left out, the others go on")
                _stop_broken(alone)
                alone = start(1)
    finally:
        alone.shutdown(wait=True)
