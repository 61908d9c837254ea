"""Where a run's tasks execute and whom they report to: the Dask cluster (a local one, or an existing scheduler),
one Prefect API for every process of the run, and GPU placement of feature tasks."""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass

import dask

from ecgpipe.config import PipelineConfig
from ecgpipe.errors import StoreUnreachable
from ecgpipe.location import Location


def cluster_client():
    """The Dask client of this flow run's task runner (None outside a flow run on Dask)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return getattr(ctx.task_runner, "_client", None) if ctx else None


def gpu_workers_in_cluster() -> int:
    """Number of workers of this flow run's Dask cluster that advertise a ``GPU`` resource."""
    client = cluster_client()
    return 0 if client is None else len(gpu_workers(client))


def task_slots(local_workers: int) -> int:
    """How many tasks this flow run's Dask cluster runs at once (its workers' threads), for stages that cut their
    work into a few tasks per thread; ``local_workers`` (``run.n_workers``, what a local cluster starts with) while
    none is known. An existing cluster (``--scheduler``) of 64 workers got the local cluster's 2 x 4 table tasks."""
    client = cluster_client()
    try:
        workers = client.scheduler_info(n_workers=-1).get("workers", {}) if client is not None else {}
    except Exception:  # a scheduler gone: the stage's own wait says so
        workers = {}
    return max(local_workers, sum(int(w.get("nthreads") or 1) for w in workers.values()))


def smallest_worker_memory() -> int | None:
    """The lowest memory limit among this flow run's Dask workers (bytes), None where none has one (or no cluster)."""
    client = cluster_client()
    try:
        workers = client.scheduler_info(n_workers=-1).get("workers", {}) if client is not None else {}
    except Exception:
        return None
    limits = [int(w["memory_limit"]) for w in workers.values() if w.get("memory_limit")]
    return min(limits) if limits else None


def gpu_workers(client) -> list[str]:
    """The workers of ``client``'s cluster that advertise a ``GPU`` resource (``dask worker --resources GPU=1``)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})  # {} once the scheduler is gone
    return [a for a, w in workers.items() if (w.get("resources") or {}).get("GPU", 0) > 0]


def scheduler_gone() -> bool:
    """Whether this flow run's Dask client has lost its scheduler (killed, or its machine gone): every task then
    ends cancelled, which a stage must not take for failures of its own units."""
    client = cluster_client()
    return client is not None and client.status != "running"


def feature_placement(n_gpu_workers: int):
    """Feature tasks go to GPU workers when the cluster has any; otherwise anywhere. Dask would wait forever for a
    resource no worker has, so the annotation is only added when a GPU worker exists."""
    if n_gpu_workers:
        return dask.annotate(resources={"GPU": 1})
    return contextlib.nullcontext()


@dataclass(frozen=True)
class PrefectApi:
    url: str
    server_pid: int | None  # the temporary server this run started (None: a configured server)


def _detached_server_class():
    """Prefect's temporary server, started in a session of its own: a Ctrl-C sent to the terminal's process group
    then reaches the run (which stops cleanly and records how it ended) but not the server it reports to. The
    server still stops when the run's process exits; if that process is killed outright, the next run on the same
    output folder stops it (``ecgpipe.lock``). The command is Prefect 3.8's own (prefect is pinned)."""
    import subprocess
    import sys

    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class DetachedASGIServer(SubprocessASGIServer):
        def _run_uvicorn_command(self):
            env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
            return subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "error", "--lifespan", "on"],
                env={**os.environ, **env, **get_current_settings().to_environment_variables(exclude_unset=True)},
                start_new_session=True,
            )

    return DetachedASGIServer


LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url if "://" in url else f"tcp://{url}").hostname or ""


def api_unreachable_from_workers(scheduler: str, api_url: str | None) -> str:
    """A warning when a run's Dask scheduler is on another machine but its Prefect API on this machine's loopback
    (``PREFECT_API_URL`` of 127.0.0.1, or none: ecgpipe's temporary server listens there): the task runner hands the
    client's Prefect settings to every worker, whose task runs would report to their own loopback. '' otherwise."""
    if _host(scheduler).startswith(LOOPBACK):
        return ""
    api = api_url or "http://127.0.0.1 (the temporary Prefect server this run starts)"
    if not _host(api).startswith(LOOPBACK):
        return ""
    return (f"the Dask scheduler {scheduler} takes workers from other machines, but the Prefect API is on this "
            f"machine's loopback ({api}): those workers cannot reach it to report their task runs. Start a Prefect server they can "
            "reach (`prefect server start --host 0.0.0.0`, behind TLS and PREFECT_SERVER_API_AUTH_STRING) and set "
            "PREFECT_API_URL=http://<this host>:4200/api before the run (deploy/README.md)")


@contextlib.contextmanager
def prefect_api():
    """Make sure every process of the run talks to ONE Prefect API.

    Without a configured server, Prefect starts a temporary one per process; with Dask worker processes that means one
    server each, all on one SQLite file (slow, and flaky). So start one here and export its URL before the cluster's
    workers are spawned (they inherit the environment).
    """
    if os.environ.get("PREFECT_API_URL"):
        yield PrefectApi(os.environ["PREFECT_API_URL"], None)
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Prefect's own temporary server (as it would start itself, but detached from the terminal's Ctrl-C); it stops
    # at interpreter exit, after Prefect has flushed its log and event queues to it.
    server = _detached_server_class()()
    server.start(timeout=int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ["ECGPIPE_TEMPORARY_PREFECT_SERVER"] = "1"  # its UI links die with it (ecgpipe.orchestration.console)
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield PrefectApi(server.api_url, server.server_process.pid if server.server_process else None)
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        os.environ.pop("ECGPIPE_TEMPORARY_PREFECT_SERVER", None)


def _read_token(folder: str, name: str) -> str:
    try:
        return Location(folder).read_text(name) or "<FileNotFoundError: no token>"
    except Exception as exc:
        return f"<{type(exc).__name__}: {exc}>"


def _records_digest(folder: str) -> str:
    """sha256 of a database folder's RECORDS file: every worker must read the same one where the run reads it. A
    folder without one (a labels-CSV dataset, records listed in the config) by the names in it instead: "no RECORDS"
    on a worker that cannot see the folder at all would otherwise match "no RECORDS" here."""
    import hashlib

    try:
        location = Location(folder)
        try:
            with location.fs.open(f"{location.root}/RECORDS", "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()
        except FileNotFoundError:
            names = sorted(name.rsplit("/", 1)[-1] for name in location.fs.ls(location.root, detail=False))
            return "listing " + hashlib.sha256("\n".join(names).encode()).hexdigest()
    except Exception as exc:
        return f"<{type(exc).__name__}: {exc}>"


# how long a run on an existing cluster waits to reach its scheduler, and then for its first worker
CLUSTER_WAIT_S = float(os.environ.get("ECGPIPE_CLUSTER_WAIT_S", "60"))


def check_store_reachable(scheduler: str, *folders: str | None, database_dirs: tuple[str, ...] = (),
                          code_of: tuple[str, ...] | None = None) -> None:
    """Fail early, with the workers named, when a worker of an existing cluster runs other ecgpipe code than this
    process (``worker_code``: a long-lived worker keeps what it imported) or cannot see a folder of the run.

    Tasks exchange paths, not arrays, so every worker must see the output folder (and the data) at the same path.
    A token is written into each output folder here and read back by every worker; the databases' folders are only
    read (they may be read-only, and a run never writes into its input): every worker must read the same RECORDS
    file in each.
    """
    import uuid

    from distributed import Client

    problems = []
    try:
        client = Client(scheduler, timeout=CLUSTER_WAIT_S)
    except OSError as exc:  # no scheduler there (a timeout is an OSError too)
        raise StoreUnreachable(f"the Dask scheduler at {scheduler} cannot be reached ({exc}): start it (`dask scheduler`) "
                               "and its workers, or run without --scheduler for a local cluster") from None
    with client:
        try:  # with no worker every check below passes vacuously and the run would wait for ever
            client.wait_for_workers(1, timeout=CLUSTER_WAIT_S)
        except TimeoutError:
            raise StoreUnreachable(f"the Dask cluster at {scheduler} has no worker (waited {CLUSTER_WAIT_S:g} s): start "
                                   f"one, `dask worker {scheduler}`, then run again") from None
        if stale := _workers_of_other_code(client, code_of):  # their results would be stored under this code's keys
            raise StoreUnreachable(
                f"workers of the cluster at {scheduler} do not run this ecgpipe's code: {'; '.join(stale)}. Restart them "
                "(`dask worker` again, or `Client(...).restart()`) with the same ecgpipe as this run's")
        for folder in folders:
            if not folder:
                continue
            location = Location(folder)
            location.makedirs()
            name, token = f".ecgpipe-reachable-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
            location.write_text(name, token)
            try:
                seen = client.run(_read_token, location.url, name)
            finally:
                location.delete(name)
            problems += [f"{worker} cannot see {location.url} ({got if got.startswith('<') else 'different content'})"
                         for worker, got in seen.items() if got != token]
        for folder in database_dirs:
            url, here = Location(folder).url, _records_digest(folder)
            seen = client.run(_records_digest, url)
            problems += [f"{worker} cannot see the data folder {url} ({got if got.startswith('<') else 'other files there' if got.startswith('listing') else 'another RECORDS there'})"
                         for worker, got in seen.items() if got != here or got.startswith("<")]
    if problems:
        raise StoreUnreachable(
            "workers of the cluster at " + scheduler + " do not share this run's folders: " + "; ".join(problems)
            + ". Mount the data and output folders at the same path on every worker (shared file system)."
        )


@contextlib.contextmanager
def late_workers_checked(scheduler: str):
    """For the run's life, every worker that joins the cluster at ``scheduler`` compares its ecgpipe code with the
    run's as it joins (``worker_code.CodeCheck``: one of other code leaves); ``check_store_reachable`` checked those
    there before. The check is the run's own (a name of its own) and goes with it."""
    import uuid

    from distributed import Client

    from ecgpipe.orchestration.worker_code import CodeCheck, installed_code

    name = f"ecgpipe-code-check-{uuid.uuid4().hex[:8]}"
    with Client(scheduler, timeout=CLUSTER_WAIT_S) as client:
        client.register_plugin(CodeCheck(installed_code(), name))
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # the scheduler gone: nothing left to unregister from
                client.unregister_worker_plugin(name)


def _workers_of_other_code(client, roots: tuple[str, ...] | None = None) -> list[str]:
    """A line for each worker whose ecgpipe code (``roots`` and their imports; default a run's tasks) is not this
    process's (``worker_code``)."""
    from ecgpipe.orchestration.worker_code import WORKER_MODULE, installed_code, worker_code

    roots = roots or (WORKER_MODULE,)
    here = installed_code(roots)
    try:
        seen = client.run(worker_code, roots)
    except Exception as exc:  # no ecgpipe there at all, or another one without this check
        return [f"a worker runs no ecgpipe of this version ({type(exc).__name__}: {exc})"]
    return [f"{worker} runs {got if got.startswith('<') else 'other ecgpipe code (another version or checkout)'}"
            for worker, got in seen.items() if got != here]


def task_runner(cfg: PipelineConfig, out_dir: str, scheduler: str | None = None):
    from prefect_dask import DaskTaskRunner

    if scheduler:
        return DaskTaskRunner(address=scheduler)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": cfg.run.n_workers,
            "threads_per_worker": cfg.run.threads_per_worker,
            "processes": True,
            # on this machine only, any free port (None still binds 8787); the run prints where
            "dashboard_address": "127.0.0.1:0",
            # Dask's spill/scratch space: inside a local output folder, else the machine's temporary folder
            "local_directory": os.path.join(Location(out_dir).local_root or tempfile.gettempdir(), ".dask"),
            # Ctrl-C reaches the workers too; they ignore it and the run's process stops them (orchestration.interrupt)
            "preload": ["ecgpipe.orchestration.interrupt"],
        },
    )
