"""The one base class of every error ecgpipe raises on purpose.

An :class:`EcgpipeError` says what is wrong with which file, record, key or setting (``str(err)`` names it), so the
command line can print it as one line and stop, without a traceback. Subclasses keep a second, conventional base
(``ValueError`` for bad values, ``RuntimeError`` for unavailable things) so that callers catching those still work.
"""

from __future__ import annotations

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


def failure_kinds(skipped: list[dict], most: int = 3, rest: str = "in run.json") -> str:
    """Failed records grouped by their error (the record's own path taken out, numbers ignored), most frequent first,
    each with its count, its first message and one record (``skipped``: dicts with "record" and "error"; ``rest``:
    where the others are listed): a readable answer to "why did everything fail" (one odd record's error used to
    stand for all of them)."""
    kinds: dict[str, tuple[str, list[str]]] = {}  # kind (numbers as #) -> (its first message, the records)
    for s in skipped:
        message = s["error"].replace(s["record"], "<record>")
        kinds.setdefault(re.sub(r"\d+", "#", message), (message, []))[1].append(s["record"])
    ranked = sorted(kinds.values(), key=lambda item: -len(item[1]))
    lines = [f"{len(paths)} x {message} (e.g. {paths[0]})" for message, paths in ranked[:most]]
    if len(ranked) > most:
        lines.append(f"{len(ranked) - most} other kind(s) of error, {rest}")
    return "; ".join(lines)
