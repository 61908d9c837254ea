"""External validation: a trained model scored on another dataset, with a declared class mapping.

A model trained on mitdb + vfdb (classes normal, afib, vt, vf) meets CinC 2017 (normal, afib, other, noisy): the
question a reviewer asks is how its AF detection holds up on recordings, devices and patients it never saw. The
dataset is described by a config of its own (databases, its classes, its endpoints; e.g. the ``cinc2017`` preset);
everything the model computes (windows, spectrograms, backbone, rhythm block, classifier) stays the model's. Each
model class maps to one dataset class (default: the class of the same name); a model class with no counterpart is
"(unmapped)" and counts as a negative for every endpoint, and a dataset class the model cannot name can only be
missed, which the per-class table shows.

* CSV-labelled datasets are scored per record (the model's windows vote, or a record-level model answers once);
* rhythm-annotated datasets are scored per window: a window's reference is the configured rhythm at its centre;
  and each endpoint that the model and the dataset both declare is scored over whole recordings as ``ecgpipe
  predict`` calls it (its detector averaged and segmented, ``EndpointDecision``): every window of the recordings,
  annotated runs detected and false alarms per hour (``ecgpipe.recording_endpoints``).

Writes ``OUT/evaluation.json``, ``OUT/evaluation.md`` and ``OUT/evaluation_records.csv``. No Prefect or Dask: one
process reads and scores the records one by one (the model's feature path, on whatever device this machine has).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from ecgpipe.config import PipelineConfig
from ecgpipe.databases import subject_id
from ecgpipe.endpoints import endpoint_results, one_vs_rest_specificity
from ecgpipe.environment import differences_warning, numeric_differences
from ecgpipe.errors import PREDICTION_RECORD_ERRORS, EcgpipeError, PipelineError, RecordError, failure_kinds, one_record_error
from ecgpipe.labels import check_record_label, check_subject_column, record_labels
from ecgpipe.location import Location
from ecgpipe.lock import output_lock
from ecgpipe.model import TrainedModel
from ecgpipe.model_pool import in_order, with_cnn_threads
from ecgpipe.orchestration.attempts import injected_death
from ecgpipe.predict import MODEL_DECISIONS, EndpointDecision, predict_loaded, training_leads, training_recording
from ecgpipe.predict_many import PER_RECORD_LINES  # records whose read warnings are printed, as predict's
from ecgpipe.recording_endpoints import RecordingTally, endpoint_labels, subjects_json, window_labels
from ecgpipe.records import read_record
from ecgpipe.report_tables import (
    ENDPOINT_ALIGN,
    RECORDING_ALIGN,
    RECORDING_HEADER,
    RECORDINGS_HOW,
    endpoint_table,
    recording_rows,
)
from ecgpipe.results import EvaluationResult
from ecgpipe.sources import database_dir, selected_records

UNMAPPED = "(unmapped)"


class MappingError(EcgpipeError, ValueError):
    """A class mapping names a class that the model or the dataset does not have."""


def class_mapping(model_classes: list[str], dataset_classes: list[str], pairs: list[str] | None) -> dict[str, str]:
    """model class -> dataset class: same names map by default; ``pairs`` ('afib=afib', 'normal=normal') replace it."""
    mapping = {c: c for c in model_classes if c in dataset_classes}
    if pairs:
        mapping = {}
        for pair in pairs:
            src, sep, dst = pair.partition("=")
            if not sep or src not in model_classes or dst not in dataset_classes:
                raise MappingError(f"--map {pair!r}: expected MODEL_CLASS=DATASET_CLASS with a model class of "
                                   f"{model_classes} and a dataset class of {dataset_classes}")
            if src in mapping and mapping[src] != dst:  # the last one would win, silently
                raise MappingError(f"--map maps model class {src!r} twice ({src}={mapping[src]} and {pair}): give one")
            mapping[src] = dst
    if not mapping:
        raise MappingError(f"no model class ({model_classes}) maps to a dataset class ({dataset_classes}): give --map")
    return mapping


def score(y: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, dataset: PipelineConfig, mapping: dict[str, str],
          unit: str) -> dict:
    """Metrics of mapped predictions (``y_pred`` indexes the dataset's classes, then UNMAPPED)."""
    classes = dataset.class_names
    names = [*classes, UNMAPPED]
    labels = np.arange(len(classes))
    square = confusion_matrix(y, y_pred, labels=np.arange(len(names)))  # UNMAPPED's row is empty: no reference has it
    cm = square[: len(classes)]
    precision, recall, f1, support = precision_recall_fscore_support(y, y_pred, labels=labels, zero_division=0)
    specificity = one_vs_rest_specificity(square)
    return {
        "unit": unit,
        "n": int(len(y)),
        # what the endpoints' intervals resample: the dataset's subjects (records, or patients where its config says
        # who is one: same_subject, subject, subject_pattern)
        "n_subjects": int(len(np.unique(groups))),
        "subject_word": dataset.subject_word,
        "accuracy": float(accuracy_score(y, y_pred)),
        # over the dataset classes present in the reference (a class with no record/window has no F1)
        "macro_f1": float(f1_score(y, y_pred, labels=np.unique(y), average="macro", zero_division=0)),
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i]), "specificity": specificity[i],
                          "predictable": c in mapping.values()} for i, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
        "confusion_columns": names,
        "endpoints": {k: v.to_json() for k, v in endpoint_results(y, y_pred, groups, names, dataset.endpoints).items()},
    }


def reference_at(rec, dataset: PipelineConfig, centres_s: np.ndarray) -> np.ndarray:
    """Dataset class index of the rhythm at each time (s); -1 outside any configured, non-excluded rhythm."""
    out = np.full(len(centres_s), -1, dtype=np.int64)
    usable = {label: dataset.class_names.index(c) for label, c in dataset.label_to_class.items()
              if label not in dataset.segments.exclude_labels}
    for ep in rec.episodes:
        if ep.label in usable:
            inside = (centres_s * rec.fs >= ep.start) & (centres_s * rec.fs < ep.end)
            out[inside] = usable[ep.label]
    return out


def evaluate_model(model: TrainedModel, dataset: PipelineConfig, data_dir: Path, mapping: dict[str, str],
                   max_records: int | None = None, seed: int = 0, progress=print, threads: int | None = None,
                   endpoint_decisions: EndpointDecision | Mapping[str, EndpointDecision] = MODEL_DECISIONS,
                   jobs: int = 1, require_signed: bool | None = None, scheduler: str | None = None) -> EvaluationResult:
    """Score ``model`` on every record of ``dataset`` (or a seeded sample of ``max_records``), records read and
    predicted in ``jobs`` processes (``model_pool``; the same results as one), or on the workers of the Dask cluster
    at ``scheduler`` (``model_cluster``: the CNN there uses the model's own thread setting). The CNN uses ``threads`` CPU threads
    (default: every core) shared out between the processes, instead of the training workers' setting. On
    rhythm-annotated records each endpoint both configs declare is also called as ``ecgpipe predict`` calls it
    (``endpoint_decisions``) and scored over the whole recordings."""
    if max_records is not None and not (isinstance(max_records, (int, np.integer)) and max_records >= 1):
        raise PipelineError(f"max_records (--max-records) must be a whole number of at least 1, got {max_records!r}")
    if changed := differences_warning(model.environment):
        warnings.warn(changed, UserWarning, stacklevel=2)
    cnn_threads = max(1, (threads or os.cpu_count() or 1) // jobs)
    model = with_cnn_threads(model, cnn_threads)
    mapped = np.array([dataset.class_names.index(mapping[c]) if c in mapping else len(dataset.class_names)
                       for c in model.class_names], dtype=np.int64)
    excluded = set(dataset.segments.exclude_labels)
    from ecgpipe.plan import unlisted_files, without_files

    todo, n_absent, left_out = [], 0, []  # left_out: rows of the records not in the evaluation, named (as a run does)
    for db in dataset.databases:
        folder = database_dir(dataset, db, data_dir, download=False)
        settings = leads_as_predict_reads(dataset.database(db), model)
        names = selected_records(dataset, db, folder)
        table = record_labels(settings, folder, names, dataset.label_to_class, excluded) if settings.labelled_per_record else None
        if table:
            check_subject_column(settings, table, folder)  # the rule without the column: refused, as by a run
        labels = table.labels if table else None
        absent = set(without_files(dataset, db, folder, names))  # listed by the CSV, no file: counted, not failed
        n_absent += len(absent)
        left_out += [{"record": f"{db}/{r}", "label": labels.get(r, "") if labels else "",
                      "note": f"absent: {settings.labels_csv} lists it, no file of it in the folder"} for r in sorted(absent)]
        left_out += [{"record": name, "label": "", "note": f"unlisted: files in the folder, no row in {settings.labels_csv}: "
                      "not in the dataset"} for name in unlisted_files(dataset, db, folder)]  # else it vanishes unsaid
        todo += [(db, folder, settings, r, labels, table.subject_of(r, settings.same_subject) if table else None)
                 for r in names if r not in absent]
    if max_records is not None and len(todo) > max_records:
        keep = np.sort(np.random.default_rng(seed).choice(len(todo), max_records, replace=False))
        todo = [todo[i] for i in keep]
    accounting = {"records": len(todo), "scored": 0, "excluded_label": 0, "unknown_label": 0, "no_label_row": 0, "failed": 0,
                  "training_records": 0, "training_patients": 0, "absent": n_absent,
                  # records with files that the labels CSV does not list: not in the dataset, named in its records table
                  "unlisted": len(left_out) - n_absent,
                  # windows of scored records not scored per window: their centre in no configured, kept rhythm
                  "windows_without_reference": 0,
                  # scored records read anyway (a checksum mismatch read with 'warn'...): their rows' notes say what
                  "read_with_warnings": 0}
    trained_on = set(model.training.get("subjects", []))  # "<db>:<subject>" of the model's training windows
    rows, failed, failed_paths = [], [], []
    y_rec, p_rec, g_rec, y_win, p_win, g_win = [], [], [], [], [], []
    scored: list[tuple[str, bool]] = []  # per scored record: its subject, whether the model learnt from it
    # endpoints are matched by name; the note below says when the model's classes do not map onto the dataset's
    shared = [name for name in model.config.endpoints if name in dataset.endpoints]
    given = endpoint_decisions if isinstance(endpoint_decisions, Mapping) else dict.fromkeys(shared, endpoint_decisions)
    decisions = {name: given.get(name) or EndpointDecision.of(model.config.endpoints[name]) for name in shared}
    tallies: dict[str, dict[str, RecordingTally]] = {name: {} for name in shared}  # endpoint -> subject -> tally
    # what this process decides (a label to score, a subject), then each record read and predicted, in order
    plan = [_what_to_score(item, dataset, excluded) for item in todo]
    work = [(f"{item[0]}/{item[3]}", item[1], item[0], item[3], item[2], label, dataset.segments.nan_policy,
             None if item[4] is not None else decisions) for item, (label, _, problem) in zip(todo, plan) if problem is None]
    if scheduler:  # the database folders as the workers find them, whatever their working directory
        from ecgpipe.model_cluster import in_order_on_cluster

        work = [(shown, folder.absolute(), *rest) for shown, folder, *rest in work]
        predicted = in_order_on_cluster(read_and_predict, work, model, scheduler, reads=tuple(sorted({str(w[1]) for w in work})),
                                        killed=lambda item, why: (None, None, (why, item[0]), False), say=progress)
    else:
        predicted = in_order(read_and_predict, work, model, jobs, require_signed, cnn_threads,
                             killed=lambda item, why: (None, None, (why, item[0]), False))
    started, last = time.monotonic(), time.monotonic()
    for i, ((db, _folder, _settings, name, labels, _), (label, subject, problem)) in enumerate(zip(todo, plan)):
        if problem is not None:  # not scored (its label), or its subject rule failed on it
            rows.append({"record": f"{db}/{name}", "label": label or "", "note": problem[1]})
            if problem[0] == "failed":
                failed.append({"record": f"{db}/{name}", "error": problem[2]})
                failed_paths.append({"record": f"{db}/{name}", "error": problem[2]})
            accounting[problem[0]] += 1
            continue
        rec, pred, err, seen = next(predicted)
        if err is not None:  # one bad record never stops the others
            err, record_path = err
            failed.append({"record": f"{db}/{name}", "error": err})
            # the error names the record's path: grouped by kind with that path taken out (failure_kinds)
            failed_paths.append({"record": record_path, "error": err})
            accounting["failed"] += 1
            rows.append({"record": f"{db}/{name}", "label": label or "", "note": f"failed: {err}"})
            continue
        accounting["scored"] += 1
        accounting["training_records"] += seen
        if pred.read_warnings:  # said by this process (a worker process's or cluster worker's log is not seen)
            accounting["read_with_warnings"] += 1
            for warning in pred.read_warnings if accounting["read_with_warnings"] <= PER_RECORD_LINES else []:
                print(f"ecgpipe: warning: {warning}", file=sys.stderr)
        scored.append((subject, seen))
        ok = pred.window_classes >= 0
        if labels is not None:
            truth = dataset.class_names.index(dataset.label_to_class[label])
            voted = pred.record_class
            guess = int(mapped[model.class_names.index(voted)]) if voted is not None else len(dataset.class_names)
            y_rec.append(truth), p_rec.append(guess), g_rec.append(subject)
            rows.append({"record": f"{db}/{name}", "subject": subject, "label": dataset.class_names[truth], "model_class": voted or "",
                         "predicted": ([*dataset.class_names, UNMAPPED])[guess], "windows": int(ok.sum()), "in_training": seen,
                         "note": pred.note})  # shorter than one window, flat leads: how it was scored
        else:
            centres = pred.window_starts_s + model.config.segments.length_s / 2
            ref = reference_at(rec, dataset, centres)
            use = ok & (ref >= 0)
            y_win += ref[use].tolist()
            p_win += mapped[pred.window_classes[use]].tolist()
            g_win += [subject] * int(use.sum())
            accounting["windows_without_reference"] += int((ok & (ref < 0)).sum())
            rows.append({"record": f"{db}/{name}", "subject": subject, "label": "", "model_class": "", "predicted": "",
                         "windows": int(use.sum()), "in_training": seen, "note": pred.note})
            labels_of = window_labels(rec.episodes, rec.fs, pred.window_starts_s, model.config.segments.length_s,
                                      dataset.segments.exclude_labels) if tallies else None
            for endpoint, by_subject in tallies.items():
                by_subject.setdefault(subject, RecordingTally()).add_record(pred.endpoint_calls[endpoint], pred.window_starts_s, model.config.segments.length_s,
                                 pred.stride_s, labels_of, rec.episodes, rec.fs, endpoint_labels(dataset, endpoint))
        if time.monotonic() - last > 15:
            last = time.monotonic()
            rate = (i + 1) / (last - started)
            progress(f"evaluate: {i + 1}/{len(todo)} records ({rate:.2g}/s, ETA {(len(todo) - i - 1) / rate:.0f} s)")
    predicted.close()  # its worker processes end here, not when this function returns
    # a patient is new when none of its records is one the model learnt from and it is none of the model's patients;
    # another record of a patient the model learnt from (mitdb 202 beside 201) is no new patient either
    known_subjects = {s for s, seen in scored if seen or s in trained_on}
    accounting["training_patients"] = sum(not seen and s in known_subjects for s, seen in scored)
    new_rec, new_win = [g not in known_subjects for g in g_rec], [g not in known_subjects for g in g_win]
    results = {}
    for key, unit, y, p, g, new in [("records", "record", y_rec, p_rec, g_rec, new_rec),
                                    ("windows", "window", y_win, p_win, g_win, new_win)]:
        if y:
            results[key] = score(np.array(y), np.array(p), np.array(g), dataset, mapping, unit)
        if any(new) and not all(new):  # the model's own patients among them: the external test is what is left
            keep = np.array(new)
            results[f"{key}_new_patients"] = score(np.array(y)[keep], np.array(p)[keep], np.array(g)[keep], dataset,
                                                   mapping, f"{unit}, new patients only")
    if not results:
        counts = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in accounting.items() if n)
        why = f"; failed: {failure_kinds(failed_paths, rest='not shown')}" if failed else ""
        raise EcgpipeError(f"evaluate: no record of {list(dataset.databases)} could be scored ({counts}){why}")
    return EvaluationResult.model_validate({
        "model": model.path, "model_digest": model.digest, "model_preset": model.config.name,
        "model_classes": model.class_names, "dataset_config": dataset.name, "databases": list(dataset.databases),
        "dataset_classes": dataset.class_names, "mapping": mapping, "accounting": accounting, "failed": failed,
        "software_differences": numeric_differences(model.environment),
        "results": results, "records": rows + left_out, "wall_s": time.monotonic() - started,
        "recordings": {name: {**recordings_json(by_subject, known_subjects), "width": decisions[name].width, "penalty": decisions[name].penalty,
                              "detector": name in model.detectors, **_endpoint_classes(name, model, dataset, mapping)}
                       for name, by_subject in tallies.items() if y_win},
    })


def _what_to_score(item: tuple, dataset: PipelineConfig, excluded: set[str]) -> tuple[str | None, str | None, tuple | None]:
    """(label, subject, problem) of one record: problem = (accounting key, the row's note, error) when it is not
    scored (its label excluded, unknown or missing) or its subject rule fails on it (failed)."""
    db, folder, settings, name, labels, csv_subject = item
    label = labels.get(name) if labels is not None else None
    if labels is not None and (not label or label in excluded or label not in dataset.label_to_class):
        reason = "no_label_row" if not label else "excluded_label" if label in excluded else "unknown_label"
        why = reason.replace("_", " ")
        if not label:  # the run's own words for a missing or empty label (a CSV's row, or a header's label line)
            try:
                check_record_label(os.path.join(str(folder), name) if folder else f"{db}/{name}", label, settings, set(), set())
            except RecordError as err:
                why = err.problem
        return label, None, (reason, f"not scored: {why}", None)
    try:  # intervals are bootstrapped over the dataset's subjects (its config says who is one patient)
        return label, subject_id(db, name, settings.same_subject, settings.subject, settings.subject_pattern, csv_subject), None
    except (EcgpipeError, ValueError) as err:
        return label, None, ("failed", f"failed: {err}", str(err))


def read_and_predict(model: TrainedModel, shown: str, folder: Path, db: str, name: str, settings, label: str | None,
                     nan_policy: str, decisions) -> tuple:
    """(record without its samples, prediction, None, whether it is a training recording) of one record, or
    (None, None, (error, the record path it names), False): run in a worker process by ``evaluate --jobs``. The dataset's policy for missing
    samples (its config describes its records), not the training data's; per record (CSV labels) only the classes
    are scored (``decisions`` None), per window the endpoints too, as predict calls them."""
    rec = None
    injected_death("evaluate", shown)
    try:  # what is read anyway is in the prediction's read_warnings: said by the process that reports
        rec = read_record(folder, db, name, settings, nan_policy=nan_policy, record_label=label,
                          n_leads=model.config.segments.n_leads, warn=False)
        pred = predict_loaded(model, rec, smooth=1, endpoint_decisions=decisions)
        # a record the model learnt from is no external test: counted and flagged, the report says so
        seen = training_recording(model, str(folder / name)) is not None
    except PREDICTION_RECORD_ERRORS as err:  # as text: not every error survives pickling back from a worker
        read_anyway = "".join(f"; read anyway: {note}" for note in (rec.notes if rec is not None else []))
        return None, None, (one_record_error(err, shown) + read_anyway, getattr(err, "record_path", shown)), False
    return dataclasses.replace(rec, signals=rec.signals[:, :0]), pred, None, seen  # the samples are not sent back


def recordings_json(by_subject: dict[str, RecordingTally], known_subjects: set[str]) -> dict:
    """One endpoint over whole recordings, every subject's, and under ``new_patients`` the same over the new
    patients alone when the model's own patients are among them (the external test is what is left)."""
    doc = subjects_json(by_subject)
    new = {s: tally for s, tally in by_subject.items() if s not in known_subjects}
    if new and len(new) < len(by_subject):
        doc["new_patients"] = subjects_json(new)
    return doc


def _endpoint_classes(name: str, model: TrainedModel, dataset: PipelineConfig, mapping: dict[str, str]) -> dict:
    """An endpoint both configs declare: its classes on each side, and a note when the model's classes, mapped, are
    not the dataset's (the detector then answers another question than the reference asks)."""
    model_classes = list(model.config.endpoints[name].classes)
    dataset_classes = list(dataset.endpoints[name].classes)
    mapped = sorted({mapping[c] for c in model_classes if c in mapping})
    note = "" if mapped == sorted(dataset_classes) else (
        f"the model's {name} ({', '.join(model_classes)}) maps to {', '.join(mapped) or 'no dataset class'}, "
        f"not to the dataset's {name} ({', '.join(dataset_classes)})")
    return {"model_classes": model_classes, "dataset_classes": dataset_classes, "note": note}


def accounting_words(accounting: dict) -> str:
    """'records: records 17, scored 14, ...' and, apart, the windows of scored records in no configured rhythm and
    the records read with a warning."""
    records = {k: v for k, v in accounting.items() if k not in ("windows_without_reference", "read_with_warnings")}
    windows, warned = accounting.get("windows_without_reference"), accounting.get("read_with_warnings")
    return ("records: " + ", ".join(f"{k} {v}" for k, v in records.items())
            + (f"; windows not scored (their centre in no configured rhythm): {windows}" if windows else "")
            + (f"; scored records read with a warning (their notes in evaluation_records.csv; the first {PER_RECORD_LINES} "
               f"warned about): {warned}" if warned else ""))


def independence_warning(accounting: dict) -> str:
    """Why scored records are no independent test of the model (its own recordings, or its patients'), or ''."""
    parts = []
    if accounting.get("training_records"):
        parts.append(f"{accounting['training_records']} scored record(s) are among the model's training recordings "
                     "(the same signal files, whatever their name or header)")
    if accounting.get("training_patients"):
        parts.append(f"{accounting['training_patients']} other scored record(s) are of patients the model was "
                     "trained on (same subject id: same database, same subject rule)")
    return "; ".join(parts) + ": this is not an independent test" if parts else ""


def render_markdown(ev: EvaluationResult) -> str:
    lines = [f"# ecgpipe external validation: {ev.model_preset} model on {ev.dataset_config}", "",
             f"- model: `{ev.model}` (sha256 `{ev.model_digest[:16]}...`), classes {', '.join(ev.model_classes)}",
             f"- dataset: {', '.join(ev.databases)}, classes {', '.join(ev.dataset_classes)}",
             *([f"- software that differs from the model's training: {', '.join(ev.software_differences)}"]
               if ev.software_differences else []),
             "- class mapping (model -> dataset): " + ", ".join(f"{k} -> {v}" for k, v in ev.mapping.items())
             + f"; any other model class -> {UNMAPPED}",
             f"- {accounting_words(ev.accounting)}", ""]
    if warning := independence_warning(ev.accounting):
        lines += [f"**Warning: {warning}.**", ""]
    for key, r in ev.results.items():
        lines += [f"## Per {r['unit']} ({r['n']})", "", f"accuracy {r['accuracy']:.3f}, macro-F1 {r['macro_f1']:.3f} "
                  "(over the dataset classes present; a class no model class maps to cannot be predicted)", "",
                  "| class | predictable | precision (PPV) | recall (sensitivity) | specificity | F1 | support |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for c, m in r["per_class"].items():
            spec = "-" if m["specificity"] is None else f"{m['specificity']:.3f}"
            lines.append(f"| {c} | {'yes' if m['predictable'] else 'no'} | {m['precision']:.3f} | {m['recall']:.3f} | {spec} | "
                         f"{m['f1']:.3f} | {m['support']} |")
        lines += ["", "| annotated \\ predicted | " + " | ".join(r["confusion_columns"]) + " |",
                  "|---|" + "---:|" * len(r["confusion_columns"])]
        lines += [f"| {c} | " + " | ".join(map(str, row)) + " |" for c, row in zip(ev.dataset_classes, r["confusion_matrix"])]
        if r["endpoints"]:
            # a goal is a promise about new patients: not judged on results the model's own patients are in
            judged = key.endswith("_new_patients") or not warning
            header, rows = endpoint_table(r["endpoints"], None if judged else "no verdict: the model's own patients are among these")
            over = f"{r['n_subjects']} {r['subject_word']}s" if "n_subjects" in r else "records"  # older files: records
            lines += ["", f"Clinical endpoints (95 % bootstrap over {over}):", "", "| " + " | ".join(header) + " |",
                      ENDPOINT_ALIGN] + ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    if ev.recordings:
        lines += ["## Endpoints over whole recordings, as `ecgpipe predict` calls them", "", RECORDINGS_HOW, "",
                  "| " + " | ".join(RECORDING_HEADER) + " |", RECORDING_ALIGN]
        label = lambda name, r: f"{name} (model: {' + '.join(r['model_classes'])}; dataset: {' + '.join(r['dataset_classes'])})"  # noqa: E731
        lines += ["| " + " | ".join(row) + " |" for row in recording_rows(ev.recordings, label)]
        new = {name: {**r, **r["new_patients"]} for name, r in ev.recordings.items() if "new_patients" in r}
        lines += ["| " + " | ".join(row) + " |" for row in recording_rows(new, lambda n, r: f"{label(n, r)}, new patients only")]
        lines += [""] + [f"**Note: {r['note']}.**" for r in ev.recordings.values() if r["note"]]
        lines += [("**The rows without 'new patients only' include the records of the model's own patients (above).**"
                   if new else "**These include the records of the model's own patients (above).**") if warning else "", ""]
    if ev.failed:
        lines += ["## Failed records", ""] + [f"- `{f['record']}`: {f['error']}" for f in ev.failed] + [""]
    if left_out := not_in_dataset(ev):
        shown = left_out[:100]
        lines += ["## Records not in the evaluation", ""] + [f"- `{r['record']}`: {r['note']}" for r in shown]
        lines += [f"- ... and {len(left_out) - len(shown)} more (all in evaluation_records.csv)"] if len(left_out) > len(shown) else []
        lines.append("")
    return "\n".join(lines)


def not_in_dataset(ev: EvaluationResult) -> list[dict]:
    """The records rows of those a labels CSV lists without files, and of those with files it does not list."""
    return [r for r in ev.records if r.get("note", "").startswith(("absent:", "unlisted:"))]


def leads_as_predict_reads(settings, model: TrainedModel):
    """A dataset's database settings, with the leads the model learnt from (``ecgpipe predict``'s choice: the
    training databases' lead names) wherever its config names none: the default, channel 0, is V5 in mitdb 114, whose
    MLII the model learnt, and the "external" numbers measured another lead than predict reads."""
    update = {k: training_leads(model.config, k) for k in ("lead", "second_lead") if k not in settings.model_fields_set}
    return settings.model_copy(update=update) if update else settings


def write_outputs(ev: EvaluationResult, out: Path, take_lock: bool = True) -> None:
    """evaluation_records.csv, evaluation.md and evaluation.json (last: it says the set is there), replacing an earlier
    evaluation's as one set: a full disk or a kill leaves that one whole; under ``out``'s lock (``LockHeld`` while
    another run, prediction or evaluation holds it: each writes its whole set, never a mix), unless the caller holds
    it (``take_lock=False``: ``ecgpipe evaluate`` holds it from before the evaluation)."""
    buf = io.StringIO()
    # every record of the dataset, once: scored ones with their prediction, the others with why not
    writer = csv.DictWriter(buf, fieldnames=["record", "subject", "label", "model_class", "predicted", "windows",
                                             "in_training", "note"])
    writer.writeheader()
    writer.writerows(ev.records)
    with output_lock(Location(str(out))) if take_lock else contextlib.nullcontext():  # (none on an object store)
        Location(out).write_files({"evaluation_records.csv": buf.getvalue().encode(), "evaluation.md": render_markdown(ev).encode(),
                                   "evaluation.json": json.dumps(ev.to_json(), indent=2).encode()})
