"""``ecgpipe predict`` over many records: in worker processes (``--jobs``) or on a Dask cluster's workers
(``--scheduler``, ``model_cluster``), each record's rows written as soon as it is done, and a prediction stopped
half-way taken up where it stopped (``--resume``, ``predict_tables``).

A corpus of 300 000 records takes hours in one process (about 50 ms per 30-s record with the cinc2017 preset's
model; a CNN model costs more per window). ``jobs`` processes (or the cluster's workers) each load the model once and
predict records side by side (each writes its records' annotation files), while this process writes the tables in
the order the records were given: the files do not depend on where the records were predicted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ecgpipe.environment import differences_warning
from ecgpipe.errors import PREDICTION_RECORD_ERRORS, one_record_error, stops_the_command
from ecgpipe.location import write_file
from ecgpipe.lock import RunLock
from ecgpipe.model import TrainedModel
from ecgpipe.model_cluster import ModelCluster
from ecgpipe.model_pool import in_order
from ecgpipe.orchestration.attempts import injected_death
from ecgpipe.predict import (
    EndpointDecision,
    RecordPrediction,
    compare_with_reference,
    predict_loaded,
    read_new_record,
    training_recording,
    write_annotations,
)
from ecgpipe.predict_outputs import AGREEMENT_PARTIAL, earlier_prediction, write_model_note
from ecgpipe.predict_tables import (
    PredictionTables,
    Resumed,
    earlier_output_names,
    resume_from,
    rewrite_partial,
    table_columns,
    write_output_names,
)
from ecgpipe.progress import PROGRESS_EVERY_S, progress_line

CHECKED_FOLDERS = 8  # on a cluster, the first records' folders every worker must see before any record is sent
PER_RECORD_LINES = 20  # more records than this: a progress line every PROGRESS_EVERY_S instead of a line per record
TRAINING_NOTE = "one of this model's training records"


@dataclass(frozen=True)
class PredictOptions:
    """Every option that shapes a record's prediction or its files; a resumed prediction must use the same."""

    extension: str = "pred"
    stride_s: float | None = None
    smooth: int = 5
    lead: tuple[str | int, ...] | None = None
    decisions: dict[str, EndpointDecision] = field(default_factory=dict)  # each endpoint of the model: how it is called
    compare: str | None = None  # the reference annotator to measure agreement with

    def to_json(self) -> dict:
        """As model.json records it (and a resume compares it)."""
        return {"extension": self.extension, "stride_s": self.stride_s, "smooth": self.smooth,
                "lead": list(self.lead) if self.lead else None, "compare": self.compare,
                "endpoint_decisions": {name: [d.width, d.penalty] for name, d in sorted(self.decisions.items())}}


@dataclass
class RecordOutcome:
    """One record's prediction (or why there is none), as a worker hands it to the writer."""

    path: str  # as given (its rows' ``record``)
    name: str  # its output name
    pred: RecordPrediction | None = None
    target: str | None = None  # its annotation file
    error: str | None = None
    training_record: str | None = None  # the model's training record it is, if any
    read_warnings: list[str] = field(default_factory=list)  # what it was read anyway with (said by the command)


def predict_one(model: TrainedModel, path: str, name: str, out: str, options: PredictOptions, base: str = "") -> RecordOutcome:
    """Predict one record and write its annotation file; bad input is this record's error, never the others'.
    ``path`` and ``out`` are read and written relative to ``base`` (the command's working directory, sent to a
    cluster's workers, whose own is another) and reported as given. What the record was read anyway with comes back
    in ``read_warnings`` (its prediction's note too), for the command to say, also when the record fails after."""
    where = os.path.join(base, path)
    # the reader names the record and its files by their folder: given back as given (``./`` for none, as read here)
    folder_read, folder_given = os.path.join(os.path.dirname(where), ""), os.path.join(os.path.dirname(path) or ".", "")
    read_warnings: list[str] = []
    target = None
    injected_death("predict", name)
    try:
        rec = read_new_record(where, model, list(options.lead) if options.lead else None, warn=False)
        read_warnings = [w.replace(folder_read, folder_given) for w in rec.notes] if base else list(rec.notes)
        pred = predict_loaded(model, rec, stride_s=options.stride_s, smooth=options.smooth,
                              endpoint_decisions=options.decisions)
        pred.record = where
        target = write_annotations(pred, os.path.join(base, out), options.extension, name)
        if options.compare:
            pred.agreement = compare_with_reference(pred, model, options.compare)
            if base and isinstance(pred.agreement.get("reason"), str):  # named as given, as without a cluster
                pred.agreement["reason"] = pred.agreement["reason"].replace(where, path)
        if base:  # what was read anyway, named as given too
            pred.note, pred.read_warnings = pred.note.replace(folder_read, folder_given), read_warnings
        seen = training_recording(model, where)
    except PREDICTION_RECORD_ERRORS as err:  # named as given, as without a cluster; a bug one odd record triggers fails it alone
        if stops_the_command(err):  # --out's disk is full: so it is for every record after
            raise
        if target is not None:  # written before the record failed (its reference unreadable): no output beside an error
            with contextlib.suppress(OSError):
                os.remove(target)
        text = one_record_error(err, where)
        return RecordOutcome(path, name, error=text.replace(where, path) if base else text, read_warnings=read_warnings)
    pred.record, target = path, os.path.join(out, os.path.relpath(target, os.path.join(base, out)))
    if seen:  # flagged where the row is: its predictions are no independent test
        pred.agreement = {**(pred.agreement or {}), "training_record": seen}
        pred.note = "; ".join(filter(None, [pred.note, f"{TRAINING_NOTE} ({seen})"]))
    return RecordOutcome(path, name, pred=pred, target=target, training_record=seen, read_warnings=read_warnings)


@dataclass
class PredictSummary:
    """What a prediction did, for the closing lines: records predicted now, kept from before, failed, training ones."""

    predicted: int = 0
    resumed: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # path -> error
    training_records: int = 0
    read_with_warnings: int = 0  # records read anyway now (a predicted one's note in records.csv says what)


def _stop(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (a batch system's time limit) stops as Ctrl-C does


def predict_records(model: TrainedModel, paths: list[str], names: dict[str, str], out: Path, options: PredictOptions,
                    jobs: int = 1, resume: bool = False, require_signed: bool | None = None, say=print,
                    scheduler: str | None = None) -> PredictSummary:
    """Predict ``paths`` into ``out`` (checked safe by the caller) and write its tables, annotations, outputs.csv,
    model.json and, with ``options.compare``, agreement.json. One line per record up to ``PER_RECORD_LINES``
    records, else a progress line at most every ``PROGRESS_EVERY_S`` as records finish; a bad record's error on
    stderr either way. Holds ``out``'s lock while it works (``LockHeld`` if another run or prediction holds it).
    Records are predicted in ``jobs`` local processes, or on the workers of the Dask cluster at
    ``scheduler`` (``model_cluster``), the tables written here either way. SIGTERM stops it as Ctrl-C does (KeyboardInterrupt), every finished record kept."""
    if changed := differences_warning(model.environment):
        warnings.warn(changed, UserWarning, stacklevel=2)
    previous = None
    with contextlib.suppress(ValueError):  # only the main thread can
        previous = signal.signal(signal.SIGTERM, _stop)
    try:  # two predictions into one folder would each rewrite the tables without the other's rows: one at a time
        with RunLock(out):
            # a cluster is checked before anything is written (it may not see --out, nor the model)
            reads = tuple(dict.fromkeys(os.path.dirname(os.path.abspath(p)) for p in paths))[:CHECKED_FOLDERS]
            with ModelCluster(scheduler, model, str(out.absolute()), reads) if scheduler else contextlib.nullcontext() as cluster:
                return _predict_records(model, paths, names, out, options, jobs, resume, require_signed, say, cluster)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _predict_records(model, paths, names, out, options, jobs, resume, require_signed, say, cluster) -> PredictSummary:
    columns = table_columns(model.config.class_names, list(model.config.endpoints))
    earlier = resume_from(out, model, options.to_json(), names, columns) if resume else Resumed()
    earlier_files = earlier_output_names(out) if earlier_prediction(out) else {}  # path -> its annotation file
    if not earlier_prediction(out):  # a new folder: marked as predict's before any table is written
        write_model_note(out, model, options.to_json())
    # an earlier prediction's model.json stays until its tables hold only what this one keeps (records.csv first):
    # stopped in between, the folder is still the earlier prediction's, never another model's rows under this note
    write_output_names(out, names, options.extension)
    rewrite_partial(out, earlier.agreements if options.compare else None)
    (out / "agreement.json").unlink(missing_ok=True)  # an earlier run's, beside this run's rows, would pass for this one's
    tables = PredictionTables(out, model.config.class_names, list(model.config.endpoints), kept=earlier.rows)
    write_model_note(out, model, options.to_json())
    agreements = dict(earlier.agreements)
    summary = PredictSummary(resumed=len(earlier.done),
                             training_records=sum(TRAINING_NOTE in r[-2] for r in earlier.rows["records"]))
    todo = [(p, names[p]) for p in paths if p not in earlier.done]
    if earlier.done:
        say(f"resuming: {len(earlier.done)} of {len(paths)} record(s) already predicted into {out} by this model with these "
            f"options; predicting the other {len(todo)}")
    if cluster:
        say(cluster.describe())
    each, started, last_line = len(paths) <= PER_RECORD_LINES, time.monotonic(), time.monotonic()
    with tables, (open(out / AGREEMENT_PARTIAL, "a") if options.compare else contextlib.nullcontext()) as partial:
        lost = "; every record finished before is in records.csv: rerun with --resume"
        if cluster:  # the workers read and write from their own working directory: given this one's
            work = cluster.in_order(predict_one, [(p, n, str(out), options, os.getcwd()) for p, n in todo], lost,
                                    killed=lambda item, why: RecordOutcome(item[0], item[1], error=why))
        else:
            work = in_order(predict_one, [(p, n, str(out), options) for p, n in todo], model, jobs, require_signed, lost=lost,
                            killed=lambda item, why: RecordOutcome(item[0], item[1], error=why))
        for k, outcome in enumerate(work, start=1):
            if outcome.read_warnings:  # said here, not in a worker process's or a cluster worker's log
                summary.read_with_warnings += 1
                if summary.read_with_warnings <= PER_RECORD_LINES:
                    for warning in outcome.read_warnings:
                        print(f"ecgpipe: warning: {warning}", file=sys.stderr)
            if outcome.error is not None:
                summary.failed[outcome.path] = outcome.error
                tables.add_failed(outcome.path, outcome.error)
                # an earlier prediction's annotations of the record, beside this one's error, would pass for its output
                if earlier_files.get(outcome.path) == f"{outcome.name}.{options.extension}":
                    (out / earlier_files[outcome.path]).unlink(missing_ok=True)
                print(f"ecgpipe: {outcome.error}", file=sys.stderr)
            else:
                summary.predicted += 1
                if outcome.training_record:
                    summary.training_records += 1
                    if summary.training_records <= PER_RECORD_LINES:
                        print(f"ecgpipe: warning: {outcome.path} is {outcome.training_record}, {TRAINING_NOTE}: its "
                              "predictions and agreement are not an independent test", file=sys.stderr)
                if options.compare:  # keyed by each record's output name; on disk before its rows commit it
                    agreements[outcome.name] = outcome.pred.agreement
                    partial.write(json.dumps([outcome.name, outcome.pred.agreement]) + "\n")
                    partial.flush()
                tables.add(outcome.pred)
                if each:
                    say(record_line(outcome, options.compare))
            now = time.monotonic()
            if not each and (now - last_line >= PROGRESS_EVERY_S or k == len(todo)):
                say(progress_line("predict", k, len(todo), len(summary.failed), now - started))
                last_line = now
    if earlier.done:  # kept rows came first: back in the order given, as an uninterrupted prediction writes them
        tables.in_given_order(paths)
    if summary.failed:  # a failed record has no annotation file: outputs.csv names none
        write_output_names(out, names, options.extension, failed=set(summary.failed))
    if options.compare:
        ordered = {names[p]: agreements[names[p]] for p in paths if names[p] in agreements}
        write_file(out / "agreement.json", json.dumps(ordered, indent=2))
        (out / AGREEMENT_PARTIAL).unlink(missing_ok=True)
    return summary


def record_line(outcome: RecordOutcome, compare: str | None) -> str:
    """``PATH: 3 episode(s) over 1805 s -> OUT/100.pred`` and, with ``compare``, its agreement."""
    pred = outcome.pred
    line = f"{outcome.path}: {len(pred.episodes)} episode(s) over {pred.duration_s:.0f} s -> {outcome.target}"
    a = pred.agreement or {}  # without --compare it may hold only the training-record flag
    if a.get("per_second_agreement") is not None:
        line += (f"; vs {compare}: per-second agreement {a['per_second_agreement']:.3f}, "
                 f"{a['episodes_recovered']}/{a['reference_episodes']} reference episodes recovered")
    elif "per_second_agreement" in a:  # no second both annotated with a configured rhythm and scored
        line += f"; vs {compare}: no second to compare (no configured rhythm annotated where windows were scored)"
    elif a.get("available") is False:
        line += f"; no agreement: {a['reason']}"
    return line
