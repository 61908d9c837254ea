"""Per-record labels from a CSV file: the PhysioNet/CinC Challenge 2017 layout (short single-lead records of varying
length, and ``REFERENCE.csv`` with one ``record,label`` row per record, e.g. ``A00001,N``); or from a comment line of
each record's header: the PhysioNet/CinC Challenge 2020/2021 layout (``#Dx: 164889003,59118001``, SNOMED CT codes).

Such a record is one episode spanning the whole recording; its windows all carry the record's label. A record's
prediction aggregates its windows' predictions by the classifier's record rule (``ecgpipe.aggregate``: a majority
vote, or the mean of their class probabilities), or a record-level classifier reads features of the whole record.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ecgpipe.config import DatabaseSettings
from ecgpipe.databases import canonical_record, leaves_its_folder
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
        return self.subjects.get(canonical_record(record, same_subject))


def read_record_labels(db_dir: str | Path, csv_name: str) -> dict[str, str]:
    """``record -> label`` from ``db_dir/csv_name`` (``read_labels_table``)."""
    return read_labels_table(db_dir, csv_name).labels


# first cells of a header row that names the record column otherwise (no record is named so), and second cells of one
# that names the label column otherwise (no rhythm is labelled so): ``ecg_id,rhythm`` is a header, not a record
HEADER_WORDS = {"record", "records", "record_name", "recording", "file", "filename", "file_name", "name", "id", "record_id"}
LABEL_WORDS = {"label", "labels", "rhythm", "class", "diagnosis", "target", "annotation", "category", "dx"}


def _looks_like_header(cells: list[str]) -> bool:
    first = cells[0].lower()
    return first in HEADER_WORDS or first.endswith("_id") or (len(cells) > 1 and cells[1].lower() in LABEL_WORDS)


def read_labels_table(db_dir: str | Path, csv_name: str) -> LabelsTable:
    """``db_dir/csv_name`` as ``record,label`` rows; an optional header row (the first that is not blank) naming a
    ``record`` and a ``label`` column, and a ``subject`` one (the patient, for ``subject = 'labels_csv'``), in any
    order beside other columns (``record,label,age,sex``: the others are not read), is skipped; one of other column
    names (``filename,rhythm``) is refused. A record written with its file's suffix (``A00001.hea``, from a file
    listing) is the record ``A00001``. A row whose label cell is empty gives the record the label ``""`` (it fails by
    name, ``check_record_label``, rather than stopping the run)."""
    path = Path(db_dir) / csv_name
    if not path.is_file():
        raise LabelsError(f"{path}: labels file not found (databases.<db>.labels_csv)")
    labels: dict[str, str] = {}
    subjects: dict[str, str] = {}
    columns = ["record", "label"]  # what the rows hold, in order (a header may name more: only these are read)
    at = {"record": 0, "label": 1}  # where each is in a row
    header = False
    # utf-8-sig: a CSV saved by Excel starts with a byte-order mark, which would stick to the first record's name
    try:
        text = path.read_bytes().decode("utf-8-sig")  # newlines as they are, as the csv module wants them
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{path}: not UTF-8 text ({exc})") from None
    first = True
    # skipinitialspace: `"A00002", "N"` (a space after each comma) is read as A00002 and N, not with its quotes
    for line_no, row in enumerate(csv.reader(io.StringIO(text, newline=""), skipinitialspace=True), start=1):
        cells = [c.strip() for c in row]
        while cells and not cells[-1]:  # an Excel export's trailing comma is no column
            cells.pop()
        if not cells or cells[0].startswith("#"):  # a comment line, as in RECORDS (no record name starts so)
            continue
        lowered = [c.lower() for c in cells]
        if first and "record" in lowered and "label" in lowered:
            columns = [c for c in ("record", "label", "subject") if c in lowered]
            at, header, first = {c: lowered.index(c) for c in columns}, True, False
            continue
        if first and _looks_like_header(cells):  # a header of other names would become a record "filename"
            raise LabelsError(f"{path}, line {line_no}: {row!r} looks like a header row; ecgpipe reads one with a "
                              "'record' and a 'label' column (and 'subject', for subject = 'labels_csv'), others beside "
                              "them not read: rename its columns so")
        first = False
        width = max(at.values()) + 1
        # without a header a row is record,label: a third cell would be read as nothing, silently; a row of one cell
        # (a semicolon- or tab-separated file, a list of records) is no row of this file
        malformed = not header and not (len(cells) == width or (len(cells) == 1 and len(row) >= width))
        cells += [""] * (width - len(cells))  # the trailing cells an export leaves empty (popped above)
        if malformed or not cells[at["record"]]:  # an empty subject cell: said where subjects are used
            raise LabelsError(f"{path}, line {line_no}: expected '{','.join(columns)}', got {row!r}")
        record, label = record_name(cells[at["record"]]), cells[at["label"]]  # no label: the record fails by name
        if leaves_its_folder(record):  # its windows would be stored outside the run's store
            raise LabelsError(f"{path}, line {line_no}: record {cells[at['record']]!r} is outside the database folder: "
                              "records are named relative to it, without '..' or a leading '/'")
        if record in labels and labels[record] != label:
            raise LabelsError(f"{path}, line {line_no}: record {record!r} has two labels ({labels[record]!r}, {label!r})")
        if "subject" in at and cells[at["subject"]]:
            if record in subjects and subjects[record] != cells[at["subject"]]:
                raise LabelsError(f"{path}, line {line_no}: record {record!r} has two subjects ({subjects[record]!r}, "
                                  f"{cells[at['subject']]!r})")
            subjects[record] = cells[at["subject"]]
        labels[record] = label
    if not labels:
        raise LabelsError(f"{path}: no '{','.join(columns)}' rows")
    return LabelsTable(labels, subjects)


def header_codes(header_path: str | Path, field: str) -> list[str] | None:
    """The values of the header comments ``#<field>: a,b,...`` (field matched without regard to case), in order and
    each once, from every such line (a header with two ``#Dx:`` lines that disagree gets both lines' codes, which
    ``label_of_codes`` then judges, instead of the first line's alone); None when the header has no such line.
    Raises ``OSError`` for an unreadable header."""
    codes = None
    with open(header_path, errors="replace") as fh:
        for line in fh:
            text = line.strip()
            if not text.startswith("#") or ":" not in text:
                continue
            name, _, value = text.lstrip("#").partition(":")
            if name.strip().lower() == field.lower():
                codes = (codes or []) + [v.strip() for v in value.split(",") if v.strip()]
    return None if codes is None else list(dict.fromkeys(codes))


def label_of_codes(codes: list[str], label_to_class: dict[str, str], excluded: set[str]) -> str:
    """One label for a record whose header gives several codes: an excluded code if it has one (the record is left
    out, as an excluded label); else, when the codes that name a class all name the same one, the first of them;
    codes that name no class, or two classes, stay together comma-joined: a label of no class, so the record yields
    no window and the report says why (``classes_named``)."""
    if out := [c for c in codes if c in excluded]:
        return out[0]
    named = [c for c in codes if c in label_to_class]
    if named and len({label_to_class[c] for c in named}) == 1:
        return named[0]
    return ",".join(codes)


def classes_named(label: str, label_to_class: dict[str, str]) -> dict[str, list[str]]:
    """class -> the codes of a comma-joined header label that name it (``label_of_codes``)."""
    out: dict[str, list[str]] = {}
    for code in label.split(","):
        if code in label_to_class:
            out.setdefault(label_to_class[code], []).append(code)
    return out


def header_labels_table(folder: str | Path, records: list[str], field: str, label_to_class: dict[str, str],
                        excluded: set[str]) -> LabelsTable:
    """Each record's label from its header's ``#<field>:`` line (``label_of_codes``). A record without the line, or
    whose header cannot be read, has none: it fails by name when its task reads it."""
    labels = {}
    for record in records:
        try:
            codes = header_codes(Path(folder) / f"{record}.hea", field)
        except OSError:
            codes = None
        if codes:
            labels[record] = label_of_codes(codes, label_to_class, excluded)
    return LabelsTable(labels, {})


def record_labels(settings: DatabaseSettings, folder: str | Path, records: list[str], label_to_class: dict[str, str],
                  excluded: set[str]) -> LabelsTable:
    """The per-record labels of a database: its labels CSV, or its headers' comment field; empty for a database of
    rhythm annotations."""
    if settings.labels_header:
        return header_labels_table(folder, records, settings.labels_header, label_to_class, excluded)
    if settings.labels_csv:
        return read_labels_table(folder, settings.labels_csv)
    return LabelsTable({}, {})


def check_subject_column(settings: DatabaseSettings, table: LabelsTable, folder: str | Path) -> None:
    """A database whose subjects come from its labels CSV needs the CSV's ``subject`` column (refused before any
    work, naming the file); a CSV that names subjects the config does not use is said to leak (each record then
    stands for its own patient in the grouped folds)."""
    path = Path(folder) / str(settings.labels_csv)
    if settings.subject == "labels_csv" and not table.subjects:
        raise LabelsError(f"{path}: subject = 'labels_csv' needs a 'subject' column (header 'record,label,subject')")
    # (a record that same_subject maps to another is that one's patient, or another database's: said where it is read)
    if settings.subject == "labels_csv" and (empty := [r for r in table.labels if r not in table.subjects and r not in settings.same_subject]):
        raise LabelsError(f"{path}: {len(empty)} record(s) have an empty 'subject' cell (e.g. {', '.join(empty[:3])}): "
                          "subject = 'labels_csv' needs each record's patient")
    if table.subjects and settings.subject != "labels_csv" and settings.subject_pattern is None:
        warnings.warn(f"{path} names each record's subject, but databases.<db>.subject is {settings.subject!r}: the "
                      "grouped folds ignore that column (subject = 'labels_csv' uses it)", UserWarning, stacklevel=2)


def check_record_label(record_path: str, label: str | None, settings: DatabaseSettings, known: set[str],
                       excluded: set[str]) -> None:
    """A record of a CSV-labelled database needs a row in the CSV, with a label of a configured class (or excluded);
    one labelled by its header needs the header's line (its codes may name no class: it then yields no window)."""
    if settings.labels_header:
        if label is None and not os.path.isfile(f"{record_path}.hea"):  # absent (or an EDF record): not a missing line
            raise RecordError(record_path, f"no WFDB header {record_path}.hea to read its '#{settings.labels_header}:' "
                                           "label line from (databases.<db>.labels_header labels WFDB records only)")
        if label is None:
            raise RecordError(record_path, f"no '#{settings.labels_header}:' comment line with a label in its header "
                                           "(databases.<db>.labels_header)")
        return
    csv_name = settings.labels_csv
    if label is None:
        raise RecordError(record_path, f"no row for this record in {csv_name}")
    if not label:
        raise RecordError(record_path, f"its row in {csv_name} has no label")
    if label not in known and label not in excluded:
        alike = [k for k in sorted(known | excluded) if k.lower() == label.lower()]  # 'n' for 'N': say which was meant
        raise RecordError(
            record_path,
            f"label {label!r} from {csv_name} is in no class ({', '.join(sorted(known))}) and not in segments.exclude_labels"
            + (f" (labels are matched with their case: {alike[0]!r}?)" if alike else ""),
        )


def near_labels(labels, configured, excluded) -> list[tuple[str, str]]:
    """(label, configured label) for each of a record's rhythm labels that is neither configured nor excluded but
    matches a configured one except for case or spaces (``(afib`` beside ``(AFIB``): labels are matched as written,
    so its windows are not used, which deserves a word rather than silence."""
    def folded(label: str) -> str:
        return "".join(label.split()).lower()

    by_folded = {folded(c): c for c in configured}
    return [(label, by_folded[folded(label)]) for label in sorted(set(labels))
            if label not in configured and label not in excluded and folded(label) in by_folded]
