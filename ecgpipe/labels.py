"""Per-record labels from a CSV file: the PhysioNet/CinC Challenge 2017 layout (short single-lead records of varying
length, and ``REFERENCE.csv`` with one ``record,label`` row per record, e.g. ``A00001,N``).

Such a record is one episode spanning the whole recording; its windows all carry the record's label. A record's
prediction aggregates its windows' predictions by majority vote (``ecgpipe.aggregate.record_votes``).
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from ecgpipe.config import DatabaseSettings
from ecgpipe.errors import EcgpipeError
from ecgpipe.records import RecordError, record_name


class LabelsError(EcgpipeError, ValueError):
    """The labels CSV is missing or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class LabelsTable:
    """A labels CSV: each record's label, and its subject where the CSV has a ``subject`` column."""

    labels: dict[str, str]
    subjects: dict[str, str]

    def subject_of(self, record: str, same_subject: dict[str, str]) -> str | None:
        """The ``subject`` cell of ``record``'s row, looked up by its canonical record (a record that ``same_subject``
        names as another's is that one's row); None without the column or the row."""
        return self.subjects.get(same_subject.get(record, record))


def read_record_labels(db_dir: str | Path, csv_name: str) -> dict[str, str]:
    """``record -> label`` from ``db_dir/csv_name`` (``read_labels_table``)."""
    return read_labels_table(db_dir, csv_name).labels


def read_labels_table(db_dir: str | Path, csv_name: str) -> LabelsTable:
    """``db_dir/csv_name`` as ``record,label`` rows; an optional header row ``record,label`` is skipped, a header
    ``record,label,subject`` asks for a third column on every row (the patient, for ``subject = 'labels_csv'``). A
    record written with its file's suffix (``A00001.hea``, from a file listing) is the record ``A00001``."""
    path = Path(db_dir) / csv_name
    if not path.is_file():
        raise LabelsError(f"{path}: labels file not found (databases.<db>.labels_csv)")
    labels: dict[str, str] = {}
    subjects: dict[str, str] = {}
    columns = ["record", "label"]
    # utf-8-sig: a CSV saved by Excel starts with a byte-order mark, which would stick to the first record's name
    try:
        text = path.read_bytes().decode("utf-8-sig")  # newlines as they are, as the csv module wants them
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{path}: not UTF-8 text ({exc})") from None
    for line_no, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        cells = [c.strip() for c in row]
        if not any(cells):
            continue
        if line_no == 1 and [c.lower() for c in cells] in (["record", "label"], ["record", "label", "subject"]):
            columns = [c.lower() for c in cells]
            continue
        if len(cells) != len(columns) or not all(cells):
            raise LabelsError(f"{path}, line {line_no}: expected '{','.join(columns)}', got {row!r}")
        cells[0] = record_name(cells[0])
        if cells[0] in labels and labels[cells[0]] != cells[1]:
            raise LabelsError(f"{path}, line {line_no}: record {cells[0]!r} has two labels ({labels[cells[0]]!r}, {cells[1]!r})")
        if cells[0] in subjects and subjects[cells[0]] != cells[2]:
            raise LabelsError(f"{path}, line {line_no}: record {cells[0]!r} has two subjects ({subjects[cells[0]]!r}, {cells[2]!r})")
        labels[cells[0]] = cells[1]
        if len(cells) == 3:
            subjects[cells[0]] = cells[2]
    if not labels:
        raise LabelsError(f"{path}: no '{','.join(columns)}' rows")
    return LabelsTable(labels, subjects)


def check_subject_column(settings: DatabaseSettings, table: LabelsTable, folder: str | Path) -> None:
    """A database whose subjects come from its labels CSV needs the CSV's ``subject`` column (refused before any
    work, naming the file); a CSV that names subjects the config does not use is said to leak (each record then
    stands for its own patient in the grouped folds)."""
    path = Path(folder) / str(settings.labels_csv)
    if settings.subject == "labels_csv" and not table.subjects:
        raise LabelsError(f"{path}: subject = 'labels_csv' needs a 'subject' column (header 'record,label,subject')")
    if table.subjects and settings.subject != "labels_csv" and settings.subject_pattern is None:
        warnings.warn(f"{path} names each record's subject, but databases.<db>.subject is {settings.subject!r}: the "
                      "grouped folds ignore that column (subject = 'labels_csv' uses it)", UserWarning, stacklevel=2)


def check_record_label(record_path: str, label: str | None, csv_name: str, known: set[str], excluded: set[str]) -> None:
    """A record of a CSV-labelled database needs a row in the CSV, with a label of a configured class (or excluded)."""
    if label is None:
        raise RecordError(record_path, f"no row for this record in {csv_name}")
    if label not in known and label not in excluded:
        raise RecordError(
            record_path,
            f"label {label!r} from {csv_name} is in no class ({', '.join(sorted(known))}) and not in segments.exclude_labels",
        )
