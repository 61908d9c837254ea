"""A console a person can read: one line per error (tracebacks only with ``--verbose``) and no per-task lines
("Task run ... Completed()": 148 of 237 lines of a default run), in the flow process and in every Dask worker.
Prefect's API and its logs keep everything; only the console handlers change."""

from __future__ import annotations

import logging
import os

QUIET_ENV = "ECGPIPE_QUIET_CONSOLE"
EPHEMERAL_ENV = "ECGPIPE_TEMPORARY_PREFECT_SERVER"  # set while the run reports to a server it started itself


class WithoutTraceback(logging.Formatter):
    """Formats a record as ``inner`` does, without its traceback."""

    def __init__(self, inner: logging.Formatter | None):
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved


class NoTaskLines(logging.Filter):
    """Drops Prefect's per-task lines: the flow's own lines report progress and every failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("prefect.task_runs"):
            return False
        # the UI link of a temporary Prefect server is dead once the run ends: shown only for a configured server
        return not (os.environ.get(EPHEMERAL_ENV) == "1" and record.getMessage().startswith("View at "))


def quiet_console() -> None:
    """Adjust this process's console handlers (setting Prefect's logging up first, as it would at its first run);
    worker processes inherit the request through the environment (``quiet_this_worker``)."""
    from prefect.logging.configuration import setup_logging

    setup_logging()
    os.environ[QUIET_ENV] = "1"
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            if not isinstance(handler.formatter, WithoutTraceback):
                handler.setFormatter(WithoutTraceback(handler.formatter))
                handler.addFilter(NoTaskLines())


_quieted = False


def quiet_this_worker() -> None:
    """Called by every task: the first task a Dask worker runs quiets that worker's console (when the CLI asked)."""
    global _quieted
    if not _quieted and os.environ.get(QUIET_ENV) == "1":
        quiet_console()
        _quieted = True
