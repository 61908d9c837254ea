"""A trained model applied to many records on an existing Dask cluster (``predict --scheduler``, ``evaluate
--scheduler``): each worker process loads the model once and keeps it while records come, every worker thread
predicts a record at a time, and the results come back in the order given, as ``model_pool.in_order`` gives them
from local processes (the caller writes the tables, so the files do not depend on where the records were predicted).

What a run's cluster needs, this needs (checked before the first record, workers named): every worker runs this
ecgpipe, reads the model file at its absolute path with the same content, and sees the folders the caller names at
the same path (a shared file system): ``predict``'s workers write the annotation files into its output folder. Records
and folders are sent as absolute paths: a worker's working directory is its own.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from ecgpipe.errors import PipelineError, StoreUnreachable
from ecgpipe.model import TrainedModel, content_digest, load_model

# Records per task: one at first, then as many as take about TASK_S by the time records have taken so far (at most
# MAX_PER_TASK): a 30-s CinC record takes ~45 ms with the cinc2017 model, and a task per record spent as long again
# in round trips through the scheduler; a 30-min record with a CNN takes seconds and stays one per task.
TASK_S = 0.5
MAX_PER_TASK = 16
IN_FLIGHT_PER_THREAD = 2  # tasks submitted ahead per worker thread: every thread busy, few results held anywhere
NO_WORKER_CHECK_S = 30.0  # how long a result may take before the cluster is looked at for workers
WINDOW_REFRESH_S = 10.0  # how often the cluster's threads are counted again: workers that join later get records too

# what the workers run, checked against this process's files: a long-lived worker keeps the code it imported
WORKER_CODE = ("ecgpipe.predict_many", "ecgpipe.evaluate")
_LOADED: dict = {}  # (path, sha256) -> the model, in a worker process
_LOADING = threading.Lock()


def _model_here(path: str, digest: str, require_signed: bool | None) -> TrainedModel:
    with _LOADING:  # a worker's threads share one copy, loaded by the first of them
        model = _LOADED.get((path, digest))
        if model is None:
            model = load_model(path, require_signed=require_signed)
            if model.digest != digest:  # replaced since the command started: its records would mix two models
                raise PipelineError(f"{path}: changed while in use (sha256 {model.digest[:16]}..., was {digest[:16]}...)")
            _LOADED.clear()  # a long-lived worker keeps one model, the last one asked for
            _LOADED[(path, digest)] = model
    return model


def _on_worker(work: Callable, path: str, digest: str, require_signed: bool | None, batch: list[tuple]) -> tuple[list, float]:
    """The batch's results and the seconds they took (the model's loading apart)."""
    model = _model_here(path, digest, require_signed)
    started = time.perf_counter()
    return [work(model, *item) for item in batch], time.perf_counter() - started


def _model_digest(path: str) -> str:
    """Run on each worker: the model's content digest as that worker reads the file, or why it cannot."""
    try:
        return content_digest(path)
    except Exception as exc:
        return f"<{type(exc).__name__}: {exc}>"


def connect(scheduler: str, model: TrainedModel, writes_to: str | None = None, data_dirs: tuple[str, ...] = ()):
    """A client of the cluster at ``scheduler`` whose every worker runs this ecgpipe, sees ``writes_to`` and
    ``data_dirs`` (``orchestration.cluster.check_store_reachable``) and reads ``model``'s file as it is here."""
    from distributed import Client

    from ecgpipe.orchestration.cluster import CLUSTER_WAIT_S, check_store_reachable

    check_store_reachable(scheduler, writes_to, database_dirs=data_dirs, code_of=WORKER_CODE)
    client = Client(scheduler, timeout=CLUSTER_WAIT_S)
    try:
        seen = client.run(_model_digest, os.path.abspath(model.path))
    except BaseException:
        client.close()
        raise
    if wrong := [f"{worker} {got if got.startswith('<') else 'reads another file there'}" for worker, got in seen.items()
                 if got != model.digest]:
        client.close()
        raise StoreUnreachable(f"workers of the cluster at {scheduler} cannot read the model {model.path}: {'; '.join(wrong)}. "
                               "Put it on the file system the workers share, at the same path")
    return client


def _threads(client) -> int:
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return max(1, sum(w.get("nthreads", 1) for w in workers.values()))


class ModelCluster:
    """A client of the cluster at ``scheduler``, checked (``connect``) when made, before any record; closed on leaving
    a ``with`` block."""

    def __init__(self, scheduler: str, model: TrainedModel, writes_to: str | None = None, data_dirs: tuple[str, ...] = ()):
        self.scheduler, self.model = scheduler, model
        self.client = connect(scheduler, model, writes_to, data_dirs)

    def __enter__(self) -> ModelCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()

    def in_order(self, work: Callable, items: Iterable[tuple], require_signed: bool | None = None, lost: str = "",
                 killed: Callable[[tuple, str], object] | None = None) -> Iterator:
        """``work(model, *item)`` for each item, in the order of ``items``, on the cluster's workers (each loads the
        model's file once, checked against its digest), several items per task when they are quick. ``work`` is a
        module-level function (sent by reference), the items hold absolute paths. When the workers of a task died on
        it (Dask retries it on others first), its items are tried again one per task: an item that kills its
        workers alone is ``killed(item, why)``, that record's failure, and the cluster's restarted workers go on
        with the others; without ``killed``, and when the scheduler is lost, an error naming ``item[0]``, followed
        by ``lost``. Stopped (Ctrl-C, an error), the tasks in flight are cancelled: the cluster does not go on
        predicting for nobody."""
        from distributed import KilledWorker

        client, model_path = self.client, os.path.abspath(self.model.path)  # as the workers find it, wherever they run
        run_id, waiting, pending, submitted = uuid.uuid4().hex[:8], iter(items), deque(), 0
        window, counted = IN_FLIGHT_PER_THREAD * _threads(client), time.monotonic()

        def submit(batch: list[tuple]):
            nonlocal submitted
            submitted += 1
            return client.submit(_on_worker, work, model_path, self.model.digest, require_signed, batch,
                                 key=f"ecgpipe-{work.__name__}-{run_id}-{submitted}", pure=False)

        done_n, done_s = 0, 0.0  # items done, and the seconds their work took on the workers

        def submit_more() -> None:  # up to the window: one for each done, more when workers joined
            per_task = 1 if not done_n else max(1, min(MAX_PER_TASK, int(TASK_S * done_n / max(done_s, 1e-9))))
            while len(pending) < window and (batch := list(itertools.islice(waiting, per_task))):
                pending.append((batch, submit(batch)))

        try:
            submit_more()
            while pending:
                batch, future = pending.popleft()
                try:
                    results, seconds = self._result(future, batch, lost)
                    done_n, done_s = done_n + len(batch), done_s + seconds
                except KilledWorker:
                    results = []
                    for item in batch:  # one at a time: the one that kills its workers fails alone
                        try:
                            results += self._result(submit([item]), [item], lost)[0]
                        except KilledWorker as exc:
                            why = f"{item[0]}: the Dask workers that took it died on it (out of memory? their logs say)"
                            if killed is None:
                                raise PipelineError(f"{why}{lost}") from exc
                            results.append(killed(item, why))
                del future  # released on the cluster once no client holds it
                if time.monotonic() - counted > WINDOW_REFRESH_S:
                    window, counted = IN_FLIGHT_PER_THREAD * _threads(client), time.monotonic()
                submit_more()
                yield from results
        finally:
            if pending and client.status == "running":
                client.cancel([f for _, f in pending])

    def _result(self, future, batch: list[tuple], lost: str) -> list:
        """The task's results and seconds; while none comes, a warning once if the cluster has no worker left (Dask waits for
        one rather than fail, and the command would seem to hang). ``KilledWorker`` is the caller's."""
        from concurrent.futures import CancelledError

        warned = False
        while True:
            try:
                return future.result(timeout=NO_WORKER_CHECK_S)
            except TimeoutError:
                if not warned and not self.client.scheduler_info(n_workers=-1).get("workers"):
                    print(f"ecgpipe: warning: the Dask cluster at {self.scheduler} has no worker left; waiting for one "
                          f"(`dask worker {self.scheduler}`), or stop with Ctrl-C", file=sys.stderr, flush=True)
                    warned = True
            except (CancelledError, OSError) as exc:  # the scheduler gone (killed, its machine lost)
                raise PipelineError(f"{batch[0][0]}: lost the Dask scheduler at {self.scheduler} "
                                    f"({type(exc).__name__}){lost}") from exc


def in_order_on_cluster(work: Callable, items: Iterable[tuple], model: TrainedModel, scheduler: str,
                        require_signed: bool | None = None, lost: str = "", data_dirs: tuple[str, ...] = (),
                        killed: Callable[[tuple, str], object] | None = None) -> Iterator:
    """``ModelCluster(...).in_order(...)``, connected when the first result is asked for, closed when done."""
    with ModelCluster(scheduler, model, data_dirs=data_dirs) as cluster:
        yield from cluster.in_order(work, items, require_signed, lost, killed)
