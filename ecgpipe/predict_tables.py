"""The files of ``ecgpipe predict`` that grow record by record, and what a resumed prediction keeps of them.

Each record's rows are appended and flushed as soon as it is done; its records.csv row is written after its
episodes and endpoint rows (and its agreement), so a record with a complete records.csv row has every row written:
that row commits it. ``--resume`` keeps such records, judged against model.json (the same model and options) and
outputs.csv (the same output name: names depend on which records are given, ``predict_outputs.output_names``), and
at the end the files are put back in the order the records were given, byte for byte what an uninterrupted
prediction writes. A process stopped or killed mid-record leaves that record to be predicted again; a machine that
loses power may lose rows the system had not yet written to disk (nothing is fsynced per record).
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecgpipe.errors import PipelineError
from ecgpipe.predict import RecordPrediction
from ecgpipe.predict_outputs import AGREEMENT_PARTIAL, OUTPUT_NAMES, earlier_prediction

HEADERS = {"episodes": ["record", "start_s", "end_s", "duration_s", "class", "label"],
           "endpoints": ["record", "endpoint", "start_s", "end_s", "duration_s"]}
TABLES = ("records", "episodes", "endpoints")  # records.csv first when files are replaced: it commits the others' rows


def table_columns(class_names: list[str], endpoints: list[str]) -> list[str]:
    """records.csv's columns for a model's classes and endpoints."""
    return ["record", "lead", "duration_s", "scored_s", "class", *[f"windows_{n}" for n in class_names],
            *[f"burden_{e}" for e in endpoints], *[f"episodes_{e}" for e in endpoints], "note", "error"]


def _replace(path: Path, rows: list[list]) -> None:
    """``path`` written whole, then renamed into place: a crash keeps the earlier file."""
    part = path.with_name(path.name + ".part")
    with open(part, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    os.replace(part, path)


class PredictionTables:
    """episodes.csv, records.csv and endpoints.csv of ``ecgpipe predict``, each record's rows appended and flushed as
    soon as it is done (``kept``: an earlier prediction's rows, written first): a prediction of 300 000 records
    stopped at the last one keeps every row before it, and no record's prediction is held until the end.

    * episodes.csv: one row per episode of a class;
    * records.csv: one row per record: the lead read (the model's lead preference decides among the record's
      channels), its duration, the seconds its scored windows span (windows with NaN samples
      are not scored), its class, how many windows went to each class, and per endpoint its burden (the share of the
      scored windows where the endpoint is called, of ``scored_s``, not of the whole recording) and how many episodes
      of it endpoints.csv lists. A record that could not be predicted has a row too, empty but for its ``error``, so
      that every record given is accounted for in the file;
    * endpoints.csv: one row per endpoint episode, a run of windows where the endpoint is called."""

    def __init__(self, out: str | Path, class_names: list[str], endpoints: list[str], kept: dict[str, list[list[str]]] | None = None):
        self.out, self.class_names, self.endpoints = Path(out), list(class_names), list(endpoints)
        self.columns = table_columns(class_names, endpoints)
        headers = {"records": self.columns, **HEADERS}
        for name in TABLES:
            _replace(self.out / f"{name}.csv", [headers[name], *(kept or {}).get(name, [])])
        self._files = {name: open(self.out / f"{name}.csv", "a", newline="") for name in TABLES}
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
        self._commit([pred.record, pred.lead, f"{pred.duration_s:.3f}", f"{scored_s:.3f}", pred.record_class,
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

    def in_given_order(self, paths: list[str]) -> None:
        """Rewrite the (closed) tables with their rows in the order of ``paths``, each record's rows as written."""
        rank = {p: i for i, p in enumerate(paths)}
        for name in TABLES:
            header, *rows = read_rows(self.out / f"{name}.csv") or [[]]
            _replace(self.out / f"{name}.csv", [header, *sorted(rows, key=lambda r: rank.get(r[0], len(rank)))])

    def __enter__(self) -> PredictionTables:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_output_names(out: Path, names: dict[str, str], extension: str, failed: set[str] = frozenset()) -> None:
    """outputs.csv: each record (as given) and its annotation file (relative to ``out``), empty for ``failed``
    records (the whole list is written before any record is predicted: what a stopped prediction leaves)."""
    _replace(out / OUTPUT_NAMES, [["record", "annotation"],
                                  *([p, "" if p in failed else f"{n}.{extension}"] for p, n in names.items())])


def earlier_output_names(out: Path) -> dict[str, str]:
    """An earlier prediction's outputs.csv: record path -> its annotation file (empty where it failed)."""
    return dict(tuple(r) for r in read_rows(out / OUTPUT_NAMES)[1:] if len(r) == 2)


@dataclass
class Resumed:
    """What an earlier prediction in the same folder already did, for the records given this time."""

    done: set[str] = field(default_factory=set)  # record paths
    rows: dict[str, list[list[str]]] = field(default_factory=lambda: {t: [] for t in TABLES})  # kept, per table
    agreements: dict[str, dict] = field(default_factory=dict)  # by output name


def resume_from(out: Path, model, options: dict, names: dict[str, str], columns: list[str]) -> Resumed:
    """The records of ``names`` (path -> output name) that an earlier prediction into ``out`` finished with the same
    model and ``options`` (``PredictOptions.to_json()``): a complete records.csv row without error, the same output
    name in outputs.csv, its annotation file, complete episode and endpoint rows (and, with ``compare``, its
    agreement). Nothing when ``out`` holds no earlier prediction; an error when it holds another model's or other
    options'."""
    if not earlier_prediction(out):
        return Resumed()
    note = json.loads((out / "model.json").read_text())
    if note.get("sha256") != model.digest:
        raise PipelineError(f"{out}: --resume: its predictions are from another model ({note.get('model')}, sha256 "
                            f"{str(note.get('sha256'))[:16]}...), not {model.path}: choose another --out, or leave out --resume "
                            "to predict every record again")
    if "options" not in note:
        raise PipelineError(f"{out}: --resume: its model.json does not record the options it was predicted with (a "
                            "prediction before 0.12.0): leave out --resume")
    if note["options"] != options:
        differ = sorted(k for k in options if note["options"].get(k) != options[k])
        raise PipelineError(f"{out}: --resume: its predictions were made with other options ({', '.join(differ)}: "
                            f"{ {k: note['options'].get(k) for k in differ} }): give the same options, or leave out --resume")
    tables = {t: read_rows(out / f"{t}.csv") for t in TABLES}
    expected = {"records": columns, **HEADERS}
    if any(not rows or rows[0] != expected[t] for t, rows in tables.items()):
        return Resumed()  # a table missing or of another layout: nothing is known to be complete
    earlier_names = earlier_output_names(out)
    agreements = _read_agreements(out) if options.get("compare") else {}
    broken = {r[0] for t in HEADERS for r in tables[t][1:] if r and len(r) != len(HEADERS[t])}
    finished = {r[0] for r in tables["records"][1:] if len(r) == len(columns) and r[-1] == ""}
    extension = options["extension"]
    done = {p for p, n in names.items() if p in finished and p not in broken and earlier_names.get(p) == f"{n}.{extension}"
            and (out / f"{n}.{extension}").exists() and (not options.get("compare") or n in agreements)}
    rows = {t: [r for r in table[1:] if r and r[0] in done and (t != "records" or r[-1] == "")] for t, table in tables.items()}
    return Resumed(done, rows, {names[p]: agreements[names[p]] for p in done if names[p] in agreements})


def read_rows(path: Path) -> list[list[str]]:
    """A CSV file's rows; none when it cannot be read."""
    try:
        with open(path, newline="") as fh:
            return list(csv.reader(fh))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def _read_agreements(out: Path) -> dict[str, dict]:
    """Agreements of an earlier prediction: its agreement.json (it finished) and the lines of its partial file."""
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


def rewrite_partial(out: Path, agreements: dict[str, dict] | None) -> None:
    """The partial agreements file holding only the kept records' (none without ``compare``)."""
    if agreements is None:
        (out / AGREEMENT_PARTIAL).unlink(missing_ok=True)
        return
    part = out / f"{AGREEMENT_PARTIAL}.part"
    part.write_text("".join(json.dumps([name, a]) + "\n" for name, a in agreements.items()))
    os.replace(part, out / AGREEMENT_PARTIAL)
