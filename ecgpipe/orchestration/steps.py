"""The steps of the flow, one per stage: plan the stage's units (``ecgpipe.plan``), submit those not done as tasks
(``ecgpipe.orchestration.tasks``), count and time them (``RunLog``). Each step returns what the next one needs."""

from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import dataclass

from ecgpipe import store as zs
from ecgpipe.config import PipelineConfig
from ecgpipe.errors import PipelineError, StageFailed, error_kind, failure_kinds, stops_the_command  # noqa: F401  (re-exported)
from ecgpipe.location import Location
from ecgpipe.orchestration import interrupt, tasks
from ecgpipe.orchestration.attempts import RecordAttempts
from ecgpipe.orchestration.bookkeeping import RunLog, error_text, result_of, run_chunk_stage, wait_all
from ecgpipe.orchestration.cluster import cluster_client, feature_placement, gpu_workers_in_cluster, scheduler_gone, task_slots
from ecgpipe.orchestration.model_artifact import ModelJob, finish_model, submit_model
from ecgpipe.orchestration.tasks import task_config_json
from ecgpipe.plan import RunPlan
from ecgpipe.protocols import GROUPED
from ecgpipe.report_build import record_accounting
from ecgpipe.results import RecordingScores, protocols_to_json
from ecgpipe.stages import classification, features, recording_grid, recording_scores, segments, spectrograms, table
from ecgpipe.stages.classification import ComparisonRow
from ecgpipe.stages.features import FeatureArray, feature_groups
from ecgpipe.stages.segments import RecordSummary, RecordUnit
from ecgpipe.stages.table import SegmentTable
from ecgpipe.store import Layout


@dataclass
class Run:
    """One flow run: its plan, its log, its logger and its tasks (with the run's retry settings)."""

    cfg: PipelineConfig
    plan: RunPlan
    log: RunLog
    logger: object
    strict: bool

    @classmethod
    def start(cls, cfg: PipelineConfig, data_dir: str | None, out: Location, log: RunLog, logger, strict: bool | None,
              download: bool = False) -> Run:
        plan = RunPlan.create(cfg, data_dir, out, download=download, keep_digests=True)
        plan.inputs.save()  # the next run's plan reads only the records whose files changed (config.json makes OUT)
        # absolute, so that `ecgpipe status OUT` finds the data from any folder
        saved_dir = data_dir if data_dir is None or "://" in str(data_dir) else os.path.abspath(data_dir)
        out.write_text("config.json", json.dumps({"config": cfg.model_dump(mode="json"), "data_dir": saved_dir}, indent=2))
        run = cls(cfg, plan, log, logger, cfg.run.strict if strict is None else strict)
        client = cluster_client()
        if client is not None and client.dashboard_link:
            logger.info(f"Dask dashboard: {client.dashboard_link}")
        zs.prepare_store(run.store, interrupt.check)  # its groups; no record groups of an earlier version beside bundles
        return run

    @property
    def store(self) -> str:
        return self.plan.store

    @property
    def out_dir(self) -> str:
        return self.plan.out.url

    @functools.cached_property
    def config_json(self) -> str:
        return task_config_json(self.cfg)

    def task(self, t):
        return t.with_options(retries=self.cfg.run.retries, retry_delay_seconds=list(self.cfg.run.retry_delay_s) or 0)


def segment_records(run: Run) -> tuple[list[RecordSummary], list[dict]]:
    """Stage 1: every record's windows, records batched into tasks; returns the records read and those skipped."""
    with run.log.timed(segments.STAGE):
        for note in run.plan.notes():  # records a labels CSV lists without files, and files it does not list
            run.logger.warning(f"segments: {note}")
        summaries = run.plan.record_summaries()
        todo = [u for u in run.plan.records if summaries[u.name] is None]
        run.log.count(segments.STAGE, skipped=len(run.plan.records) - len(todo))
        groups = segments.batches(todo, run.cfg.run.records_per_task, run.cfg.run.signal_s_per_task)
        run.logger.info(f"segments: {len(todo)} of {len(run.plan.records)} records to compute, in {len(groups)} task(s)")
        run.log.count(segments.STAGE, tasks=len(groups))
        RecordAttempts(run.out_dir, segments.STAGE).clear()  # a worker's deaths on a record count within this run
        task = run.task(tasks.record_batch)
        futures = [task.submit(run.store, run.out_dir, b, group, run.config_json) for b, group in enumerate(groups)]
        skipped: list[dict] = []
        lost: list[tuple[str, Exception]] = []
        failures: list[tuple[str, str]] = []  # bad records so far, (record path, problem): for fail_fast
        n_read = 0  # records whose batch came back (a count: a list rebuilt per batch was quadratic at 10^6 records)
        settled: set[int] = set()

        def failed(unit, record_path: str, problem: str) -> None:
            run.log.fail(segments.STAGE, unit.shown, problem)
            skipped.append({"record": record_path, "error": problem})

        def finished(b: int) -> list[tuple[RecordUnit, RecordSummary | None]]:
            """The records of a batch that did not settle (failed for good, or stopped): each with its summary when
            it was finished before that (its marker and arrays are written), else None."""
            return [(unit, segments.record_done(run.store, run.plan.markers, unit)) for unit in groups[b]]

        def on_done(b: int, exc: Exception | None) -> None:  # counted as they finish: right even if interrupted
            nonlocal n_read
            settled.add(b)
            if exc is not None:  # the whole batch failed (a transient error, retries spent)
                for unit, done in finished(b):  # what it finished before the error is not lost
                    if done is not None:
                        summaries[unit.name] = done
                        run.log.count(segments.STAGE, computed=1)
                    elif tasks.may_pass_on_retry(exc) or stops_the_command(exc):  # no bad input: no run without it
                        run.log.fail(segments.STAGE, unit.shown, error_text(exc))
                        lost.append((unit.shown, exc))
                    else:  # the batch failed for good around its records (its markers' folder full, unwritable)
                        failed(unit, unit.shown, error_text(exc))
                return
            for unit, result in zip(groups[b], futures[b].result()):
                n_read += 1
                if isinstance(result, tasks.RecordFailure):
                    failed(unit, result.record_path, result.problem)
                    failures.append((result.record_path, result.problem))
                else:
                    summaries[unit.name] = result
                    run.log.count(segments.STAGE, computed=1)
            fail_fast(run.cfg, failures, n_read, len(todo))

        try:
            wait_all(futures, segments.STAGE, run.logger, run.strict, on_done=on_done)
            stop_if_retry_may_pass(segments.STAGE, lost)
            if run.strict and skipped:
                raise StageFailed(f"{skipped[0]['record']}: {skipped[0]['error']} (--strict: the first bad record stops the run)")
            skipped.sort(key=lambda s: s["record"])
            records = [summaries[u.name] for u in run.plan.records if summaries[u.name] is not None]
            if not records:
                raise StageFailed(f"every record failed: {failure_kinds(skipped) if skipped else 'none read'}")
        except BaseException:  # the run stops here: run.json still accounts for every record, the unfinished ones too
            with contextlib.suppress(Exception):  # a marker unreadable now: its record stays unfinished
                for b in (b for b in range(len(groups)) if b not in settled):  # batches in flight as it stopped
                    for unit, done in finished(b):  # (Ctrl-C, the fail-fast stop): their finished records count
                        if done is not None:
                            summaries[unit.name] = done
                            run.log.count(segments.STAGE, computed=1)
            run.log.records = accounting_so_far(run, summaries, skipped)
            raise
    return records, skipped


def accounting_so_far(run: Run, summaries: dict[str, RecordSummary | None], skipped: list[dict]) -> dict[str, int]:
    """The records' accounting of a segments stage that stopped: as a finished run's, and ``unfinished``, the records
    neither read nor failed (not reached, or lost to an error a rerun may cure)."""
    done = [s for s in summaries.values() if s is not None]
    counts = record_accounting(done, skipped, len(run.plan.records) + len(run.plan.absent), len(run.plan.absent),
                               len(run.plan.unlisted), run.cfg.run.max_records)
    return counts | {"unfinished": len(run.plan.records) - len(done) - len(skipped)}


# what to do with a unit that fails so on every run (its worker killed for memory each time), by stage
LEAVE_OUT = {segments.STAGE: "a record: leave it out with databases.<db>.records or its RECORDS line",
             classification.STAGE: "a classifier row: leave it out of [sweep] classifiers",
             recording_grid.STAGE: "a record: leave it out with databases.<db>.records or its RECORDS line"}


def stop_if_retry_may_pass(stage: str, failures: list[tuple[str, BaseException]]) -> None:
    """End the run as failed when units of ``stage`` failed for a reason a rerun may cure (an I/O hiccup, a lost
    worker; their retries spent), once the rest of the stage is done and kept: it is no bad input, so the run must
    not go on without them (a report missing those records, another best row). A rerun computes only those units."""
    if lost := [(name, exc) for name, exc in failures if tasks.may_pass_on_retry(exc) or stops_the_command(exc)]:
        again = f" (one that fails so every time is {LEAVE_OUT[stage]})" if stage in LEAVE_OUT else ""
        again = f" ({lost[0][1].filename or 'its disk'}: full, over quota or read-only: free space first)" if stops_the_command(lost[0][1]) else again
        raise StageFailed(f"{stage}: {len(lost)} unit(s) failed for a reason a rerun may cure, not for bad input (first: "
                          f"{lost[0][0]}: {error_text(lost[0][1])}); the rest is kept: run again to compute only those{again}")


def fail_fast(cfg: PipelineConfig, failures: list[tuple[str, str]], n_done: int, n_total: int) -> None:
    """Stop the segments stage when the first ``run.fail_fast_after`` records all failed with the same kind of error:
    a wrong setting or data folder, not bad records (trying thousands more would only repeat it). Checked once,
    when at least that many records are done."""
    k = cfg.run.fail_fast_after
    if not k or n_done < k or len(failures) != n_done or n_total <= k:  # a success so far: bad records, not a setting
        return
    kinds = {error_kind(problem, record) for record, problem in failures}  # ptbdb's s0010_re and s0014lre alike
    if len(kinds) == 1:
        raise PipelineError(
            f"the first {k} records all failed with the same error, e.g. {failures[0][0]}: {failures[0][1]}; stopped "
            f"instead of trying the other {n_total - k}. Check the data folder and the [databases] settings (lead, fs, annotator, "
            f"labels_csv, labels_header, checksum); run.fail_fast_after = 0 tries every record regardless"
        )


def segment_table(run: Run, records: list[RecordSummary], skipped: list[dict] = ()) -> SegmentTable:
    """Stage 2: the selected dataset, rewritten only when it changed: planned here from the records' summaries, its
    rows gathered and written by tasks (whole chunks each), its attributes and marker written last."""
    with run.log.timed(table.STAGE):
        try:
            planned = run.plan.table(records)
        except PipelineError as err:  # a class without segments: records that failed may be why (a lead typo)
            raise (PipelineError(f"{err} {len(skipped)} record(s) could not be read, and may hold them: "
                                 f"{failure_kinds(skipped)}") if skipped else err) from None
        changed = not run.plan.table_done(planned)
        if changed:
            digests = table.create_table_arrays(run.store, planned, run.cfg)  # and the row order
            task = run.task(tasks.table_chunks)
            futures = [task.submit(run.store, job.first_chunk, job.n_chunks, job.record_names, planned.rhythm_labels,
                                   run.config_json) for job in table.table_tasks(planned, run.cfg, 4 * task_slots(run.cfg.run.n_workers))]
            run.log.count(table.STAGE, tasks=len(futures))
            results, failures = wait_all(futures, table.STAGE, run.logger)
            if failures:
                raise StageFailed(f"segment table: {error_text(failures[0][1])}")
            for result in results:  # in chunk order
                for name, per_chunk in result.items():
                    digests.setdefault(name, []).extend(per_chunk)
            table.finish_table(run.store, planned, run.cfg, run.plan.markers, digests)
        run.log.count(table.STAGE, computed=int(changed), skipped=int(not changed))
    classification.check_protocols(run.cfg, classification.read_classification_data(run.store, None))
    run.logger.info(f"segments: {len(planned)} selected of {planned.n_candidates} windows "
                    f"(table {'rewritten' if changed else 'unchanged'})")
    return planned


def compute_spectrograms(run: Run, segment_table: SegmentTable) -> tuple[str, list[str], set[int]]:
    """Stage 3: returns the spectrogram array, its chunk keys and the chunks that failed."""
    if not run.plan.needs_cnn:
        run.logger.info("spectrograms: none needed (every classifier reads the rhythm block only)")
        return run.plan.spectrogram_array, run.plan.spectrogram_keys(segment_table), set()
    with run.log.timed(spectrograms.STAGE):
        spec_array, keys, n = run.plan.spectrogram_array, run.plan.spectrogram_keys(segment_table), len(segment_table)
        ensure_rows(run.store, Layout.data(spec_array), n, spectrograms.row_shape(run.cfg), run.cfg.run.chunk_size,
                    Layout.SPECTROGRAM_DTYPE, spectrograms.array_attrs(run.cfg))
        task = run.task(tasks.spectrogram_chunk)
        failed = run_chunk_stage(
            spectrograms.STAGE, [(spec_array, keys)], n, run.plan,
            lambda i, todo: task.submit(run.store, run.out_dir, spec_array, i, todo[0][1], run.config_json), run.logger, run.log)
        if failed and scheduler_gone():  # cancelled, not failed: the next stage would only meet a closed client
            raise StageFailed(f"spectrograms: {len(failed)} chunk(s) cancelled: the connection to the Dask scheduler was "
                              "lost (scheduler-connection-lost); run again to compute only those")
    return spec_array, keys, failed


def compute_features(run: Run, segment_table: SegmentTable, spec_array: str, spec_keys: list[str], spec_failed: set[int]
                     ) -> tuple[list[FeatureArray], str]:
    """Stage 4: one feature array per extractor of the sweep, all from the same spectrograms; extractors that differ
    only in the layer share one forward pass per chunk. Returns the arrays and where their tasks ran."""
    if not run.plan.needs_cnn:  # rhythm-only rows: the extractor is named in the report, never run
        extractors = run.plan.feature_arrays(spec_keys)
        for e in extractors:
            e.attrs = {"backbone": e.cfg.features.backbone, "layer": e.cfg.features.layer or "(pooled)",
                       "weights": "not used (every classifier reads the rhythm block only)", "width": 0}
        run.logger.info("features: none needed (every classifier reads the rhythm block only)")
        return extractors, "not computed: every classifier reads the rhythm block only"
    with run.log.timed(features.STAGE):
        n_gpu = gpu_workers_in_cluster()
        placement = f"{n_gpu} GPU worker(s) (resources GPU=1)" if n_gpu else "any worker (no GPU worker in the cluster)"
        extractors = run.plan.feature_arrays(spec_keys)
        failed: set[int] = set()
        for group in feature_groups(run.cfg.feature_variants):
            failed |= _feature_group(run, [extractors[k] for k in group], len(segment_table), spec_array, spec_failed, n_gpu)
    if spec_failed or failed:
        run.log.fail(classification.STAGE, classification.STAGE, "features incomplete")
        raise StageFailed(
            f"{len(spec_failed)} spectrogram and {len(failed - spec_failed)} feature chunk(s) failed "
            f"(see {run.plan.out.child('run.json')}); run again to recompute only those"
        )
    return extractors, placement


def _feature_group(run: Run, group: list[FeatureArray], n: int, spec_array: str, spec_failed: set[int], n_gpu: int) -> set[int]:
    root = zs.open_root(run.store)
    for e in group:
        run.logger.info(f"features: {e.cfg.features.backbone} layer {e.cfg.features.layer or '(pooled)'} -> {e.array}")
        if e.data in root and "weights" in root[e.data].attrs:
            e.attrs = dict(root[e.data].attrs)
        else:
            with feature_placement(n_gpu):
                describe = run.task(tasks.describe_extractor).submit(task_config_json(e.cfg))
                e.attrs = result_of(describe, features.STAGE, run.logger, gpu_only=bool(n_gpu))
        ensure_rows(run.store, e.data, n, (e.width,), run.cfg.run.chunk_size, Layout.FEATURE_DTYPE, e.attrs)
    layer_of = {e.array: e.layer for e in group}
    targets = list({e.array: e.keys for e in group}.items())  # one target per array
    task, config_json = run.task(tasks.feature_chunk), task_config_json(group[0].cfg)

    def submit(i: int, todo: list[tuple[str, str]]):
        with feature_placement(n_gpu):
            return task.submit(run.store, run.out_dir, spec_array, i, [(a, key, layer_of[a]) for a, key in todo], config_json)

    return run_chunk_stage(features.STAGE, targets, n, run.plan, submit, run.logger, run.log, spec_failed, bool(n_gpu))


def classify(run: Run, segment_table: SegmentTable, extractors: list[FeatureArray]
             ) -> tuple[list[ComparisonRow], int, ModelJob | None, list[dict]]:
    """Stage 5: every (extractor, classifier) row, all folds as parallel tasks; then the best row's model. Returns
    the rows (with their protocol results), the best row, the model artifact, fitted but not yet in its place
    (``model_artifact.publish_model`` puts it there after the report), and the rows that failed: a row whose fold fails is left out
    with its error (one bad row of a sweep stopped the run); every row failing, or any under --strict, stops it."""
    with run.log.timed(classification.STAGE):
        rows = run.plan.rows(extractors, segment_table.key)
        pending, failed = [], {}  # failed: pending row index -> its first failed fold's error
        for row in rows:
            stored = run.plan.row_done(row)
            if stored is None:
                pending.append(row)
            else:
                row.protocols = stored
        run.log.count(classification.STAGE, skipped=len(rows) - len(pending))
        run.logger.info(f"classify: {len(pending)} of {len(rows)} (extractor, classifier) rows to evaluate")
        # one row: the model to save is known now, so its fit (all segments, the longest task) starts first and
        # runs beside the folds instead of after them
        early = submit_model(run, rows[0], segment_table) if len(rows) == 1 else None
        if pending:
            data = classification.read_classification_data(run.store, None)  # labels and subjects decide the folds
            jobs = classification.fold_jobs(pending, data)
            kept = run.plan.kept_folds(pending, jobs)
            todo = [i for i in range(len(jobs)) if i not in kept]  # folds a stopped run finished are not computed again
            task, row_json = run.task(tasks.classify_fold), [task_config_json(row.cfg) for row in pending]
            def submit(i: int):  # one fold of one row
                job, row = jobs[i], pending[jobs[i].row]
                return task.submit(run.store, run.out_dir, row.features, row.data_key, job.protocol, job.fold,
                                   row_json[job.row], row.unit, row.key)
            futures = [submit(i) for i in todo]
            run.log.count(classification.STAGE, tasks=len(futures))
            if kept:
                run.logger.info(f"classify: {len(kept)} of {len(jobs)} folds kept from an earlier run")
            done, failed_folds = wait_all(futures, classification.STAGE, run.logger)
            results, failures = {**kept, **dict(zip(todo, done))}, [(todo[i], exc) for i, exc in failed_folds]
            for i, exc in failures:  # the first failed fold of each row names it
                failed.setdefault(jobs[i].row, f"{jobs[i].protocol} fold {jobs[i].fold}: {error_text(exc)}")
            for r, error in failed.items():
                run.log.fail(classification.STAGE, pending[r].unit, f"{pending[r].name}: {error}")
            for r, row in enumerate(pending):
                if r in failed:
                    continue
                mine = {(j.protocol, j.fold): results[i] for i, j in enumerate(jobs) if j.row == r}
                row.protocols = classification.assemble_row(row, data, mine)
                run.plan.markers.write(classification.STAGE, row.unit, row.key,
                                       {"label": row.label, "protocols": protocols_to_json(row.protocols)})
                run.plan.forget_folds(row, list(mine))
            run.log.count(classification.STAGE, computed=len(pending) - len(failed))
            # a row left out for a lost worker or an I/O hiccup would make another row the best, in silence
            stop_if_retry_may_pass(classification.STAGE, [(f"{pending[jobs[i].row].name}, {jobs[i].protocol} fold {jobs[i].fold}", exc)
                                                          for i, exc in failures])
        failed_rows = [{"row": pending[r].name, "error": error} for r, error in failed.items()]
        if failed_rows and (run.strict or len(failed_rows) == len(rows)):
            why = "; ".join(f"{f['row']}: {f['error']}" for f in failed_rows[:3])
            raise StageFailed(f"classify: {'every classifier row failed' if len(failed_rows) == len(rows) else 'a row failed (--strict)'}: {why}")
        left_out = {id(pending[r]) for r in failed}
        rows = [row for row in rows if id(row) not in left_out]
        best = classification.best_row(rows, run.cfg.selection_protocol)
        model = finish_model(run, early or submit_model(run, rows[best], segment_table))  # early: one row, not failed
    return rows, best, model, failed_rows


def score_recordings(run: Run, records: list[RecordSummary], rows: list[ComparisonRow], best: int) -> RecordingScores | None:
    """Stage 6 (``[recordings] score = true``): every window of the rhythm-annotated recordings featurised on
    predict's grid (one task per batch of records), then each endpoint called on them as predict calls it, each
    record by the detectors of the grouped fold that held its patient out (one task per fold). A record that fails
    is named in the result; the others are scored."""
    row = rows[best]
    if not run.cfg.recordings.score:
        return None
    grids = run.plan.recording_grids(row, records)
    why_not = ("no endpoint is declared" if not row.cfg.endpoints else
               "the best row classifies whole records (no window detectors)" if row.cfg.classifier.level == "record" else
               "no rhythm-annotated record was read" if not grids else "")
    if why_not:
        run.logger.warning(f"recordings: not scored: {why_not}")
        return RecordingScores(protocol=GROUPED.name, classifier=row.label, n_folds=0, n_records=0, hours=0.0,
                               endpoints={}, records=[], notes=[f"not scored: {why_not}"])
    failed = _record_grids(run, row, grids)
    with run.log.timed(recording_scores.STAGE):
        scored = [g for g in grids if g.shown not in {f["record"] for f in failed}]
        stored = run.plan.recording_scores_done(row, scored)
        if stored is not None and not failed:
            run.log.count(recording_scores.STAGE, skipped=1)
            return stored
        data = classification.read_classification_data(run.store, None)  # labels and subjects decide the folds
        folds, note = recording_scores.record_folds(data, row.cfg, scored)
        task = run.task(tasks.recording_scores_fold)
        futures = [task.submit(run.store, row.features, row.data_key, f, records, task_config_json(row.cfg))
                   for f, records in enumerate(folds)]
        run.log.count(recording_scores.STAGE, tasks=len(futures))
        results, fold_failures = wait_all(futures, recording_scores.STAGE, run.logger, run.strict)
        notes = [note] if note else []
        # a fold that failed for good: its records are named, the others scored
        unscored = [{"record": r.name, "error": f"fold {f}: {error_text(exc)}"} for f, exc in fold_failures for r in folds[f]]
        done = [res for res in results if res is not None]
        unscored += [item for res in done for item in res.failed]
        for item in unscored:
            run.log.fail(recording_scores.STAGE, item["record"], item["error"])
        stop_if_retry_may_pass(recording_scores.STAGE, [(f"fold {f}", exc) for f, exc in fold_failures])
        failed += unscored
        notes += [f"fold {f}: no {name} detector (its training windows are all on one side); its "
                  f"{len(folds[f])} records are left out of {name}" for f, res in enumerate(results) if res for name in res.no_detector]
        result = recording_scores.assemble(row.cfg, row.label, [s for res in done for s in res.scores], len(folds), notes, failed)
        if not failed:  # a run with a failed record is scored again next time, once the record may be fixed
            run.plan.markers.write(recording_scores.STAGE, row.unit, recording_scores.scores_key(row, scored),
                                   {"label": row.label, "result": result.to_json()})
        run.log.count(recording_scores.STAGE, computed=1)
    if run.strict and failed:
        raise StageFailed(f"recordings: {failed[0]['record']}: {failed[0]['error']} (--strict)")
    return result


def _record_grids(run: Run, row: ComparisonRow, grids: list) -> list[dict]:
    """The grids not done, computed by batch tasks; returns the records that failed, with why."""
    failed: list[dict] = []
    with run.log.timed(recording_grid.STAGE):
        done = run.plan.grids_done(grids)
        todo = [g for g in grids if not done[g.name]]
        run.log.count(recording_grid.STAGE, skipped=len(grids) - len(todo))
        unit_of = {g.record.name: g for g in todo}  # batched as the segments stage batches records: by their length
        batches = [[unit_of[u.name] for u in b] for b in segments.batches([g.record for g in todo], run.cfg.run.records_per_task,
                                                                         run.cfg.run.signal_s_per_task / 2)]
        run.logger.info(f"recordings: {len(todo)} of {len(grids)} record grids to featurise, in {len(batches)} task(s)")
        RecordAttempts(run.out_dir, recording_grid.STAGE).clear()
        task, n_gpu = run.task(tasks.recording_grid_batch), gpu_workers_in_cluster()
        with feature_placement(n_gpu):
            row_json = task_config_json(row.cfg)
            futures = [task.submit(run.store, run.out_dir, b, batch, row_json) for b, batch in enumerate(batches)]
        run.log.count(recording_grid.STAGE, tasks=len(futures))
        results, failures = wait_all(futures, recording_grid.STAGE, run.logger, run.strict, gpu_only=bool(n_gpu))
        batch_errors = {b: exc for b, exc in failures}
        lost = []  # failed batches with records left unfinished
        for b, batch in enumerate(batches):
            for i, unit in enumerate(batch):
                if b in batch_errors:  # the batch failed for good: what it finished before that is kept
                    problem = None if run.plan.grid_done(unit) else error_text(batch_errors[b])
                    lost += [(f"batch {b} ({unit.shown})", batch_errors[b])] if problem else []
                else:
                    problem = results[b][i].problem if isinstance(results[b][i], tasks.RecordFailure) else None
                if problem:
                    run.log.fail(recording_grid.STAGE, unit.shown, problem)
                    failed.append({"record": unit.shown, "error": problem})
                else:
                    run.log.count(recording_grid.STAGE, computed=1)
        stop_if_retry_may_pass(recording_grid.STAGE, lost)
    if run.strict and failed:
        raise StageFailed(f"recordings: {failed[0]['record']}: {failed[0]['error']} (--strict)")
    return failed


def ensure_rows(store: str, name: str, n: int, row_shape: tuple, chunk: int, dtype: str, attrs: dict) -> None:
    """Make array ``name`` hold n rows (create, or resize keeping the rows it has). Flow process only."""
    root = zs.open_root(store)
    if name in root:
        arr = root[name]
        if arr.shape[1:] == tuple(row_shape) and arr.chunks[0] == chunk and str(arr.dtype) == dtype:
            if arr.shape[0] != n:
                arr.resize((n, *row_shape))  # tasks open the array afresh after this, never a stale handle
            return
    zs.create_array(store, name, (n, *row_shape), (chunk, *row_shape), dtype, attrs=attrs)
