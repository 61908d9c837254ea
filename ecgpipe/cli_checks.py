"""What the command line checks before a command runs (options that cannot work together, an ``--out`` that is a
file) and what it advises after a run fails for a reason outside the pipeline (a full disk, a lost scheduler)."""

from __future__ import annotations

import errno
import json
import os
import sys


def out_is_a_file(args) -> str | None:
    """The error for an ``--out`` that is an existing file, not a folder (every command that writes takes one)."""
    out = getattr(args, "out", None)
    if not out or "://" in out:
        return None
    target = node = os.path.realpath(out)  # as the system resolves it (a link's '..' is its target's parent)
    while not os.path.exists(node) and os.path.dirname(node) != node:
        node = os.path.dirname(node)
    if os.path.isdir(node):
        return None
    if node == target:
        return f"--out {out}: a file, not a folder: choose another --out (nothing was written)"
    return f"--out {out}: {node} is a file, not a folder: choose another --out (nothing was written)"  # none below it


def options_that_do_nothing(args) -> str | None:
    """The error for options that would be ignored together: a user who gives them expects an effect."""
    if getattr(args, "scheduler", None) and getattr(args, "workers", None) is not None:
        return (f"--workers {args.workers} sizes the local Dask cluster ecgpipe starts; with --scheduler the "
                "scheduler's own workers run the tasks: drop --workers (start more workers on the cluster instead)")
    if getattr(args, "command", None) == "evaluate" and args.seed is not None and args.max_records is None:
        return "--seed seeds the sample --max-records draws; without --max-records every record is scored: drop --seed"
    return None


def note_a_pilot_from_a_file(args, cfg) -> None:
    """A pilot (``run.max_records``) set by the config file, not by ``--max-records``, is said before the run: a run's
    saved config.json keeps the ``--max-records`` it was run with, and reused as a config it would run a pilot again."""
    if cfg.run.max_records is not None and args.max_records is None:
        print(f"ecgpipe: note: {args.config} sets run.max_records = {cfg.run.max_records}: a pilot of at most that many "
              "records per database (a seeded sample); for every record, remove it from the file", file=sys.stderr)


def scheduler_lost(exc: BaseException) -> bool:
    """Whether a run stopped because its connection to the Dask scheduler was lost (distributed cancels every
    future "for reason: scheduler-connection-lost", or a comm to it closes)."""
    return "scheduler-connection-lost" in str(exc) or type(exc).__name__ == "CommClosedError"


def scheduler_unreachable(address: str, timeout_s: float = 2.0) -> bool:
    """Whether nothing answers at a Dask scheduler's address now (``tcp://host:port``, ``tls://...``): after a failed
    run, the sign that the scheduler itself went away, whatever error its loss surfaced as."""
    import socket

    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return False
    except (OSError, ValueError):
        return True


def scheduler_gone_advice(scheduler: str | None) -> str | None:
    """The line for a run with ``--scheduler`` whose scheduler no longer answers; None otherwise."""
    if scheduler and scheduler_unreachable(scheduler):
        return (f"the Dask scheduler {scheduler} went away during the run: start it and its workers again, then "
                "`ecgpipe run` again recomputes only what is missing")
    return None


def failure_advice(exc: BaseException, out: str, scheduler: str | None) -> str:
    """What to do after ``ecgpipe run`` stopped on an unexpected error: every case ends in a rerun that recomputes
    only what is missing, once its cause is fixed."""
    rerun = "`ecgpipe run` again recomputes only what is missing"
    where = exc.filename if isinstance(exc, OSError) and exc.filename else out  # /tmp may have filled, not OUT's disk
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk holding {where} is full: free space, then {rerun}"
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{where} cannot be written: fix its permissions or choose another --out"
    if scheduler and (scheduler_lost(exc) or scheduler_unreachable(scheduler)):
        return f"the Dask scheduler {scheduler} went away during the run: start it and its workers again, then {rerun}"
    run_json = os.path.join(out, "run.json")
    return ("see " + run_json + "; " if os.path.isfile(run_json) else "") + rerun


def earlier_report_note(out: str) -> str | None:
    """The line saying a run folder's report (and model) are an earlier, finished run's; None when it has none."""
    report = os.path.join(out, "report.json")
    if "://" in out or not os.path.isfile(report):
        return None
    import datetime

    when = datetime.datetime.fromtimestamp(os.path.getmtime(report)).strftime("%Y-%m-%d %H:%M")
    if (waiting := _artifact_digest(staged := os.path.join(out, "model.next.skops"))) and waiting == _report_digest(out):
        return (f"note: report.html/.md/.json in {out} are this run's (written {when}); its model waits as {staged}, "
                "which the next `ecgpipe run` there puts in place of model.skops (an earlier run's)")
    files = "report.html/.md/.json" + (" and model.skops" if os.path.isfile(os.path.join(out, "model.skops")) else "")
    return f"note: {files} in {out} are still those of an earlier run (written {when}), not this run's"


def warn_of_another_report(model) -> None:
    """Where a model is a run folder's model.skops whose report.json describes another artifact (a run stopped
    between writing its report and putting its model in place), say so on stderr: its numbers are not this model's."""
    folder = os.path.dirname(os.path.abspath(model.path))
    if os.path.basename(model.path) != "model.skops" or (wanted := _report_digest(folder)) in (None, model.digest):
        return
    waiting = _artifact_digest(staged := os.path.join(folder, "model.next.skops")) == wanted
    print(f"ecgpipe: warning: {os.path.join(folder, 'report.json')} describes another model (sha256 {wanted[:16]}...)"
          + (f": {staged}, which the next `ecgpipe run` there puts in place" if waiting else "")
          + "; its numbers are not this model's", file=sys.stderr)


def _report_digest(folder: str) -> str | None:
    try:
        with open(os.path.join(folder, "report.json")) as f:
            return json.load(f).get("model_digest")
    except (OSError, ValueError, AttributeError):
        return None


def _artifact_digest(path: str) -> str | None:
    """(``model_artifact.artifact_digest``, without importing the flow's tasks into predict and evaluate)"""
    from ecgpipe.model import content_digest

    try:
        return content_digest(path)
    except Exception:  # missing, truncated, not a zip archive
        return None


def run_json_time(out: str) -> int | None:
    """When ``out``'s run.json was last written (None: there is none)."""
    run_json = os.path.join(out, "run.json")
    return os.stat(run_json).st_mtime_ns if "://" not in out and os.path.isfile(run_json) else None


def where_a_stop_is_told(out: str, before: int | None, exc: BaseException | None = None) -> str:
    """Where a stopped run's counts are ("; see OUT/run.json"): its run.json, once the flow wrote it (since
    ``before``); a stop during the checks or while the Prefect server started writes none, and a run.json there is
    an earlier run's. Nothing for a run whose folder another run took over (its message says so; the run.json
    there is the other run's)."""
    from ecgpipe.orchestration.interrupt import LockLost

    run_json = out.rstrip("/") + "/run.json"
    if isinstance(exc, LockLost):
        return ""
    if "://" in out or run_json_time(out) not in (None, before):  # an object store's: not looked at
        return f"; see {run_json}"
    return "; this run wrote no run.json" + (f" ({run_json} is an earlier run's)" if before is not None else "")


def with_earlier_report_note(out: str, code: int, before: int | None = None) -> int:
    """After a run that did not finish: say that the report and model in ``out`` are an earlier run's, if any (they
    stay, beside this run's config.json and run.json), so nobody reads them as this run's. Said only when this run got
    going (run.json written since ``before``, its time when the run began): a run refused before it started (the
    folder locked by another, bad settings) changed nothing to warn about. Returns ``code``."""
    if run_json_time(out) not in (None, before) and (note := earlier_report_note(out)) is not None:
        print(note, file=sys.stderr)
    return code


def few_examples(report: dict, segments: int = 10, subjects: int = 2) -> str:
    """The classes of a finished run with under ``segments`` segments or ``subjects`` subjects ("vt 4 segments from 1
    patient"), which the console names: their recall and the patient-wise protocol's folds rest on almost nothing."""
    word = report.get("subject_word", "patient")
    few = []
    for c, n in report["class_counts"].items():
        k = report["subjects_per_class"].get(c, 0)
        if n < segments or k < subjects:
            few.append(f"{c} {n} segment{'s' * (n != 1)} from {k} {word}{'s' * (k != 1)}")
    return "; ".join(few)


def no_saved_run(location) -> str:
    """Why ``status --out OUT`` without --config has nothing to show (``location``: OUT)."""
    if location.exists(""):
        return f"{location.url} holds no run (no config.json); give --config"
    return f"{location.url} does not exist: no run was written there (a typo in --out?)"
