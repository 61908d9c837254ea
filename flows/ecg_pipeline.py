"""The ecgpipe Prefect flow: records -> segments -> spectrograms -> CNN features -> cross-validated report.

    segments         1 task / batch    read + validate WFDB, resample, cut windows   ecgpipe/stages/segments.py
        │
    table            planned here,     stable per-class selection, stable rows       ecgpipe/stages/table.py
                     written by chunk tasks
        │
    spectrograms     1 task / chunk    STFT log power of chunk_size segments          ecgpipe/stages/spectrograms.py
        │
    features         1 task / chunk    images, ImageNet norm, backbone, pooled        ecgpipe/stages/features.py
        │
    classify         1 task / fold     every protocol of every sweep row, in parallel ecgpipe/stages/classification.py
        │
    recordings       1 task / batch    [recordings] score = true: every window of the  ecgpipe/stages/recording_grid.py
                     1 task / fold     recordings, endpoints called out of fold        ecgpipe/stages/recording_scores.py
        │
    report           flow process      report.json/.md/.html, model.skops             ecgpipe/report_build.py

A run whose every classifier reads the rhythm block alone (a simple peer) skips spectrograms and features.
Tasks run on a Dask cluster through prefect-dask's DaskTaskRunner and pass only store paths and chunk indices.
Incremental by construction: each step submits only the units its plan (``ecgpipe/plan.py``) finds not done. Arrays
are created and resized in the flow process before the tasks that fill them start; each task writes only whole
chunks it owns (Zarr loses data silently when two writers share a chunk). Every run writes ``OUT/run.json``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings

from prefect import flow, get_run_logger
from prefect.exceptions import TerminationSignal

from ecgpipe.config import PipelineConfig, config_from_dict
from ecgpipe.location import Location
from ecgpipe.lock import RunLock, output_lock, refuse_if_held
from ecgpipe.model import content_digest
from ecgpipe.orchestration import model_artifact, steps
from ecgpipe.orchestration.bookkeeping import RunLog
from ecgpipe.orchestration.cluster import (
    api_unreachable_from_workers,
    check_store_reachable,
    late_workers_checked,
    prefect_api,
    smallest_worker_memory,
    task_runner,
)
from ecgpipe.orchestration.interrupt import LockLost, RunInterrupted, check, forget_stops, interruptible, stop_because
from ecgpipe.orchestration.preflight import keep_digests_read, kernel_memory_problem, preflight
from ecgpipe.orchestration.tasks import FAULT_ENV  # noqa: F401  (the tests' fault hook, named where the flow is)
from ecgpipe.plan import forget_preflight
from ecgpipe.report import write_report
from ecgpipe.report_build import build_report, example_spectrograms, record_accounting
from ecgpipe.stages import spectrograms
from ecgpipe.store import Layout


@flow(name="ecgpipe", log_prints=True)
def ecg_pipeline(config: dict, data_dir: str | None, out_dir: str, strict: bool | None = None, download: bool = False) -> dict:
    out = Location(out_dir)
    log = RunLog(out)
    try:
        log.write("running")  # until it says how it ended: a run killed outright leaves no earlier run's "completed"
        with interruptible():  # Ctrl-C and SIGTERM stop the run at the next check, cleanly
            report = _pipeline(config_from_dict(config), data_dir, out, strict, download, log)
    except LockLost as exc:  # the folder is another run's now, its run.json too; unless none took it (a lock deleted)
        if out.local_root and RunLock(out.local_root).holder() is None:
            log.write("interrupted", error=str(exc))
        raise
    except (RunInterrupted, KeyboardInterrupt, TerminationSignal) as exc:  # (Prefect's, for a SIGTERM it caught)
        log.write("interrupted", error=str(exc) or "interrupted", **({"records": log.records} if log.records else {}))
        raise
    except BaseException as exc:
        log.write("failed", error=f"{type(exc).__name__}: {exc}", **({"records": log.records} if log.records else {}))
        raise
    log.write("completed", report=out.child("report.json"), records=report.get("record_accounting", {}))
    return report


def _pipeline(cfg: PipelineConfig, data_dir: str | None, out: Location, strict: bool | None, download: bool, log: RunLog) -> dict:
    run = steps.Run.start(cfg, data_dir, out, log, get_run_logger(), strict, download)

    records, skipped = steps.segment_records(run)
    if flat := [r.name for r in records if r.flat_windows]:  # used as labelled: the report's "Records with flat leads"
        run.logger.warning(f"segments: {len(flat)} record(s) have windows with a flat lead (lead off?), used with their "
                           f"label (e.g. {', '.join(flat[:3])})")
    if warned := [r.name for r in records if r.read_warnings]:  # each in the report's "Records read with warnings"
        run.logger.warning(f"segments: {len(warned)} record(s) read with warnings (e.g. {', '.join(warned[:3])}): see the report")
    absent = run.plan.absent
    log.records = record_accounting(records, skipped, len(records) + len(skipped) + len(absent), len(absent),
                                    len(run.plan.unlisted), cfg.run.max_records)
    table = steps.segment_table(run, records, skipped)
    if too_big := kernel_memory_problem(cfg, len(table), len(table.record_keys), smallest_worker_memory()):
        run.logger.warning(f"classify: {too_big}")  # before the CNN's hours (a warning: its rows may all be done)
    spec_array, spec_keys, spec_failed = steps.compute_spectrograms(run, table)
    extractors, placement = steps.compute_features(run, table, spec_array, spec_keys, spec_failed)
    rows, best, model, failed_rows = steps.classify(run, table, extractors)
    recordings = steps.score_recordings(run, records, rows, best)

    built = build_report(cfg, run.store, records, skipped, table, spectrograms.row_shape(cfg), rows, best, absent,
                         log.records, failed_rows, run.plan.unlisted)
    report = built.model_copy(update={
        "model": model.path if model else None,
        "recordings": recordings,
        "model_digest": content_digest(model.written) if model else None,
        "stage_seconds": {k: round(v, 2) for k, v in log.stage_seconds.items()},
        "wall_s": round(log.elapsed(), 2),
        "store": run.store,
        "spectrograms_array": Layout.data(spec_array) if run.plan.needs_cnn else None,
        "features_array": built.features_array if run.plan.needs_cnn else None,
        "feature_placement": placement,
        "feature_img_s": log.rate("features"),
        "provenance": {
            "dataset_key": table.key,
            "record_keys": table.record_keys,
            "record_files_sha256": {u.shown: u.files_sha256 for u in run.plan.records},
        },
    })
    doc = report.to_json()
    examples = example_spectrograms(run.store, spec_array, cfg) if run.plan.needs_cnn else None  # none computed
    check()  # not over another run's report, should this one have lost its folder's lock meanwhile
    model_artifact.note_staged_model(run, model)  # a stop between report and model: the next run puts it in place
    run.logger.info(f"report: {write_report(doc, out, examples)}")
    check()
    model_artifact.publish_model(run, model)  # after the report: a run that fails before it leaves the earlier pair as it was
    return doc


def run_pipeline(cfg: PipelineConfig, data_dir: str | None, out_dir: str, scheduler: str | None = None,
                 strict: bool | None = None, download: bool = False) -> dict:
    """Check the inputs, lock the output folder, then run the flow on a local Dask cluster (or ``scheduler``) with
    one Prefect API; returns the report. Ctrl-C and SIGTERM stop it cleanly from here on (the checks of a large
    corpus take minutes), before anything but the digests of the records read is kept, or at the next check of the flow."""
    forget_stops()  # a new run: no stop asked for yet (one run's lost lock must not stop the next in this process)
    with interruptible():
        if Location(str(out_dir)).local_root:  # a folder another run holds: refused before the checks read the corpus
            refuse_if_held(Location(str(out_dir)).local_root)
        try:
            units = preflight(cfg, data_dir, download, str(out_dir))  # bad settings and missing data fail here, before anything is created
            check()  # a signal after the last record's check: before the lock, the server and the cluster
        except LockLost:
            raise
        except RunInterrupted as exc:  # the digests read so far are kept: a job stopped here again starts where this one stopped
            raise RunInterrupted(f"{exc}{keep_digests_read(cfg, str(out_dir))}") from None
        try:
            return _run_checked(cfg, data_dir, out_dir, units, scheduler, strict, download)
        except TerminationSignal as exc:  # SIGTERM while Prefect's own handler was in place (its flow run starting)
            raise RunInterrupted("interrupted by SIGTERM; `ecgpipe run` again resumes from what is done") from exc
        finally:  # the preflight's units, unless the flow's plan took them (a run that stopped before): not kept
            forget_preflight(cfg, data_dir, out_dir)


def _run_checked(cfg: PipelineConfig, data_dir, out_dir, units, scheduler: str | None, strict: bool | None,
                 download: bool) -> dict:
    out = Location(str(out_dir))
    out.makedirs()
    import distributed  # noqa: F401  (its import sets up its loggers; quieten them afterwards)

    logging.getLogger("distributed").setLevel(logging.WARNING)  # cluster start/stop chatter hides the progress lines
    # one run per output folder (an object store's URL has none: it warns); a run whose lock another takes over stops
    with output_lock(out, on_lost=stop_because) as lock:
        if lock is not None:  # (an object store's folder has none: nothing written there is partial)
            out.remove_partial_writes()  # what a killed run or worker was writing; a run keeps none of it
            model_artifact.finish_interrupted_publish(out.local_root)  # the model of a report written just before a stop
        if scheduler:
            check_store_reachable(scheduler, out_dir, database_dirs=tuple(sorted({str(u.db_dir) for u in units})))
            if warning := api_unreachable_from_workers(scheduler, os.environ.get("PREFECT_API_URL")):
                warnings.warn(warning, UserWarning, stacklevel=1)  # the CLI prints it as one line
        with prefect_api() as api:
            if lock is not None and api.server_pid:
                lock.note_child(api.server_pid)  # a later run stops it if this process is killed before it can
            check()  # a signal while the server started: before the cluster
            runner = task_runner(cfg, out_dir, scheduler)
            # workers that join an existing cluster mid-run are checked as they join (those there were, above)
            with late_workers_checked(scheduler) if scheduler else contextlib.nullcontext():
                return ecg_pipeline.with_options(task_runner=runner)(
                    config=cfg.model_dump(mode="json"), data_dir=str(data_dir) if data_dir else None,
                    out_dir=str(out_dir), strict=strict, download=download,
                )
