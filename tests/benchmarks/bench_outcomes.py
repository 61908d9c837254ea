"""What a protocol's out-of-fold answers cost the flow process at scale: 0.18.0's columns against 0.17's objects.

    python tests/benchmarks/bench_outcomes.py --records 30000 300000

Synthetic CinC-like answers (three 10-s windows per record, each record its own subject, three classes, five
grouped folds, mean-probability records): for one row and one protocol, the live Python memory (``tracemalloc``)
and the stored JSON of its per-subject and per-record outcomes, and the seconds to read them back from JSON (what
every rerun and ``ecgpipe status`` do with each row's marker), in the form 0.18.0 holds (columns:
``results.SubjectOutcomes``, ``RecordOutcomes``) and in the form 0.17.0 held (one pydantic object per subject and
class and per record: the models below are 0.17.0's, copied). Then report.json holding them: its lines, size and
write time with each column on one line (``report.report_json_text``) against ``json.dumps(indent=2)``'s value per
line. Then the folds' answers as the classify tasks return them (``stages.classification.FoldResult``: arrays,
against the Python lists of 0.17.0). A run holds these for every row and protocol at once (five rows, two
protocols: ten times the figures). One JSON line per size.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ecgpipe.classify import per_subject
from ecgpipe.record_level import record_level_summary
from ecgpipe.report import report_json_text
from ecgpipe.results import RecordLevel, SubjectOutcomes
from ecgpipe.stages.classification import FoldResult

CLASSES = ["N", "A", "O"]


class SubjectRecall017(BaseModel):  # ecgpipe 0.17.0's results.SubjectRecall
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    subject: str
    class_name: str = Field(alias="class")
    n: int
    recall: float
    predicted: dict[str, int]


class RecordOutcome017(BaseModel):  # ecgpipe 0.17.0's results.RecordOutcome
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    record: str
    label: str
    predicted: str
    votes: dict[str, float]
    subject: str = ""
    folds: list[int]


class Outcomes017(BaseModel):
    per_subject: list[SubjectRecall017]
    records: list[RecordOutcome017]


def answers(n_records: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    records = np.repeat(np.array([f"cinc2017/A{i:06d}" for i in range(n_records)]), 3)
    y = np.repeat(rng.integers(0, 3, n_records), 3)
    y_pred = np.where(rng.random(len(y)) < 0.8, y, rng.integers(0, 3, len(y)))
    proba = rng.dirichlet(np.ones(3), len(y))
    fold = np.repeat(rng.integers(0, 5, n_records), 3)
    return y, y_pred, records, proba, fold


def held(build) -> tuple[object, float]:
    """(what ``build()`` returns, its live memory in MiB while held)."""
    gc.collect()
    tracemalloc.start()
    value = build()
    gc.collect()
    live = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    return value, live


def timed(build) -> tuple[object, float]:
    """(what ``build()`` returns, seconds), without tracemalloc's overhead."""
    t = time.perf_counter()
    value = build()
    return value, time.perf_counter() - t


def read_columns(stored: str):
    doc = json.loads(stored)
    return SubjectOutcomes.model_validate(doc["per_subject"]), RecordLevel.model_validate(doc["per_record"])


def measure(n_records: int) -> dict:
    y, y_pred, records, proba, fold = answers(n_records)
    build = lambda: (per_subject(y, y_pred, records, CLASSES),  # noqa: E731
                     record_level_summary(y, y_pred, records, CLASSES, fold, y_proba=proba, subjects=records))
    columns, summary_s = timed(build)
    stored = json.dumps({"per_subject": columns[0].to_json(), "per_record": columns[1].to_json()})
    del columns
    (subjects, records_level), columns_mib = held(lambda: read_columns(stored))
    _, columns_load_s = timed(lambda: read_columns(stored))
    old_stored = json.dumps({"per_subject": subjects.pairs(), "records": records_level.records.rows()})
    _, objects_mib = held(lambda: Outcomes017.model_validate_json(old_stored))
    _, objects_load_s = timed(lambda: Outcomes017.model_validate(json.loads(old_stored)))

    report = {"protocols": {"grouped_by_subject": {"per_subject": subjects.to_json(), "per_record": records_level.to_json()}}}
    columns_text, columns_write_s = timed(lambda: report_json_text(report))  # report.json as 0.18.0 writes it
    indented_text, indented_write_s = timed(lambda: json.dumps(report, indent=2))  # a value per line, as before

    test = np.flatnonzero(fold == 0)  # one fold's answers, as a classify task returns them
    _, arrays_mib = held(lambda: FoldResult(test.copy(), y_pred[test], {}, np.round(proba[test], 6)))
    _, lists_mib = held(lambda: (test.tolist(), y_pred[test].tolist(), np.round(proba[test], 6).tolist()))
    return {
        "bench": "outcomes", "records": n_records, "windows": len(y), "summary_s": round(summary_s, 2),
        "columns_mib": round(columns_mib, 1), "objects_017_mib": round(objects_mib, 1),
        "memory_ratio": round(objects_mib / columns_mib, 1),
        "columns_json_mb": round(len(stored) / 1e6, 1), "objects_017_json_mb": round(len(old_stored) / 1e6, 1),
        "columns_load_s": round(columns_load_s, 2), "objects_017_load_s": round(objects_load_s, 2),
        "report_json": {"lines": len(columns_text.splitlines()), "indented_lines": len(indented_text.splitlines()),
                        "mb": round(len(columns_text) / 1e6, 1), "indented_mb": round(len(indented_text) / 1e6, 1),
                        "write_s": round(columns_write_s, 2), "indented_write_s": round(indented_write_s, 2)},
        "fold_answers_bytes_per_window": {"arrays": round(arrays_mib * 2**20 / len(test), 1),
                                          "lists_017": round(lists_mib * 2**20 / len(test), 1)},
        "note": "one row, one protocol; a run holds every row's and protocol's at once",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, nargs="+", default=[30000, 300000])
    for n in ap.parse_args().records:
        print(json.dumps(measure(n)), flush=True)


if __name__ == "__main__":
    main()
