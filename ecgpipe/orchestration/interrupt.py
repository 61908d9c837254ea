"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM.

Raising ``KeyboardInterrupt`` wherever the signal lands is not safe here: landing inside a Dask callback, it is
swallowed and the run carries on. So during a flow run the signals only set a flag, and the loops that wait for a
stage's tasks (``bookkeeping.wait_all``) check it twice a second and raise :class:`RunInterrupted`. The flow then
ends as failed, ``run.json`` says ``"interrupted"``, the local Dask cluster and the temporary Prefect server are shut
down, and markers stay consistent (a unit's marker is written after its data), so a rerun resumes. A second Ctrl-C
stops at once.
"""

from __future__ import annotations

import contextlib
import signal

from ecgpipe.errors import EcgpipeError


class RunInterrupted(EcgpipeError):
    """The run was stopped by a signal; a rerun resumes from what is done."""


_received: list[int] = []


def _on_signal(signum, frame):
    if _received and signum == signal.SIGINT:
        raise KeyboardInterrupt  # a second Ctrl-C: now
    _received.append(signum)


@contextlib.contextmanager
def interruptible():
    """While inside, SIGINT and SIGTERM ask the run to stop (see :func:`check`). Only the main thread can do this;
    elsewhere it is a no-op."""
    _received.clear()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, _on_signal)
        except ValueError:  # not the main thread
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def requested() -> bool:
    return bool(_received)


def check() -> None:
    """Raise :class:`RunInterrupted` if a stop was asked for."""
    if _received:
        raise RunInterrupted(f"interrupted by {signal.Signals(_received[0]).name}; `ecgpipe run` again resumes "
                             f"from what is done")
