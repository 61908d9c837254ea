"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM.

Raising ``KeyboardInterrupt`` wherever the signal lands is not safe here: landing inside a Dask callback, it is
swallowed and the run carries on. So from the start of ``run_pipeline`` (its checks of the corpus included) the
signals only set a flag, and the loops that take long check it and raise :class:`RunInterrupted`: those that wait for
a stage's tasks (``bookkeeping.wait_all``, twice a second) and those that go over every record (hashing the inputs,
checking each record's stored windows), once per record: at 300 000 records these take minutes, and a batch system
sends SIGKILL soon after its SIGTERM (SLURM: 30 s); during the plan's checks that would leave the run's lock and its
server behind. Inside the flow, the flow then ends as failed, ``run.json`` says ``"interrupted"``, the local Dask
cluster and the temporary Prefect server are shut down, and markers stay consistent (a unit's marker is written after
its data), so a rerun resumes; stopped before the flow (the checks of the corpus), the run exits having written
only the input digests it computed (``preflight.keep_digests_read``: the next run hashes the rest). A second Ctrl-C
stops at once.

Ctrl-C in a terminal sends SIGINT to the whole process group, the local cluster's worker processes included. Left
to Python's default, each worker dies with a ``KeyboardInterrupt`` while its nanny (in the run's process) still
expects it, and on a loaded machine the run's process then hung closing the cluster (the test of it failed 2 of 4
runs beside three CPU-bound processes). So the local cluster's workers ignore SIGINT (:func:`dask_setup`, a Dask worker preload): the run's
process decides, and closes its cluster as it does on SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal

from ecgpipe.errors import EcgpipeError


class RunInterrupted(EcgpipeError):
    """The run was stopped by a signal; a rerun resumes from what is done."""


class LockLost(RunInterrupted):
    """Another run took this run's output folder over (after a long stall of this one): it stops, and writes nothing
    more there, not even its run.json, which is now the other run's."""


_received: list[int] = []
_reasons: list[str] = []  # stops asked for by the run itself (its output folder's lock taken over)
_depth: list[int] = [0]  # interruptible() blocks entered and not left (run_pipeline's, the flow's inside it)


def stop_because(reason: str) -> None:
    """Ask the run to stop at the next check, saying ``reason`` (from any thread: the lock's heartbeat)."""
    _reasons.append(reason)


def forget_stops() -> None:
    """A new run in this process starts with no stop asked for (called before it takes its folder's lock)."""
    _reasons.clear()
    _received.clear()


def _on_signal(signum, frame):
    if _received and signum == signal.SIGINT:
        raise KeyboardInterrupt  # a second Ctrl-C: now
    _received.append(signum)


@contextlib.contextmanager
def interruptible():
    """While inside, SIGINT and SIGTERM ask the run to stop (see :func:`check`). Only the main thread can do this;
    elsewhere it is a no-op. Nested (the flow's block inside run_pipeline's), a signal received before the inner block
    still stops the run; the inner block installs the handlers again (whatever Prefect set up for its flow run)."""
    if not _depth[0]:
        _received.clear()  # (a lost lock, told by the lock's heartbeat, is kept: it may come before the flow starts)
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread
            pass
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def requested() -> bool:
    """Whether a stop was asked for, inside a run (outside :func:`interruptible`: never, whatever an earlier run in
    this process was told)."""
    return bool(_depth[0] and (_received or _reasons))


def check() -> None:
    """Raise :class:`RunInterrupted` if a stop was asked for (inside a run: see :func:`requested`)."""
    if not requested():
        return
    if _reasons:
        raise LockLost(_reasons[0])
    if _received:
        raise RunInterrupted(f"interrupted by {signal.Signals(_received[0]).name}; `ecgpipe run` again resumes "
                             f"from what is done")


def dask_setup(worker) -> None:
    """Dask worker preload (``preload=["ecgpipe.orchestration.interrupt"]``): the worker process ignores SIGINT; the
    run that started it stops it. Runs on the worker process's main thread, where its event loop runs."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread (a worker inside another process): leave it to that process
        pass


def ignores_ctrl_c() -> bool:
    """Whether this process ignores SIGINT (as the local cluster's workers do)."""
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN
