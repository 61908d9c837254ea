"""Records whose worker process dies while computing them, left out by name instead of stopping the run.

A record that kills its worker (a recording too long for the worker's memory limit, a crash in native code on an
odd file) raises nothing a task could catch: Dask reschedules the task on another worker, which dies on the same
record, until Dask gives up on the task (``KilledWorker``), Prefect retries it, and the run ends as failed, blocked
on that record, on every rerun, with the user left to find which of a batch's records it was.

So a batch task leaves a small *attempt* file (``OUT/markers/attempts/<stage>/<unit>.json``) while it computes a
record and removes it once the record is done or has failed in Python. A file still there when a task starts that
record means an earlier attempt's process died on it. After ``DEATHS_ALLOWED`` such deaths the record fails alone, as
bad input does (named in the report with why), and the batch goes on with its other records. An attempt file left
by a run stopped as a whole (Ctrl-C, the run's process killed) would read as a death: the flow clears the stage's
attempt files before its tasks start, so deaths count within one run, and a rerun tries a failed record afresh.

Here, not in ``ecgpipe.markers``: the stages import that module, and a change to it would recompute every stage of
every stored run (``keys.code_version``). Nothing here decides what a stage computes.
"""

from __future__ import annotations

import json
import os
import signal

from ecgpipe.location import Location

DEATHS_ALLOWED = 2  # one death may be bad luck (the machine short of memory for a moment); two on one record is the record
DIE_ENV = "ECGPIPE_INJECT_DEATH"  # test hook: "<stage>:<db>/<record>" kills the worker process as it starts that record


class RecordAttempts:
    """The attempt files of one stage's records in one output location."""

    def __init__(self, out_dir: str | Location, stage: str):
        self.location = out_dir if isinstance(out_dir, Location) else Location(out_dir)
        self.stage = stage

    def _rel(self, unit: str) -> str:
        return f"markers/attempts/{self.stage}/{unit}.json"

    def begin(self, unit: str, shown: str) -> str | None:
        """Called before computing ``unit``: None to go on (its attempt file is written), or the problem to fail it
        with when its worker already died on it ``DEATHS_ALLOWED`` times in this run (its file is then removed)."""
        text = self.location.read_text(self._rel(unit))
        deaths = 0 if text is None else _deaths(text) + 1
        if deaths >= DEATHS_ALLOWED:
            self.end(unit)
            return (f"the worker process died {deaths} times while computing this record (killed for memory? "
                    "a crash in a native library?); left out. Give the workers more memory (a Dask worker's "
                    "--memory-limit) and run again to try it again, or leave it out of the database's records")
        self.location.write_text(self._rel(unit), json.dumps({"deaths": deaths}))
        injected_death(self.stage, shown)
        return None

    def end(self, unit: str) -> None:
        """The unit is done, or failed in Python: no death to count."""
        self.location.delete(self._rel(unit))

    def clear(self) -> None:
        """Forget every attempt of the stage (the flow, before the stage's tasks start): deaths count within a run."""
        folder = self.location._path(f"markers/attempts/{self.stage}")
        if self.location.fs.exists(folder):
            self.location.fs.rm(folder, recursive=True)


def _deaths(text: str) -> int:
    try:
        return int(json.loads(text)["deaths"])
    except (ValueError, KeyError, TypeError):  # a file cut short by the death itself: one death at least
        return 0


def injected_death(stage: str, shown: str) -> None:
    """Test hook: ``ECGPIPE_INJECT_DEATH=segments:cinc2017/A00005`` SIGKILLs the worker process each time it starts
    computing that record, as the kernel's out-of-memory killer or a segfault would."""
    if f"{stage}:{shown}" in os.environ.get(DIE_ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGKILL)
