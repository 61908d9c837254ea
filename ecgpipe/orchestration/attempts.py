"""Records whose worker process dies while computing them, left out by name instead of stopping the run.

A record that kills its worker (a recording too long for the worker's memory limit, a crash in native code on an
odd file) raises nothing a task could catch: Dask reschedules the task on another worker, which dies on the same
record, until Dask gives up on the task (``KilledWorker``), Prefect retries it, and the run ends as failed, blocked
on that record, on every rerun, with the user left to find which of a batch's records it was.

So a batch task leaves a small *attempt* file (``OUT/markers/attempts/<stage>/<unit>.json``) while it computes a
record and removes it once the record is done or has failed in Python. A file still there when a task starts that
record means an earlier attempt's process died on it. After ``DEATHS_ALLOWED`` such deaths the record fails alone, as
bad input does (named in the report with why; its file stays, marked, so that a retry of its batch in the same run
does not try it again), and the batch goes on with its other records. A death counts only where the record was
computed alone in its process: in a worker of several threads the others' records die with the culprit, so a
record that died in company is tried again alone (the process's other tasks wait) before a death is held against it.
An attempt file left by a run stopped as a whole (Ctrl-C, the run's process killed) would read as a death: the flow
clears the stage's attempt files before its tasks start, so deaths count within one run, and a rerun tries a failed
record afresh.

A worker that ends with its whole job (a batch system's time limit or preemption, a spot instance reclaimed, a node
lost) is no death of the record's either, but its attempt file looks the same, and a worker's own SIGTERM cannot
tell: the nanny's memory limit ends a worker with one too. What tells is the nanny (``dask worker`` runs one per
worker process): it outlives a worker it ends or that crashes, and restarts it; it ends with its job. So an attempt
file names its worker's nanny, and the next attempt counts the death only when that nanny still answers
(``_nanny_gone``: a TCP connection to its address, for up to ``NANNY_GONE_S`` seconds). A worker without a nanny
(``--no-nanny``, an in-process cluster) counts every death, as before.

Here, not in ``ecgpipe.markers``: the stages import that module, and a change to it would recompute every stage of
every stored run (``keys.code_version``). Nothing here decides what a stage computes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

from ecgpipe.location import Location

DEATHS_ALLOWED = 2  # one death may be bad luck (the machine short of memory for a moment); two on one record is the record
# how long an earlier attempt's nanny may take to stop answering before its worker's end counts as a death: a job's
# nanny stops listening within a second of its SIGTERM (measured, distributed 2026.8; longer on a loaded node, where
# it first tears its plugins down), a nanny that restarts its worker never does. Waited once per real death only
NANNY_GONE_S = 10.0
# a job ending on a record is no proof against it (a preemption), but a record that ends three is left out: a batch
# system's memory limit ends the whole job (PBS, LSF, SLURM's OverMemoryKill; Kubernetes' OOM kill of a whole
# container group), and a nanny its workers cannot reach (a firewall) looks gone; Dask itself gives up on a task
# after three such ends (``allowed-failures``). Which of a job's records ended it cannot be told (every worker
# process of the job ends): a record in flight beside the culprit three times over is left out with it
JOB_ENDS_ALLOWED = 3
DIE_ENV = "ECGPIPE_INJECT_DEATH"  # test hook: "<stage>:<db>/<record>" kills the worker process as it starts that record
PREEMPT_ENV = "ECGPIPE_INJECT_PREEMPTION"  # test hook: ... ends the worker's whole job (its nanny too) as it starts it


class _OneOrMany:
    """This process's records in flight: many at once, or one alone (the others wait: a death then is its own)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._many = 0
        self._alone = False

    def acquire(self, alone: bool) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._alone)
            if alone:
                self._alone = True
                self._cond.wait_for(lambda: self._many == 0)
            else:
                self._many += 1

    def release(self, alone: bool) -> None:
        with self._cond:
            if alone:
                self._alone = False
            else:
                self._many -= 1
            self._cond.notify_all()


_IN_FLIGHT = _OneOrMany()


def _my_nanny() -> str | None:
    """The address of this worker process's nanny (None: not a Dask worker, or one without a nanny)."""
    try:
        from distributed import get_worker

        return get_worker().nanny or None
    except (ImportError, ValueError, AttributeError):
        return None


def _nanny_gone(address: str | None, wait_s: float | None = None) -> bool:
    """Whether the nanny at ``address`` (an earlier attempt's) no longer answers within ``wait_s``: its worker ended
    with its job, not by the record. False for no nanny, this process's own, or an address that is not TCP."""
    if not address or address == _my_nanny():
        return False
    try:
        from distributed.comm import get_address_host_port

        host, port = get_address_host_port(address)
    except (ImportError, ValueError):
        return False
    wait_s = NANNY_GONE_S if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    while True:
        try:  # (a nanny logs each connection closed before its handshake: a few, once per death)
            socket.create_connection((host, port), timeout=min(2.0, wait_s)).close()
        except OSError:  # refused (its process is gone) or no answer (its node is gone)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(1.5, wait_s))


def _one_thread() -> bool:
    """Whether this process computes one task at a time (a Dask worker of one thread; not a worker: the caller's)."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads == 1
    except (ImportError, ValueError, AttributeError):
        return True


class RecordAttempts:
    """The attempt files of one stage's records in one output location, for one batch task."""

    def __init__(self, out_dir: str | Location, stage: str):
        self.location = out_dir if isinstance(out_dir, Location) else Location(out_dir)
        self.stage = stage
        self._held: dict[str, bool] = {}  # unit -> computed alone (this task's records in flight)

    def _rel(self, unit: str) -> str:
        return f"markers/attempts/{self.stage}/{unit}.json"

    def begin(self, unit: str, shown: str) -> str | None:
        """Called before computing ``unit``: None to go on (its attempt file is written; ``end`` must follow), or the
        problem to fail it with when its worker already died on it ``DEATHS_ALLOWED`` times in this run (or its
        worker's job ended ``JOB_ENDS_ALLOWED`` times)."""
        text = self.location.read_text(self._rel(unit))
        earlier = _attempt(text) if text is not None else None
        deaths, ends, job_ended = (0, 0, False) if earlier is None else (earlier["deaths"], earlier["ends"], False)
        if earlier is not None and not earlier["failed"]:  # the earlier attempt's process ended while computing it
            if _nanny_gone(earlier["nanny"]):  # with its job (preempted, its time limit, its node lost): apart
                ends, job_ended = ends + 1, True
            elif earlier["alone"]:  # its own death (one in company is no one's: tried again alone)
                deaths += 1
        if earlier is not None and (earlier["failed"] or deaths >= DEATHS_ALLOWED or ends >= JOB_ENDS_ALLOWED):
            self.location.write_text(self._rel(unit), json.dumps({"deaths": deaths, "ends": ends, "alone": True, "failed": True}))
            return _left_out(deaths, ends)
        # alone: where a death can be its own (one thread), or after one in company (the others wait meanwhile)
        alone = _one_thread() or (earlier is not None and not job_ended)
        if not _one_thread():
            _IN_FLIGHT.acquire(alone)
        self._held[unit] = alone
        try:
            self.location.write_text(self._rel(unit), json.dumps({"deaths": deaths, "ends": ends, "alone": alone,
                                                                  "failed": False, "nanny": _my_nanny()}))
        except BaseException:  # no attempt begun: nothing for ``end`` to release
            self._held.pop(unit)
            if not _one_thread():
                _IN_FLIGHT.release(alone)
            raise
        injected_death(self.stage, shown)
        return None

    def end(self, unit: str) -> None:
        """The unit is done, or failed in Python: no death to count."""
        alone = self._held.pop(unit)
        try:
            self.location.delete(self._rel(unit))
        finally:
            if not _one_thread():
                _IN_FLIGHT.release(alone)

    def clear(self) -> None:
        """Forget every attempt of the stage (the flow, before the stage's tasks start): deaths count within a run."""
        folder = self.location._path(f"markers/attempts/{self.stage}")
        if self.location.fs.exists(folder):
            self.location.fs.rm(folder, recursive=True)


def _attempt(text: str) -> dict:
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise TypeError("not an attempt")
        nanny = doc.get("nanny")
        return {"deaths": int(doc["deaths"]), "ends": int(doc.get("ends", 0)), "alone": bool(doc.get("alone", True)),
                "failed": bool(doc.get("failed")), "nanny": nanny if isinstance(nanny, str) else None}
    except (ValueError, KeyError, TypeError):  # a file cut short by the death itself: a death, in company or not
        return {"deaths": 0, "ends": 0, "alone": False, "failed": False, "nanny": None}


def _left_out(deaths: int, ends: int) -> str:
    """Why a record whose worker died on it, or whose worker's job ended, too often is left out."""
    if ends >= JOB_ENDS_ALLOWED:  # the nanny gone each time: preempted, or a limit that ends the whole job
        return (f"the worker's whole job ended {ends} times while computing this record (preempted each time, or a "
                "limit that ends the whole job: a batch system's memory limit, SLURM's OverMemoryKill, a Kubernetes "
                "eviction?); left out. Run again to try it again, with more memory per job if that is the cause")
    return (f"the worker process died {deaths} times while computing this record alone (killed for memory? "
            "a crash in a native library?); left out. Give the workers more memory (a Dask worker's "
            "--memory-limit) and run again to try it again, or leave it out of the database's records")


def injected_death(stage: str, shown: str) -> None:
    """Test hook: ``ECGPIPE_INJECT_DEATH=segments:cinc2017/A00005`` SIGKILLs the worker process each time it starts
    computing that record, as the kernel's out-of-memory killer or a segfault would."""
    if f"{stage}:{shown}" in os.environ.get(DIE_ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)
    if f"{stage}:{shown}" in os.environ.get(PREEMPT_ENV, "").split(","):
        # as a batch system ends a job at its time limit or to preempt it: SIGTERM to every process of the job (a
        # `dask worker` started in a session of its own: its nanny and this worker process)
        os.killpg(os.getpgid(0), signal.SIGTERM)
        time.sleep(60)  # ended by the signal meanwhile
