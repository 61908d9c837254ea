"""Which ecgpipe code a Dask worker runs. A worker imports ecgpipe's modules once, when its first task needs them, and
runs that code for the rest of its life, whatever the files say later; a run's content keys, computed by the run's
own process from the files as they are now, would then name code the worker does not run, and its results would be
stored, and trusted by every later run, as the new code's. ``cluster.check_store_reachable`` compares each worker's
``worker_code()`` with this process's ``installed_code()`` before a run on an existing cluster.

What is compared is the code tasks run (``orchestration.tasks`` and every ecgpipe module it imports, by file
content: another Python version reads the same files the same way), and, on the worker, whether a module of it was
imported before its file last changed. Import times are recorded from a worker's first check on (an audit hook), so
a module imported after an edit is never taken for a stale one; a module imported before that first check (a
preload) is judged by the worker's start time."""

from __future__ import annotations

import hashlib
import os
import sys
import time

from distributed.diagnostics.plugin import WorkerPlugin

PACKAGE = "ecgpipe"
WORKER_MODULE = "ecgpipe.orchestration.tasks"  # what a worker runs: the tasks and the stages they import
CLOCK_SLACK_S = 2.0  # file systems' coarse times, and a file server's clock a little off the worker's
_IMPORTED_AT: dict[str, float] = {}  # ecgpipe module -> when this process imported it (from the first check on)
_watching = False


def _record_import(event: str, args: tuple) -> None:
    if event == "import" and isinstance(args[0], str) and (args[0] == PACKAGE or args[0].startswith(PACKAGE + ".")):
        _IMPORTED_AT.setdefault(args[0], time.time())


def _watch_imports() -> None:
    global _watching
    if not _watching:
        sys.addaudithook(_record_import)  # for the process's life: audit hooks cannot be removed (it is cheap)
        _watching = True


def _worker_modules(roots: tuple[str, ...] = (WORKER_MODULE,)) -> list[str]:
    from ecgpipe.keys import module_closure

    # not the cached answer: the files may have changed
    return sorted({name for root in roots for name in module_closure.__wrapped__(root)})


def installed_code(roots: tuple[str, ...] = (WORKER_MODULE,)) -> str:
    """Hash of the code tasks run (``roots``, by default ``WORKER_MODULE``, and their ecgpipe imports; ``predict`` and
    ``evaluate`` on a cluster name theirs) as its files are now."""
    from ecgpipe.keys import module_file

    h = hashlib.sha256()
    for name in _worker_modules(roots):
        h.update(name.encode() + b"\0" + module_file(name).read_bytes())
    return h.hexdigest()[:16]


def worker_code(roots: tuple[str, ...] = (WORKER_MODULE,)) -> str:
    """This process's code: ``installed_code()``, or ``<...>`` naming the modules it imported before their files
    last changed (it runs what it imported, not what they say now)."""
    _watch_imports()  # first: every later import of an ecgpipe module here gets its time
    import psutil  # a dependency of distributed

    started = psutil.Process().create_time()
    changed = []
    for name in _worker_modules(roots):
        path = getattr(sys.modules.get(name), "__file__", None)
        if path is None:
            continue  # not imported here yet: it will be, from the file as it is then
        try:
            if os.path.getmtime(path) > _IMPORTED_AT.get(name, started) + CLOCK_SLACK_S:
                changed.append(name)
        except OSError:  # removed since
            changed.append(name)
    if changed:
        names = ", ".join(sorted(changed)[:3]) + (" ..." if len(changed) > 3 else "")
        return f"<imported {names} before its file changed>"
    return installed_code(roots)


class StaleWorkerCode(RuntimeError):
    """A task reached a worker found to run other ecgpipe code than the run's (in the moment before it leaves): not
    the unit's fault, so a retry elsewhere may pass (a transient error, not an ``EcgpipeError``)."""


class CodeCheck(WorkerPlugin):
    """A Dask worker plugin a run on an existing cluster registers (``cluster.late_workers_checked``) once its workers
    passed ``check_store_reachable``: the scheduler hands it to every worker that joins later too (a SLURM job or a
    pod that starts mid-run), which compares its code with the run's once, on joining. A worker of other code leaves
    the cluster, saying why in its log, before it takes a task: its results would be stored under this code's keys.
    The run unregisters it when it ends (a worker of another ecgpipe may then join the cluster for other work)."""

    idempotent = False

    def __init__(self, code: str, name: str, roots: tuple[str, ...] = (WORKER_MODULE,)):
        self.code, self.name, self.roots = code, name, tuple(roots)

    def setup(self, worker) -> None:
        try:
            here = worker_code(self.roots)
        except Exception as exc:  # fails closed: a worker that cannot tell its code is not trusted with the run's
            here = f"<{type(exc).__name__}: {exc}>"
        problem = "" if here == self.code else here if here.startswith("<") else "another version or checkout"
        worker.ecgpipe_code_problem = problem
        if problem:
            import logging

            logging.getLogger("distributed.worker").error(
                f"ecgpipe: this worker runs other ecgpipe code than the run that registered this check ({problem}): "
                "it leaves the cluster; restart it with the run's ecgpipe")
            worker.loop.add_callback(worker.close, reason="ecgpipe: other code than the run's")


def refuse_if_stale() -> None:
    """In a task: raise when this Dask worker was found (``CodeCheck``) to run other ecgpipe code than the run's; it is
    leaving the cluster, and the task is retried on another worker."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:  # not on a Dask worker (a test calling a task's function directly)
        return
    if problem := getattr(worker, "ecgpipe_code_problem", ""):
        raise StaleWorkerCode(f"the Dask worker {worker.address} runs other ecgpipe code than this run ({problem}) and "
                              "is leaving the cluster")


_weights_seen: dict[str, tuple[int, int]] = {}  # this worker process's last look at each local weights file


def drop_extractors_of_changed_weights(weights_path: str | None) -> bool:
    """A worker that outlives a run (``dask worker`` of an existing cluster) keeps its extractors, cached by their
    settings, which name the weights file but not its content: new weights saved over the same file give new feature
    keys (their digest is in them) but would be computed by the old model. Drop the cached extractors when the file's
    size or modification time changed since this process last looked (True: they were dropped)."""
    if not weights_path:
        return False
    try:
        st = os.stat(os.path.expanduser(weights_path))
    except OSError:  # no such file here: loading it says so
        return False
    stamp = (st.st_size, st.st_mtime_ns)
    if _weights_seen.setdefault(weights_path, stamp) == stamp:
        return False
    from ecgpipe.features import _cached_extractor

    _cached_extractor.cache_clear()
    _weights_seen[weights_path] = stamp
    return True
