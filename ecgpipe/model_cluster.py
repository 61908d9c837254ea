"""A trained model applied to many records on an existing Dask cluster (``predict --scheduler``, ``evaluate
--scheduler``): each worker process loads the model once and keeps it while records come, every worker thread
predicts a task of records at a time, and the results come back in the order given, as ``model_pool.in_order`` gives
them from local processes (the caller writes the tables, so the files do not depend on where records were predicted).

What a run's cluster needs, this needs (checked before the first record, the workers named): the scheduler and every
worker run this ecgpipe (the scheduler unpickles the tasks), every worker reads the model file at its absolute path
with the same content and sees the folders the caller names at the same path (a shared file system): ``predict``'s
workers write the annotation files into its output folder. A worker that joins later is checked on its first task.
Records and folders are sent as absolute paths: a worker's working directory is its own.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
import threading
import time
import uuid
from collections import OrderedDict, deque
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
MODELS_KEPT = 2  # per worker process: two commands sharing a cluster do not reload their models on every task

# what the scheduler and the workers run, checked against this process's files: a long-lived one keeps the code it imported
WORKER_CODE = ("ecgpipe.predict_many", "ecgpipe.evaluate")
_LOADED: OrderedDict = OrderedDict()  # (path, content digest) -> the model, in a worker process
_CHECKED: set = set()  # (code, output folder, folders read) this worker process was found to run and see
_LOADING = threading.Lock()
_ONE_AT_A_TIME = threading.Lock()  # OpenVINO's one inference request serves one call at a time


def _worker_problem(code: str, writes_to: str | None, reads: tuple[str, ...]) -> str:
    """Run on a worker (by ``connect``, and on its first task: it may have joined since): what keeps it from this
    command's records ('' when nothing: remembered for the worker process's life)."""
    from ecgpipe.orchestration.worker_code import worker_code

    reads = tuple(reads)  # hashable, however the task's arguments were sent
    if (code, writes_to, reads) in _CHECKED:
        return ""
    if (here := worker_code(WORKER_CODE)) != code:
        return f"runs other ecgpipe code than this command ({here if here.startswith('<') else 'another version or checkout'})"
    # made by the command before: a worker without the shared mount does not see them
    if unseen := [f for f in (writes_to, *reads) if f and not os.path.isdir(f)]:
        return f"cannot see {', '.join(unseen)}"
    _CHECKED.add((code, writes_to, reads))
    return ""


def _model_here(path: str, digest: str, code: str, writes_to: str | None, reads: tuple[str, ...] = ()) -> TrainedModel:
    with _LOADING:  # a worker's threads share one copy (and one CNN extractor), built by the first of them
        if problem := _worker_problem(code, writes_to, reads):
            from distributed import get_worker

            raise StoreUnreachable(f"the Dask worker {get_worker().address} {problem}: restart it with this ecgpipe, "
                                   "the data and output folders mounted at the same paths as the command's")
        from ecgpipe.orchestration.worker_code import drop_extractors_of_changed_weights

        model = _LOADED.get((path, digest))
        # a local weights file saved over since this worker built its extractor: built again, as a new process would
        stale_weights = model is not None and drop_extractors_of_changed_weights(model.config.features.weights_path)
        if model is None:
            # the command verified its signature, where asked; the same content digest says this is that file
            model = load_model(path, require_signed=False)
            if model.digest != digest:  # replaced since the command started: its records would mix two models
                raise PipelineError(f"{path}: changed while in use (sha256 {model.digest[:16]}..., was {digest[:16]}...)")
            drop_extractors_of_changed_weights(model.config.features.weights_path)  # noted as seen now
            stale_weights = True
        if stale_weights and model.config.classifier.inputs != "rhythm":  # built here, under the lock: threads
            from ecgpipe.featurize import Featurizer  # building it at once would trace the CNN side by side (torch.fx)

            Featurizer(model.config, device="auto").extractor()  # as predict's windows ask for it (grid.py)
        if (path, digest) not in _LOADED:
            _LOADED[(path, digest)] = model
            while len(_LOADED) > MODELS_KEPT:
                _LOADED.popitem(last=False)
        _LOADED.move_to_end((path, digest))
    return model


def _on_worker(work: Callable, path: str, digest: str, code: str, writes_to: str | None, reads: tuple[str, ...],
               batch: list[tuple]) -> tuple[list, float]:
    """The batch's results and the seconds they took (the model's loading apart)."""
    model = _model_here(path, digest, code, writes_to, reads)
    started = time.perf_counter()
    with _ONE_AT_A_TIME if model.config.features.engine == "openvino" else contextlib.nullcontext():
        results = [work(model, *item) for item in batch]
    return results, time.perf_counter() - started


def _model_digest(path: str) -> str:
    """Run on each worker: the model's content digest as that worker reads the file, or why it cannot."""
    try:
        return content_digest(path)
    except Exception as exc:
        return f"<{type(exc).__name__}: {exc}>"


def connect(scheduler: str, model: TrainedModel, code: str, writes_to: str | None = None, reads: tuple[str, ...] = ()):
    """A client of the cluster at ``scheduler`` whose scheduler and workers run this ecgpipe (``code``), whose
    workers see ``writes_to`` (a token written here, read there: ``orchestration.cluster.check_store_reachable``)
    and the folders ``reads`` (some of the records'), and read ``model``'s file as it is here."""
    from distributed import Client

    from ecgpipe.orchestration.cluster import CLUSTER_WAIT_S, check_store_reachable
    from ecgpipe.orchestration.worker_code import worker_code

    check_store_reachable(scheduler, writes_to, code_of=WORKER_CODE)
    client = Client(scheduler, timeout=CLUSTER_WAIT_S, set_as_default=False)
    try:
        try:
            there = client.run_on_scheduler(worker_code, WORKER_CODE)
        except Exception as exc:  # no ecgpipe there at all, or one without this check
            there = f"<{type(exc).__name__}: {exc}>"
        if there != code:
            raise StoreUnreachable(f"the Dask scheduler at {scheduler} does not run this ecgpipe's code (it unpickles the "
                                   f"tasks: {there if there.startswith('<') else 'another version or checkout'}): "
                                   "restart it with the same ecgpipe as this command's")
        path = os.path.abspath(model.path)
        digests, seen = client.run(_model_digest, path), client.run(_worker_problem, code, writes_to, reads)
        problems = [f"{w} cannot read the model {path} ({got if got.startswith('<') else 'another file there'})"
                    for w, got in digests.items() if got != model.digest]
        problems += [f"{w} {problem}" for w, problem in seen.items() if problem]
        if problems:
            raise StoreUnreachable(f"workers of the cluster at {scheduler}: {'; '.join(problems)}. Put the model and the "
                                   "records on the file system the workers share, at the same paths")
    except BaseException:
        client.close()
        raise
    return client


def _threads(client, gpu: bool = False) -> int:
    """The cluster's worker threads; with ``gpu``, its GPUs (a task takes one: a worker runs as many at once)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    if gpu:
        return max(1, sum(int((w.get("resources") or {}).get("GPU", 0)) for w in workers))
    return max(1, sum(w.get("nthreads", 1) for w in workers))


class _QuietClient(logging.Filter):
    """The client's own tracebacks while it reconnects to a scheduler that is gone: the command says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL


class ModelCluster:
    """A client of the cluster at ``scheduler``, checked (``connect``) when made, before any record; closed on leaving
    a ``with`` block (which releases on the cluster whatever is still queued)."""

    def __init__(self, scheduler: str, model: TrainedModel, writes_to: str | None = None, reads: tuple[str, ...] = ()):
        from ecgpipe.orchestration.worker_code import installed_code

        self.scheduler, self.model, self.writes_to, self.reads = scheduler, model, writes_to, tuple(reads)
        self.code = installed_code(WORKER_CODE)
        self.client = connect(scheduler, model, self.code, writes_to, self.reads)
        self._quiet = _QuietClient()  # its own instance: clusters closed in any order leave the logger as it was
        logging.getLogger("distributed.client").addFilter(self._quiet)

    def describe(self) -> str:
        """``on the Dask cluster at ADDRESS: 2 workers, 3 threads`` and where a CNN's records go."""
        from ecgpipe.orchestration.cluster import gpu_workers  # dask imported when a cluster is asked for

        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        line = f"on the Dask cluster at {self.scheduler}: {len(workers)} worker(s), {_threads(self.client)} thread(s)"
        if self.model.config.classifier.inputs != "rhythm" and (gpus := gpu_workers(self.client)):
            line += f"; the CNN's records on its {len(gpus)} GPU worker(s)"
        return line

    def __enter__(self) -> ModelCluster:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.client.close()
        finally:
            logging.getLogger("distributed.client").removeFilter(self._quiet)

    def in_order(self, work: Callable, items: Iterable[tuple], lost: str = "",
                 killed: Callable[[tuple, str], object] | None = None) -> Iterator:
        """``work(model, *item)`` for each item, in the order of ``items``, on the cluster's workers (each loads the
        model's file once, checked against its digest), several items per task when they are quick. ``work`` is a
        module-level function (sent by reference), the items hold absolute paths. When the workers of a task died on
        it (Dask retries it on others first), its items are tried again one per task: an item that kills its
        workers alone is ``killed(item, why)``, that record's failure, and the cluster's restarted workers go on
        with the others; without ``killed``, and when the scheduler is lost, an error naming ``item[0]``, followed
        by ``lost``. Stopped (Ctrl-C, an error), the tasks not yet running are cancelled: the cluster does not go on
        predicting for nobody (a task running finishes)."""
        from distributed import KilledWorker

        from ecgpipe.orchestration.cluster import gpu_workers

        client, model_path = self.client, os.path.abspath(self.model.path)  # as the workers find it, wherever they run
        run_id, waiting, pending, retried, submitted = uuid.uuid4().hex[:8], iter(items), deque(), [], 0
        # a CNN's records go to the GPU workers when the cluster has any, as a run's feature tasks do
        gpu = self.model.config.classifier.inputs != "rhythm" and bool(gpu_workers(client))
        window, counted = IN_FLIGHT_PER_THREAD * _threads(client, gpu), time.monotonic()
        done_n, done_s = 0, 0.0  # items done, and the seconds their work took on the workers

        def submit(batch: list[tuple]):
            nonlocal submitted
            submitted += 1
            return client.submit(_on_worker, work, model_path, self.model.digest, self.code, self.writes_to, self.reads, batch,
                                 key=f"ecgpipe-{work.__name__}-{run_id}-{submitted}", pure=False,
                                 resources={"GPU": 1} if gpu else None)

        def submit_more() -> None:  # up to the window: one for each done, more when workers joined
            per_task = 1 if not done_n else max(1, min(MAX_PER_TASK, int(TASK_S * done_n / max(done_s, 1e-9))))
            while len(pending) < window and (batch := list(itertools.islice(waiting, per_task))):
                pending.append((batch, submit(batch)))

        try:
            submit_more()
            while pending:
                batch, future = pending[0]
                try:
                    results, seconds = self._result(future, batch[0][0], lost, gpu)
                    done_n, done_s = done_n + len(batch), done_s + seconds
                except KilledWorker:
                    results = []
                    for item in batch:  # one at a time: the one that kills its workers fails alone
                        retried[:] = [submit([item])]
                        try:
                            results += self._result(retried[0], item[0], lost, gpu)[0]
                        except KilledWorker as exc:
                            why = f"{item[0]}: the Dask workers that took it died on it (out of memory? their logs say)"
                            if killed is None:
                                raise PipelineError(f"{why}{lost}") from exc
                            results.append(killed(item, why))
                    retried.clear()
                pending.popleft()
                del future  # released on the cluster once no client holds it
                if time.monotonic() - counted > WINDOW_REFRESH_S:
                    window, counted = IN_FLIGHT_PER_THREAD * _threads(client, gpu), time.monotonic()
                submit_more()
                yield from results
        finally:
            if (pending or retried) and client.status == "running":
                with contextlib.suppress(Exception):  # a scheduler that does not answer: closing releases them too
                    client.cancel([f for _, f in pending] + retried)

    def _result(self, future, name: str, lost: str, gpu: bool = False):
        """The task's result; while none comes, a warning once if the cluster has no worker left to run it (no
        worker, or with ``gpu`` no GPU worker: Dask waits for one rather than fail, and the command would seem to
        hang). A task's own error is raised as it is (``KilledWorker`` is the caller's); a future cancelled under
        it, or a client cut off, is the scheduler lost."""
        from concurrent.futures import CancelledError

        from distributed import wait

        from ecgpipe.orchestration.cluster import gpu_workers

        warned, gone = False, f"{name}: lost the Dask scheduler at {self.scheduler}"
        while True:
            try:
                with self.client.as_current():  # waits only: the task's own errors come from result()
                    wait([future], timeout=NO_WORKER_CHECK_S)
                break
            except TimeoutError:  # still running, or waiting for a worker
                if self.client.status != "running":  # reconnecting, or closed: its futures may never finish
                    raise PipelineError(f"{gone} (the client is {self.client.status}){lost}") from None
                if not warned and not (gpu_workers(self.client) if gpu else self.client.scheduler_info(n_workers=-1).get("workers")):
                    print(f"ecgpipe: warning: the Dask cluster at {self.scheduler} has no {'GPU ' if gpu else ''}worker "
                          f"left; waiting for one (`dask worker {self.scheduler}{' --resources GPU=1' if gpu else ''}`), or "
                          "stop with Ctrl-C", file=sys.stderr, flush=True)
                    warned = True
            except (CancelledError, OSError) as exc:  # its tasks cancelled when the scheduler went, the connection cut
                raise PipelineError(f"{gone} ({type(exc).__name__}){lost}") from exc
        if future.status == "cancelled" or self.client.status != "running":
            raise PipelineError(f"{gone} (its tasks cancelled){lost}")
        try:
            return future.result()
        except (CancelledError, OSError) as exc:
            if future.status == "error":  # the task's own error (a PermissionError writing its annotations)
                raise
            raise PipelineError(f"{gone} ({type(exc).__name__}){lost}") from exc


def in_order_on_cluster(work: Callable, items: Iterable[tuple], model: TrainedModel, scheduler: str, lost: str = "",
                        reads: tuple[str, ...] = (), killed: Callable[[tuple, str], object] | None = None,
                        say: Callable[[str], object] = print) -> Iterator:
    """``ModelCluster(...).in_order(...)``, connected (and described to ``say``) when the first result is asked
    for, closed when done."""
    with ModelCluster(scheduler, model, reads=reads) as cluster:
        say(cluster.describe())
        yield from cluster.in_order(work, items, lost, killed)
