"""``ecgpipe predict`` over many records: in worker processes (``--jobs``), each record's rows written as soon as it
is done, and a prediction stopped half-way taken up where it stopped (``--resume``).

A corpus of 300 000 records takes hours in one process (about 50 ms per 30-s record with the cinc2017 preset's
model; a CNN model costs more per window). ``jobs`` processes each load the model once and predict records side by
side, while this process writes every output in the order the records were given: the files do not depend on
``jobs``. A prediction stopped by a crash, a lost node or Ctrl-C keeps every finished record's rows
(``PredictionTables`` commits a record by its records.csv row, written last); ``--resume`` in the same ``--out``
skips those records when model.json names the same model and the same options, and predicts the others (the
failed ones again).
"""

from __future__ import annotations

import contextlib
import csv
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecgpipe.errors import EcgpipeError, PipelineError
from ecgpipe.model import TrainedModel, load_model
from ecgpipe.predict import (
    EndpointDecision,
    RecordPrediction,
    compare_with_reference,
    predict_record,
    training_recording,
    write_annotations,
)
from ecgpipe.predict_outputs import AGREEMENT_PARTIAL, earlier_prediction, write_model_note
from ecgpipe.progress import PROGRESS_EVERY_S, progress_line

PER_RECORD_LINES = 20  # more records than this: a progress line every PROGRESS_EVERY_S instead of a line per record
TABLES = ("episodes", "endpoints", "records")  # records.csv last: its row says that a record's other rows are written


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


def predict_one(model: TrainedModel, path: str, name: str, out: str, options: PredictOptions) -> RecordOutcome:
    """Predict one record and write its annotation file; bad input is this record's error, never the others'."""
    try:
        pred = predict_record(model, path, stride_s=options.stride_s, smooth=options.smooth,
                              lead=list(options.lead) if options.lead else None, endpoint_decisions=options.decisions)
        target = write_annotations(pred, out, options.extension, name)
        if options.compare:
            pred.agreement = compare_with_reference(pred, model, options.compare)
    except (EcgpipeError, ValueError) as err:
        return RecordOutcome(path, name, error=str(err))
    seen = training_recording(model, path)
    if seen:  # flagged where the row is: its predictions are no independent test
        pred.agreement = {**(pred.agreement or {}), "training_record": seen}
        pred.note = "; ".join(filter(None, [pred.note, f"one of this model's training records ({seen})"]))
    return RecordOutcome(path, name, pred=pred, target=target, training_record=seen)


_WORKER: dict = {}


def _start_worker(model_path: str, digest: str, require_signed: bool | None, jobs: int) -> None:
    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    # the cores shared out: each process's BLAS and OpenMP pools (gradient boosting predicts with every core) would
    # otherwise start one thread per core in every process, and ``jobs`` processes ran slower than one
    _WORKER["threads"] = threadpool_limits(max(1, (os.cpu_count() or 1) // jobs))
    model = load_model(model_path, require_signed=require_signed)
    if model.digest != digest:  # replaced since this prediction started: its records would mix two models
        raise PipelineError(f"{model_path}: changed while predicting (sha256 {model.digest[:16]}..., was {digest[:16]}...)")
    _WORKER["model"] = model
    parent = os.getppid()

    def leave_with_parent() -> None:  # a killed prediction (SIGKILL, OOM) leaves no process holding a model
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=leave_with_parent, daemon=True).start()


def _predict_in_worker(path: str, name: str, out: str, options: PredictOptions) -> RecordOutcome:
    return predict_one(_WORKER["model"], path, name, out, options)


def outcomes(model: TrainedModel, todo: list[tuple[str, str]], out: str, options: PredictOptions, jobs: int = 1,
             require_signed: bool | None = None):
    """Each record's ``RecordOutcome``, in the order of ``todo`` ((path, output name) pairs), from ``jobs`` processes
    (spawned: a forked copy of a process running torch or ONNX Runtime threads can hang), at most 4 records per
    process in flight."""
    if jobs == 1:
        for path, name in todo:
            yield predict_one(model, path, name, out, options)
        return
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
                               initargs=(model.path, model.digest, require_signed, jobs))
    waiting, pending = iter(todo), deque()
    try:
        for path, name in waiting:
            pending.append((path, pool.submit(_predict_in_worker, path, name, out, options)))
            if len(pending) >= 4 * jobs:
                break
        while pending:
            path, future = pending.popleft()
            try:
                outcome = future.result()
            except BrokenProcessPool as exc:
                raise PipelineError(f"{path}: a prediction process died while predicting it or a record beside it (out of "
                                    f"memory? or the model could not be loaded in a new process); every record finished "
                                    f"before is in records.csv: rerun with --resume") from exc
            following = next(waiting, None)  # one more in flight for the one done
            if following is not None:
                pending.append((following[0], pool.submit(_predict_in_worker, *following, out, options)))
            yield outcome
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class Resumed:
    """What an earlier prediction in the same folder already did, for the records given this time."""

    done: set[str] = field(default_factory=set)  # record paths
    rows: dict[str, list[list[str]]] = field(default_factory=lambda: {t: [] for t in TABLES})  # kept, per table
    agreements: dict[str, dict] = field(default_factory=dict)  # by output name


def resume_from(out: Path, model: TrainedModel, options: PredictOptions, names: dict[str, str], columns: list[str]) -> Resumed:
    """The records of ``names`` (path -> output name) that an earlier prediction into ``out`` finished with the same
    model and options: a records.csv row without error, every column there, its annotation file (and, with
    ``compare``, its agreement). Nothing when ``out`` holds no earlier prediction; an error when it holds another's."""
    if not earlier_prediction(out):
        return Resumed()
    note = json.loads((out / "model.json").read_text())
    if note.get("sha256") != model.digest:
        raise PipelineError(f"{out}: --resume: its predictions are from another model ({note.get('model')}, sha256 "
                            f"{str(note.get('sha256'))[:16]}...), not {model.path}: choose another --out, or leave out --resume "
                            "to predict every record again")
    if note.get("options") != options.to_json():
        theirs = note.get("options") or {}
        differ = sorted(k for k in options.to_json() if theirs.get(k) != options.to_json()[k]) or ["(not recorded)"]
        raise PipelineError(f"{out}: --resume: its predictions were made with other options ({', '.join(differ)}: "
                            f"{ {k: theirs.get(k) for k in differ} }): give the same options, or leave out --resume")
    tables = {t: _read_rows(out / f"{t}.csv") for t in TABLES}
    if tables["records"] and tables["records"][0] != columns:
        raise PipelineError(f"{out / 'records.csv'}: --resume: its columns are not this model's: leave out --resume")
    agreements = _read_agreements(out) if options.compare else {}
    finished = {row[0] for row in tables["records"][1:] if len(row) == len(columns) and row[-1] == ""}
    done = {p for p, n in names.items() if p in finished and (out / f"{n}.{options.extension}").exists()
            and (not options.compare or n in agreements)}
    rows = {t: [r for r in table[1:] if r and r[0] in done and (t != "records" or r[-1] == "")] for t, table in tables.items()}
    return Resumed(done, rows, {names[p]: agreements[names[p]] for p in done if names[p] in agreements})


def _read_rows(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="") as fh:
            return list(csv.reader(fh))
    except (OSError, csv.Error):
        return []  # no rows kept: those records are predicted again


def _read_agreements(out: Path) -> dict[str, dict]:
    """Agreements of an earlier prediction: its agreement.json (it finished) or the lines of its partial file."""
    found: dict[str, dict] = {}
    try:
        found.update(json.loads((out / "agreement.json").read_text()))
    except (OSError, ValueError):
        pass
    try:
        lines = (out / AGREEMENT_PARTIAL).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            name, agreement = json.loads(line)
            found[name] = agreement
        except (ValueError, TypeError):
            continue  # a line cut by a crash: that record is predicted again
    return found


class PredictionTables:
    """episodes.csv, records.csv and endpoints.csv of ``ecgpipe predict``, each record's rows appended and flushed as
    soon as it is done: a prediction of 300 000 records stopped at the last one keeps every row before it, and no
    record's prediction is held until the end. A record's records.csv row is written after its other rows, so that
    a resumed prediction trusts a record with a row there (``kept``: an earlier prediction's rows, written first).

    * episodes.csv: one row per episode of a class;
    * records.csv: one row per record: its duration, the seconds its scored windows span (windows with NaN samples
      are not scored), its class, how many windows went to each class, and per endpoint its burden (the share of the
      scored windows where the endpoint is called, of ``scored_s``, not of the whole recording) and how many episodes
      of it endpoints.csv lists. A record that could not be predicted has a row too, empty but for its ``error``, so
      that every record given is accounted for in the file;
    * endpoints.csv: one row per endpoint episode, a run of windows where the endpoint is called."""

    def __init__(self, out: str | Path, class_names: list[str], endpoints: list[str], kept: dict[str, list[list[str]]] | None = None):
        self.class_names, self.endpoints = list(class_names), list(endpoints)
        self.columns = table_columns(class_names, endpoints)
        headers = {"episodes": ["record", "start_s", "end_s", "duration_s", "class", "label"],
                   "endpoints": ["record", "endpoint", "start_s", "end_s", "duration_s"], "records": self.columns}
        for name, header in headers.items():  # written whole, then renamed: a crash here keeps the earlier file
            part = Path(out) / f"{name}.csv.part"
            with open(part, "w", newline="") as fh:
                csv.writer(fh).writerows([header, *(kept or {}).get(name, [])])
            os.replace(part, Path(out) / f"{name}.csv")
        self._files = {name: open(Path(out) / f"{name}.csv", "a", newline="") for name in TABLES}
        self._rows = {name: csv.writer(fh) for name, fh in self._files.items()}

    def add(self, pred: RecordPrediction) -> None:
        for ep in pred.episodes:
            self._rows["episodes"].writerow([pred.record, f"{ep.start_s:.3f}", f"{ep.end_s:.3f}", f"{ep.end_s - ep.start_s:.3f}",
                                             ep.class_name, ep.label])
        for name in pred.endpoint_calls:
            for start, end in pred.endpoint_episodes(name):
                self._rows["endpoints"].writerow([pred.record, name, f"{start:.3f}", f"{end:.3f}", f"{end - start:.3f}"])
        scored = pred.window_classes >= 0
        counts = np.bincount(pred.window_classes[scored], minlength=len(self.class_names))
        burdens = [pred.endpoint_burden(e) if e in pred.endpoint_calls else None for e in self.endpoints]
        # a record shorter than one window is scored on one window: it spans the record, not the window
        scored_s = min(scored.sum() * pred.stride_s, pred.duration_s)
        self._commit([pred.record, f"{pred.duration_s:.3f}", f"{scored_s:.3f}", pred.record_class,
                      *counts.tolist(), *["" if b is None else f"{b:.4f}" for b in burdens],
                      *[len(pred.endpoint_episodes(e)) if e in pred.endpoint_calls else "" for e in self.endpoints],
                      pred.note, ""])

    def add_failed(self, record: str, error: str) -> None:
        self._commit([record, *[""] * (len(self.columns) - 2), error])

    def _commit(self, record_row: list) -> None:
        """The record's other rows on disk first, then its records.csv row."""
        for name in ("episodes", "endpoints"):
            self._files[name].flush()
        self._rows["records"].writerow(record_row)
        self._files["records"].flush()

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()

    def __enter__(self) -> PredictionTables:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def table_columns(class_names: list[str], endpoints: list[str]) -> list[str]:
    """records.csv's columns for a model's classes and endpoints."""
    return ["record", "duration_s", "scored_s", "class", *[f"windows_{n}" for n in class_names],
            *[f"burden_{e}" for e in endpoints], *[f"episodes_{e}" for e in endpoints], "note", "error"]


@dataclass
class PredictSummary:
    """What a prediction did, for the closing lines: records predicted now, kept from before, failed, training ones."""

    predicted: int = 0
    resumed: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # path -> error
    training_records: int = 0


def _stop(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (a batch system's time limit) stops as Ctrl-C does


def predict_records(model: TrainedModel, paths: list[str], names: dict[str, str], out: Path, options: PredictOptions,
                    jobs: int = 1, resume: bool = False, require_signed: bool | None = None, say=print) -> PredictSummary:
    """Predict ``paths`` into ``out`` (checked safe by the caller) and write its tables, annotations, model.json and,
    with ``options.compare``, agreement.json. One line per record up to ``PER_RECORD_LINES`` records, else a
    progress line every ``PROGRESS_EVERY_S``; a bad record's error on stderr either way."""
    with contextlib.suppress(ValueError):  # only the main thread can
        signal.signal(signal.SIGTERM, _stop)
    columns = table_columns(model.config.class_names, list(model.config.endpoints))
    earlier = resume_from(out, model, options, names, columns) if resume else Resumed()
    write_model_note(out, model, options.to_json())  # first: a prediction stopped half-way leaves a folder a rerun may resume
    (out / "agreement.json").unlink(missing_ok=True)  # an earlier run's, beside this run's rows, would pass for this one's
    agreements = dict(earlier.agreements)
    _rewrite_partial(out, agreements if options.compare else None)
    summary = PredictSummary(resumed=len(earlier.done))
    todo = [(p, names[p]) for p in paths if p not in earlier.done]
    if earlier.done:
        say(f"resuming: {len(earlier.done)} of {len(paths)} record(s) already predicted into {out} by this model with these "
            f"options; predicting the other {len(todo)}")
    each, started, last_line = len(paths) <= PER_RECORD_LINES, time.monotonic(), time.monotonic()
    with PredictionTables(out, model.config.class_names, list(model.config.endpoints), kept=earlier.rows) as tables, \
            (open(out / AGREEMENT_PARTIAL, "a") if options.compare else contextlib.nullcontext()) as partial:
        for k, outcome in enumerate(outcomes(model, todo, str(out), options, jobs, require_signed), start=1):
            if outcome.error is not None:
                summary.failed[outcome.path] = outcome.error
                tables.add_failed(outcome.path, outcome.error)
                print(f"ecgpipe: {outcome.error}", file=sys.stderr)
            else:
                summary.predicted += 1
                if outcome.training_record:
                    summary.training_records += 1
                    if summary.training_records <= PER_RECORD_LINES:
                        print(f"ecgpipe: warning: {outcome.path} is {outcome.training_record}, one of this model's training "
                              "records: its predictions and agreement are not an independent test", file=sys.stderr)
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
    if options.compare:
        (out / "agreement.json").write_text(json.dumps(agreements, indent=2))
        (out / AGREEMENT_PARTIAL).unlink(missing_ok=True)
    write_model_note(out, model, options.to_json())
    return summary


def _rewrite_partial(out: Path, agreements: dict[str, dict] | None) -> None:
    """The partial agreements file holding only the kept records' (none without ``compare``)."""
    if agreements is None:
        (out / AGREEMENT_PARTIAL).unlink(missing_ok=True)
        return
    part = out / f"{AGREEMENT_PARTIAL}.part"
    part.write_text("".join(json.dumps([name, a]) + "\n" for name, a in agreements.items()))
    os.replace(part, out / AGREEMENT_PARTIAL)


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
