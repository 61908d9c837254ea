"""The run's model artifact: the best row's classifier refitted on every segment (a task beside or after the folds),
staged beside the earlier run's and put in its place only with the run's report. ``run`` is the flow's
``steps.Run`` (not imported here: steps imports this module)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ecgpipe.input_digests import signal_fingerprint
from ecgpipe.keys import file_digest
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
    if marker and marker.get("key") == key and os.path.isfile(path) and marker.get("artifact_digest") == file_digest([path]):
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


def publish_model(run, job: ModelJob | None) -> None:
    """The fitted artifact takes the earlier run's place (an atomic rename), and its marker is written."""
    if job is None or job.future is None:  # reused: an artifact a failed run left waiting is of no use now
        if job is not None and os.path.isfile(job.staged):
            os.remove(job.staged)
        return
    os.replace(job.staged, job.path)
    run.plan.markers.write("model", "model", job.key, {"row": job.row.label, "artifact_digest": file_digest([job.path])})
    run.logger.info(f"model: {job.row.label} on {job.row.features or 'the rhythm block (no CNN)'} -> {job.path}")
