"""The one base class of every error ecgpipe raises on purpose.

An :class:`EcgpipeError` says what is wrong with which file, record, key or setting (``str(err)`` names it), so the
command line can print it as one line and stop, without a traceback. Subclasses keep a second, conventional base
(``ValueError`` for bad values, ``RuntimeError`` for unavailable things) so that callers catching those still work.
"""

from __future__ import annotations

import errno
import os
import re


class EcgpipeError(Exception):
    """Base class: a problem with a named file, record, key or setting."""


class PipelineError(EcgpipeError, ValueError):
    """The run cannot go on with these inputs (e.g. a class without any segment); the message says what to check."""


class StageFailed(EcgpipeError, RuntimeError):
    """Some units of a stage failed; the run stops before the stages that need them. Rerunning redoes only those."""


class StoreUnreachable(EcgpipeError, RuntimeError):
    """Workers of an existing cluster cannot see the run's folders at the same paths."""


class UnreadableFile(EcgpipeError, ValueError):
    """A file an earlier run wrote (e.g. ``OUT/run.json``) is corrupt; the message names it and how to replace it."""


class RecordError(EcgpipeError):
    """A record cannot be used. ``str(err)`` is ``"<record path>: <problem>"``."""

    def __init__(self, record_path: str | os.PathLike, problem: str):
        self.record_path = str(record_path)
        self.problem = problem
        super().__init__(f"{record_path}: {problem}")

    def __reduce__(self):  # keep both fields when the error crosses process boundaries (Dask, Prefect)
        return (RecordError, (self.record_path, self.problem))


# Errors of the code on one record's data, not of its surroundings (an odd signal's IndexError, a division by zero):
# the same record fails the same way again, so it fails alone and the others go on (a run's batch task, predict,
# evaluate); anything else may pass on a retry, or is the machine's
DETERMINISTIC_ERRORS = (ArithmeticError, LookupError, TypeError, AttributeError, AssertionError, NotImplementedError)
ONE_RECORD_ERRORS = (EcgpipeError, ValueError, *DETERMINISTIC_ERRORS)
# predict and evaluate, which have no retries: a disk's hiccup on one record fails that record alone too (a --resume
# predicts it again), not the command with a traceback
PREDICTION_RECORD_ERRORS = (*ONE_RECORD_ERRORS, OSError)


def one_record_error(err: BaseException, record: str) -> str:
    """One record's failure in words: an ``EcgpipeError`` names its file already; anything else gets the record and
    the error's type (an IndexError's bare 'index 5 is out of bounds' says neither)."""
    return str(err) if isinstance(err, EcgpipeError) else f"{record}: {type(err).__name__}: {err}"


# errors of the machine, not of a record: a network file system's hiccup, a stale handle, a timeout. A reader re-raises
# them as they are (the task's retries and the run's rule for transient errors apply) instead of failing the record
# for good as bad input; a missing or forbidden file (ENOENT, EACCES) is the record's problem
PASSING_OS_ERRNOS = frozenset({errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN, errno.EINTR, errno.ECONNRESET,
                               errno.ECONNABORTED, errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENOMEM})


# errors of the output's disk: full, over quota, read-only. Every record after would fail the same way, so a command
# stops on them (what it finished is kept) instead of failing the remaining records one by one
OUTPUT_STOPPING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def stops_the_command(exc: BaseException) -> bool:
    """Whether an error is the output disk's (``OUTPUT_STOPPING_ERRNOS``), not one record's."""
    return isinstance(exc, OSError) and exc.errno in OUTPUT_STOPPING_ERRNOS


def may_pass(exc: BaseException) -> bool:
    """Whether an error while reading a record says nothing of the record (``PASSING_OS_ERRNOS``)."""
    return isinstance(exc, OSError) and exc.errno in PASSING_OS_ERRNOS


def error_kind(message: str, record: str = "") -> str:
    """What kind of error ``message`` is, whichever record it names: the record's path taken out, numbers as #."""
    return re.sub(r"\d+", "#", message.replace(record, "<record>") if record else message)


def failure_kinds(skipped: list[dict], most: int = 3, rest: str = "in run.json") -> str:
    """Failed records grouped by their error (the record's own path taken out, numbers ignored), most frequent first,
    each with its count, its first message and one record (``skipped``: dicts with "record" and "error"; ``rest``:
    where the others are listed): a readable answer to "why did everything fail" (one odd record's error used to
    stand for all of them)."""
    kinds: dict[str, tuple[str, list[str]]] = {}  # kind (numbers as #) -> (its first message, the records)
    for s in skipped:
        message = s["error"].replace(s["record"], "<record>")
        kinds.setdefault(error_kind(message), (message, []))[1].append(s["record"])
    ranked = sorted(kinds.values(), key=lambda item: -len(item[1]))
    lines = [f"{len(paths)} x {message} (e.g. {paths[0]})" for message, paths in ranked[:most]]
    if len(ranked) > most:
        lines.append(f"{len(ranked) - most} other kind(s) of error, {rest}")
    return "; ".join(lines)
