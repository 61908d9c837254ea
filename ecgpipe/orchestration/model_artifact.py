"""The run's model artifact: the best row's classifier refitted on every segment (a task beside or after the folds),
staged beside the earlier run's and put in its place only with the run's report. ``run`` is the flow's
``steps.Run`` (not imported here: steps imports this module)."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass

from ecgpipe.input_digests import signal_fingerprint
from ecgpipe.keys import file_digest
from ecgpipe.model import content_digest
from ecgpipe.orchestration import tasks
from ecgpipe.orchestration.bookkeeping import result_of
from ecgpipe.stages import classification
from ecgpipe.stages.classification import ComparisonRow
from ecgpipe.stages.table import SegmentTable

STAGED_MODEL = "model.next.skops"  # a fitted artifact waiting for its run's report


@dataclass
class ModelJob:
    """The run's model artifact OUT/model.skops being made: the best row's classifier refitted on all segments. It is
    written beside (``staged``) and takes the place of the earlier run's only with the run's report: a run that fails
    after the fit leaves the earlier report and its model together (the console says they are an earlier run's)."""

    row: ComparisonRow
    path: str
    key: str
    future: object | None  # None: the artifact on disk is up to date

    @property
    def staged(self) -> str:
        return os.path.join(os.path.dirname(self.path), STAGED_MODEL)

    @property
    def written(self) -> str:
        """Where the artifact of this run is now: staged until published."""
        return self.staged if self.future is not None else self.path


def submit_model(run, row: ComparisonRow, segment_table: SegmentTable) -> ModelJob | None:
    if not run.plan.out.local_root:
        run.logger.warning("model: the output folder is not local; no model artifact written")
        return None
    path = os.path.join(run.plan.out.local_root, "model.skops")
    key = classification.model_key(row)
    marker = run.plan.markers.read("model", "model")
    # reused only while the file is the one written (a truncated or edited artifact is refitted)
    # (0.21.0 and earlier named it by keys.file_digest, its name and bytes: still taken, or every folder refitted once)
    if marker and marker.get("key") == key and os.path.isfile(path) and marker.get("artifact_digest") in (
            artifact_digest(path), file_digest([path])):
        return ModelJob(row, path, key, None)
    # the recordings it learns from, by content: predict warns when it is given one of them
    used = set(segment_table.record_keys)
    recordings = {u.shown: run.plan.inputs.signal(u.db_dir, u.record) for u in run.plan.records if u.shown in used}
    run.plan.inputs.save()  # these signal-only digests too: the next refit reads no unchanged recording
    # and by their signal files alone: a copy renamed or relabelled in its header is still one of them
    signals = {u.shown: fp for u in run.plan.records if u.shown in used and (fp := signal_fingerprint(u.db_dir, u.record))}
    future = run.task(tasks.train_model).submit(run.store, row.features, row.data_key, row.cfg.model_dump_json(),
                                                row.extractor.weights, os.path.join(os.path.dirname(path), STAGED_MODEL),
                                                recordings, signals)
    return ModelJob(row, path, key, future)


def finish_model(run, job: ModelJob | None) -> ModelJob | None:
    if job is not None and job.future is not None:
        result_of(job.future, classification.STAGE, run.logger)
    return job


def note_staged_model(run, job: ModelJob | None) -> None:
    """Before the report: the marker names the staged artifact by its content, so that a run stopped between its
    report and ``publish_model`` (whose artifact ``finish_interrupted_publish`` puts in place) reuses it."""
    if job is not None and job.future is not None:
        run.plan.markers.write("model", "model", job.key, {"row": job.row.label, "artifact_digest": artifact_digest(job.staged)})


def publish_model(run, job: ModelJob | None) -> None:
    """The fitted artifact takes the earlier run's place (an atomic rename, on the disk before the run ends)."""
    if job is None or job.future is None:  # reused: an artifact a failed run left waiting is of no use now
        if job is not None and os.path.isfile(job.staged):
            os.remove(job.staged)
        return
    put_in_place(job.staged, job.path)
    run.logger.info(f"model: {job.row.label} on {job.row.features or 'the rhythm block (no CNN)'} -> {job.path}")


def finish_interrupted_publish(root: str) -> str | None:
    """A run stopped after writing its report and before putting its model in place leaves report.json naming the
    staged artifact's digest: that artifact is the report's, so it takes model.skops's place now (the run holding
    the folder calls this as it starts). The path put in place, or None."""
    staged, report = os.path.join(root, STAGED_MODEL), os.path.join(root, "report.json")
    if not (os.path.isfile(staged) and os.path.isfile(report)):
        return None
    try:
        with open(report) as f:
            wanted = json.load(f).get("model_digest")
    except (OSError, ValueError, AttributeError):
        return None
    if not wanted or artifact_digest(staged) != wanted:
        return None  # an artifact fitted by a run that failed before its report: the next run decides
    put_in_place(staged, path := os.path.join(root, "model.skops"))
    return path


def artifact_digest(path: str) -> str | None:
    """The artifact's content digest (its name aside: the staged file and the published one are the same), None for
    a missing or unreadable file."""
    try:
        return content_digest(path)
    except Exception:  # missing, truncated, not a zip archive: no artifact to reuse
        return None


def put_in_place(staged: str, path: str) -> None:
    """Rename the staged artifact over ``path``, its bytes and the rename on the disk first and after: no rerun
    refits an artifact whose marker it finds, so a power cut must not leave an empty one there."""
    descriptor = os.open(staged, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(staged, path)
    with contextlib.suppress(OSError):  # a system that cannot sync a folder: the rename is as durable as it makes it
        folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
