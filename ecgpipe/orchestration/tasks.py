"""Prefect tasks: thin wrappers around the stages' unit functions. A task adds retries of transient errors, the
fault-injection hook of the tests, and the unit's marker (written after its data, by the task that owns the unit).

Tasks run on Dask workers and exchange store paths, chunk indices and configs as JSON, never the signals, images or
features: a record's summary (its window starts and classes, small integer arrays) is the largest thing returned.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from ecgpipe.config import PipelineConfig
from ecgpipe.errors import DETERMINISTIC_ERRORS, EcgpipeError, stops_the_command
from ecgpipe.keys import array_digest
from ecgpipe.markers import Markers
from ecgpipe.orchestration.attempts import RecordAttempts
from ecgpipe.orchestration.console import quiet_this_worker
from ecgpipe.orchestration.worker_code import drop_extractors_of_changed_weights, refuse_if_stale
from ecgpipe.plan import chunk_unit, write_fold
from ecgpipe.stages import classification, features, recording_grid, recording_scores, segments, spectrograms, table
from ecgpipe.stages.classification import FoldResult
from ecgpipe.stages.recording_grid import GridUnit
from ecgpipe.stages.recording_scores import FoldScores, GridRecord
from ecgpipe.stages.segments import RecordSummary, RecordUnit
from ecgpipe.store import Layout, in_store

PERMANENT_ERRORS = (EcgpipeError, ValueError, FileNotFoundError)
# a full disk, a read-only or forbidden folder, an exhausted quota: retrying in seconds cannot help
PERMANENT_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
FAULT_ENV = "ECGPIPE_INJECT_FAILURE"


def is_transient(exc: BaseException) -> bool:
    """Whether an error may pass if the task is retried (an I/O hiccup, a lost worker); bad input never does."""
    if isinstance(exc, PERMANENT_ERRORS):
        return False
    if isinstance(exc, OSError) and exc.errno in PERMANENT_OS_ERRORS:
        return False
    return isinstance(exc, Exception)


def _retry_transient(task, task_run, state) -> bool:
    """Prefect's retry condition: retry only transient errors."""
    try:
        state.result()
    except BaseException as exc:
        return is_transient(exc)
    return False


# The store's markers are the source of truth for what was computed; Prefect's own result cache is not used.
stage_task = task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_retry_transient)


def _config(config_json: str) -> PipelineConfig:
    quiet_this_worker()  # every task starts here
    refuse_if_stale()  # a worker that joined an existing cluster mid-run with other code computes nothing
    return PipelineConfig.model_validate_json(config_json)


def task_config_json(cfg: PipelineConfig) -> str:
    """``cfg`` as a task gets it: without the databases' record lists. A task is handed the units it works on, their
    records named in them, and no task reads the lists (the plan does, in the flow process); a config listing
    100 000 records is 1 MB of JSON, which went with every task's arguments to the scheduler. The model artifact is
    the exception: its training task gets the run's whole config (``model_artifact``)."""
    lists_left_out = {name: db.model_copy(update={"records": []}) for name, db in cfg.databases.items()}
    return cfg.model_copy(update={"databases": lists_left_out}).model_dump_json()


def injected_fault(stage: str, chunk_index: int | str) -> None:
    """Test hook: ``ECGPIPE_INJECT_FAILURE=spectrograms:2,features:5`` makes those chunks fail like a flaky disk
    (``segments:B``: batch B, see ``injected_record_fault``); ``classify:logreg:data`` fails as the code fails on
    its data (a ValueError: no retry, and no rerun, can cure it), ``segments:0:full`` as a full disk does (ENOSPC)."""
    for item in os.environ.get(FAULT_ENV, "").split(","):
        where, _, how = item.partition(f"{stage}:{chunk_index}")
        if where or not _ or how not in ("", ":data", ":full"):
            continue
        if how == ":data":
            raise ValueError(f"injected failure ({FAULT_ENV}) in {stage} chunk {chunk_index}, as by its data")
        if how == ":full":
            raise OSError(errno.ENOSPC, f"No space left on device (injected, {FAULT_ENV}, {stage} chunk {chunk_index})")
        raise OSError(f"injected failure ({FAULT_ENV}) in {stage} chunk {chunk_index}")




def may_pass_on_retry(exc: BaseException) -> bool:
    """Whether a unit's failure says nothing of its input: an I/O hiccup or a lost worker, not bad input nor a bug
    that the same data triggers again (``DETERMINISTIC_ERRORS``)."""
    return is_transient(exc) and not isinstance(exc, DETERMINISTIC_ERRORS)


def injected_record_fault(batch_index: int, n_finished: int) -> None:
    """Test hook: ``ECGPIPE_INJECT_FAILURE=segments:0`` makes segments batch 0 fail like a flaky disk once it has
    computed its first record (a retry of the batch finds that record done and computes the next: it passes)."""
    if n_finished == 1:
        injected_fault("segments", batch_index)


def where() -> str:
    """Address of the Dask worker running this task (recorded in markers: provenance and placement checks)."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "flow-process"


@dataclass(frozen=True)
class RecordFailure:
    """A record that could not be used (bad input): its path and the problem, named in the report."""

    record_path: str
    problem: str


def record_failure(exc: Exception, shown: str) -> RecordFailure:
    """The failure of one record of a batch task, or ``exc`` raised again to fail (and retry) the whole batch.
    Bad input, or a bug that one odd signal triggers (an IndexError, a division by zero), would fail the same way
    again: it fails this record alone. Anything else may pass on a retry (an I/O or network hiccup of a remote store),
    and a full disk, a quota or a read-only store would fail every record after it: the batch fails, the run stops."""
    if may_pass_on_retry(exc) or stops_the_command(exc):
        raise exc
    return RecordFailure(getattr(exc, "record_path", shown), getattr(exc, "problem", f"{type(exc).__name__}: {exc}"))


@stage_task(name="record-segments", task_run_name="segments batch {batch_index}")
def record_batch(store: str, out_dir: str, batch_index: int, units: list[RecordUnit], config_json: str
                 ) -> list[RecordSummary | RecordFailure]:
    """Several records in one task (per-task overhead), each with its own marker: a bad record fails alone, and a
    retried batch skips the records it already finished. An error that may pass on a retry fails the batch (it is
    retried)."""
    cfg, markers, attempts = _config(config_json), Markers(out_dir), RecordAttempts(out_dir, segments.STAGE)
    out: list[RecordSummary | RecordFailure] = []
    n_computed = 0
    for unit in units:
        done = segments.record_done(store, markers, unit)
        if done is not None:
            out.append(done)
            continue
        if problem := attempts.begin(unit.name, unit.shown):  # its worker died on it before: it fails alone
            out.append(RecordFailure(os.path.join(unit.db_dir, unit.record), problem))  # a path, as other failures
            continue
        try:
            summary, digest = segments.compute_record(store, unit, cfg)
        except Exception as exc:
            out.append(record_failure(exc, unit.shown))
            continue
        finally:
            attempts.end(unit.name)
        markers.write(segments.STAGE, unit.name, unit.key, {"summary": summary.to_json(), "digest": digest, "worker": where()},
                      files=segments.record_files_in_store(unit))
        out.append(summary)
        n_computed += 1
        injected_record_fault(batch_index, n_computed)
    return out


@stage_task(name="table-chunks", task_run_name="table from chunk {first_chunk}")
def table_chunks(store: str, first_chunk: int, n_chunks: int, record_names: dict[int, str], rhythm_labels: list[str],
                 config_json: str) -> dict[str, list[str]]:
    return table.write_table_chunks(store, first_chunk, n_chunks, record_names, rhythm_labels, _config(config_json))


@stage_task(name="spectrogram-chunk", task_run_name="spectrograms chunk {chunk_index}")
def spectrogram_chunk(store: str, out_dir: str, spec_array: str, chunk_index: int, key: str, config_json: str) -> int:
    injected_fault(spectrograms.STAGE, chunk_index)
    spec = spectrograms.compute_chunk(store, spec_array, chunk_index, _config(config_json))
    Markers(out_dir).write(spec_array, chunk_unit(chunk_index), key, {"digest": array_digest(spec), "worker": where()},
                           files=in_store(Layout.row_chunk(spec_array, chunk_index)))
    return int(len(spec))


@stage_task(name="feature-width")
def describe_extractor(config_json: str) -> dict:
    cfg = _config(config_json)
    drop_extractors_of_changed_weights(cfg.features.weights_path)  # before any extractor of this process is built
    return features.describe_extractor(cfg)


@stage_task(name="feature-chunk", task_run_name="features chunk {chunk_index}")
def feature_chunk(store: str, out_dir: str, spec_array: str, chunk_index: int, targets: list[tuple[str, str, str]],
                  config_json: str) -> int:
    """``targets``: (feature array, chunk key, layer) of every array this chunk fills, from one forward pass."""
    injected_fault(features.STAGE, chunk_index)
    cfg = _config(config_json)
    drop_extractors_of_changed_weights(cfg.features.weights_path)
    computed = features.compute_chunk(store, spec_array, chunk_index, [(a, layer) for a, _, layer in targets], cfg)
    markers = Markers(out_dir)
    for feat_array, key, _ in targets:
        markers.write(feat_array, chunk_unit(chunk_index), key, {"digest": array_digest(computed[feat_array]), "worker": where()},
                      files=in_store(Layout.row_chunk(feat_array, chunk_index)))
    return int(len(next(iter(computed.values()))))


@stage_task(name="classify-fold", task_run_name="classify {protocol} fold {fold}")
def classify_fold(store: str, out_dir: str, feat_array: str | None, data_key: str, protocol: str, fold: int,
                  config_json: str, row_unit: str, row_key: str) -> FoldResult:
    """One outer fold of one protocol for one row; ``config_json`` holds that row's settings. The fold is kept as
    it finishes (``plan.write_fold``): a stopped run does not compute it again."""
    cfg = _config(config_json)
    injected_fault(classification.STAGE, cfg.classifier.kind)  # classify:<kind> fails every fold of that kind's rows
    injected_fault(classification.STAGE, f"{protocol}:{fold}")  # classify:<protocol>:<fold> fails that fold of each row
    result = classification.evaluate_fold(classification.row_data(store, cfg, feat_array, data_key), cfg, protocol, fold)
    write_fold(Markers(out_dir), row_unit, row_key, protocol, fold, result)
    return result


@stage_task(name="train-model")
def train_model(store: str, feat_array: str | None, data_key: str, config_json: str, weights_source: str, path: str,
                recordings: dict[str, str], signals: dict[str, str]) -> str:
    return classification.train_model(store, _config(config_json), feat_array, data_key, weights_source, path, recordings,
                                      signals)


@stage_task(name="recording-grid", task_run_name="recording grid batch {batch_index}")
def recording_grid_batch(store: str, out_dir: str, batch_index: int, units: list[GridUnit], config_json: str
                         ) -> list[str | RecordFailure]:
    """Every window of several records on predict's grid, each with its own marker (as ``record_batch``: a record
    that fails on its data fails alone; an error that may pass on a retry fails the batch, which is retried)."""
    cfg, markers, attempts = _config(config_json), Markers(out_dir), RecordAttempts(out_dir, recording_grid.STAGE)
    drop_extractors_of_changed_weights(cfg.features.weights_path)
    injected_fault(recording_grid.STAGE, batch_index)
    out: list[str | RecordFailure] = []
    for unit in units:
        if recording_grid.grid_done(store, markers, unit):
            out.append("done")
            continue
        if problem := attempts.begin(unit.name, unit.shown):  # its worker died on it before: it fails alone
            out.append(RecordFailure(os.path.join(unit.record.db_dir, unit.record.record), problem))
            continue
        try:
            digest = recording_grid.compute_grid(store, unit, cfg)
        except Exception as exc:
            out.append(record_failure(exc, unit.shown))
            continue
        finally:
            attempts.end(unit.name)
        markers.write(recording_grid.STAGE, unit.name, unit.key, {"digest": digest, "worker": where()}, files=in_store(unit.path))
        out.append(digest)
    return out


@stage_task(name="recording-scores-fold", task_run_name="recording endpoints fold {fold}")
def recording_scores_fold(store: str, feat_array: str | None, data_key: str, fold: int, records: list[GridRecord],
                          config_json: str) -> FoldScores:
    """One grouped fold's detectors, fitted on its training windows, calling the endpoints on its records' grids."""
    injected_fault(recording_scores.STAGE, fold)
    return recording_scores.score_fold(store, _config(config_json), feat_array, data_key, fold, records)
