"""A console a person can read: one line per error (tracebacks only with ``--verbose``) and no per-task lines
("Task run ... Completed()": 148 of 237 lines of a default run), in the flow process and in every Dask worker.
Prefect's API and its logs keep everything; only the console handlers change."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

QUIET_ENV = "ECGPIPE_QUIET_CONSOLE"
NO_BAR_ENV = "ECGPIPE_NO_BAR"  # set (or not a terminal): progress as log lines only
PROGRESS_RECORD = "ecgpipe_progress"  # attribute of a log record that is a progress line
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
    """Drops Prefect's per-task lines: the flow's own lines report progress and every failure. While a live bar shows a
    stage's progress (a terminal), the flow's progress lines stay out of the console too (Prefect's API keeps them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("prefect.task_runs"):
            return False
        if _bar_showing and getattr(record, PROGRESS_RECORD, False):
            return False
        message = record.getMessage()
        if message.startswith("Starting temporary server on ") and "\n" in message:  # its first line is the news
            record.msg, record.args = message.split("\n", 1)[0], ()  # (the rest: a link to Prefect's server docs)
        # the UI link of a temporary Prefect server is dead once the run ends: shown only for a configured server
        return not (os.environ.get(EPHEMERAL_ENV) == "1" and message.startswith("View at "))


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


_bar_showing = False


@contextlib.contextmanager
def stage_bar(stage: str, total: int):
    """On a terminal, a live bar for a stage's tasks (rich: done/total, rate, elapsed, time left), with the
    console's log lines printed above it; yields a function to call as each task finishes. Elsewhere (CI, a log
    file, ``ECGPIPE_NO_BAR=1``) it yields a no-op and the periodic progress lines carry the same numbers."""
    global _bar_showing
    if total == 0 or os.environ.get(NO_BAR_ENV) or not sys.stderr.isatty() or _bar_showing:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                        TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=Console(stderr=True))
    # Prefect's console handlers print through the bar's console while it shows, so lines appear above the bar
    handlers = [h for h in _console_handlers() if hasattr(h, "console")]
    saved = [h.console for h in handlers]
    task = progress.add_task(stage, total=total)
    try:
        for h in handlers:
            h.console = progress.console
        _bar_showing = True
        with progress:
            yield lambda: progress.advance(task)
    finally:
        _bar_showing = False
        for h, console in zip(handlers, saved):
            h.console = console


def _console_handlers() -> list[logging.Handler]:
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    return list({id(h): h for lg in loggers for h in lg.handlers
                 if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)}.values())

