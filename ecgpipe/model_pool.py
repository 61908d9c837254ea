"""A trained model applied to many records in worker processes, each loading the model once; results in order.

``ecgpipe predict --jobs`` and ``ecgpipe evaluate --jobs`` go through :func:`in_order`. Workers are spawned, not
forked (a forked copy of a process running torch or ONNX Runtime threads can hang); each shares the machine's cores
with the others (its BLAS and OpenMP pools, and a CNN's threads when asked), ignores Ctrl-C and SIGTERM (the parent
decides and stops the pool) and leaves when its parent is gone (killed, out of memory), so that no process is left
holding a model.
"""

from __future__ import annotations

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


def in_order(work: Callable, items: Iterable[tuple], model: TrainedModel, jobs: int = 1, require_signed: bool | None = None,
             cnn_threads: int | None = None, lost: str = "") -> Iterator:
    """``work(model, *item)`` for each item, in the order of ``items``: in this process with ``model`` when ``jobs``
    is 1, else from ``jobs`` processes that each load ``model.path`` (checked against its digest; ``cnn_threads``:
    their CNN threads). ``work`` is a module-level function (sent by reference), ``item[0]`` names the item in the
    error raised when a process dies, followed by ``lost`` (what the caller kept of the items done)."""
    if jobs == 1:
        for item in items:
            yield work(model, *item)
        return
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(model.path, model.digest, require_signed, jobs, cnn_threads))
    waiting, pending = iter(items), deque()
    try:
        for item in waiting:
            pending.append((item[0], pool.submit(_in_worker, work, item)))
            if len(pending) >= IN_FLIGHT_PER_JOB * jobs:
                break
        while pending:
            name, future = pending.popleft()
            try:
                result = future.result()
            except BrokenProcessPool as exc:
                raise PipelineError(f"{name}: a worker process died on it or on a record beside it (out of memory? or "
                                    f"the model could not be loaded in a new process){lost}") from exc
            following = next(waiting, None)  # one more in flight for the one done
            if following is not None:
                pending.append((following[0], pool.submit(_in_worker, work, following)))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
