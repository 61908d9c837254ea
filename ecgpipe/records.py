"""Reading WFDB records and their rhythm episodes, with errors that name the record and the problem.

A record is read with ``wfdb`` from ``<data_dir>/<database>/<record>.{hea,dat,atr}``. Before any sample is used the
reader checks what a broken copy would get wrong: header present and parseable, sampling rate as expected, the wanted
lead present, every sample there (length and the header's 16-bit checksum), annotations present, no NaNs. Each check
raises :class:`RecordError`, which the pipeline reports per record instead of letting one bad file spoil the run.
"""

from __future__ import annotations

import os
import posixpath
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import wfdb

from ecgpipe.config import DatabaseSettings
from ecgpipe.databases import leaves_its_folder
from ecgpipe.edf import ANNOTATION_LABEL, read_edf_annotations, read_edf_header
from ecgpipe.edf import ANNOTATOR as EDF_ANNOTATOR
from ecgpipe.errors import PipelineError, RecordError, may_pass
from ecgpipe.keys import edf_record_file, header_lines, is_multi_segment
from ecgpipe.leads import choose_leads, not_ecg_note
from ecgpipe.wfdb_signals import (
    empty_signal_file,
    inferred_length,
    millivolts_per_unit,
    multi_segment_signals,
    named_signals,
    samples_per_frame,
    signals_mv,
)


@dataclass(frozen=True)
class RhythmEpisode:
    """A stretch of one rhythm: samples ``[start, end)`` at the record's own sampling rate."""

    label: str
    start: int
    end: int

    @property
    def n_samples(self) -> int:
        return self.end - self.start


@dataclass
class EcgRecord:
    database: str
    record: str
    path: str  # record path without extension
    fs: float
    leads: list[str]  # the chosen leads, first lead first
    signals: np.ndarray  # (n_leads, n_samples), physical units (mV), float64
    episodes: list[RhythmEpisode]
    n_nan: int = 0
    # a lead stored at several samples per frame is read at fs = frame rate x this; its annotation times count frames
    samples_per_frame: int = 1
    # what was read anyway, in words (a longer signal file, checksum = 'warn'): a run's report lists them
    notes: list[str] = field(default_factory=list)

    @property
    def lead(self) -> str:
        """The first lead (the one rhythm features and QRS detection use)."""
        return self.leads[0]

    @property
    def signal(self) -> np.ndarray:
        """The first lead's samples, 1-D."""
        return self.signals[0]


def clean_aux_note(note: str) -> str:
    # MIT-BIH aux notes carry a trailing NUL ("(AFIB\x00"); whitespace also occurs in other databases.
    return note.replace("\x00", "").strip()


def rhythm_episodes(samples, symbols, aux_notes, sig_len: int) -> list[RhythmEpisode]:
    """Rhythm episodes from annotations: each ``+`` annotation whose aux note starts with ``(`` opens an episode that
    lasts until the next rhythm annotation or the end of the record; one whose note is ``)`` closes the open episode
    without opening another (Icentia11k marks each rhythm's end so: the stretch up to the next ``(`` is unlabelled).
    Samples before the first one (the unlabelled lead-in) belong to no episode. Zero-length episodes are dropped."""
    changes = [
        (int(s), note)
        for s, sym, a in zip(samples, symbols, aux_notes)
        if sym == "+" and a and ((note := clean_aux_note(a)).startswith("(") or note == ")")
    ]
    changes.sort(key=lambda c: (c[0], c[1] != ")"))  # at one sample a ')' closes the old rhythm before a '(' opens one
    episodes = []
    for i, (start, label) in enumerate(changes):
        end = changes[i + 1][0] if i + 1 < len(changes) else sig_len
        start, end = max(start, 0), min(end, sig_len)
        if end > start and label != ")":
            episodes.append(RhythmEpisode(label, start, end))
    return episodes


def read_episodes(path: str, annotator: str, sig_len: int) -> list[RhythmEpisode]:
    """Rhythm episodes of the record at ``path`` from its ``annotator`` file (e.g. ``atr``)."""
    if problem := annotation_file_cut_short(f"{path}.{annotator}"):
        raise RecordError(path, problem)
    try:
        ann = wfdb.rdann(path, annotator)
    except Exception as exc:
        if may_pass(exc):  # the disk's hiccup, not the record's fault: retried as such
            raise
        raise RecordError(path, f"unreadable annotation file {path}.{annotator}: {type(exc).__name__}: {exc}") from None
    aux = ann.aux_note if ann.aux_note is not None else [""] * len(ann.sample)
    return rhythm_episodes(ann.sample, ann.symbol, aux, sig_len)


def annotation_file_cut_short(ann_file: str) -> str | None:
    """What is wrong with a WFDB annotation file that is empty or cut short, else None. The format is 16-bit words
    ending with a zero word (WFDB's end of file): wfdb reads a file cut at an even byte without a word, and the record
    would lose its last rhythm changes (the last episode then runs to the record's end, mislabelling what follows)."""
    try:
        size = os.path.getsize(ann_file)
        with open(ann_file, "rb") as fh:
            fh.seek(max(size - 2, 0))
            last = fh.read(2)
    except FileNotFoundError:
        return None  # said by the caller, where a missing file is an error
    except OSError as exc:
        if may_pass(exc):  # the disk's hiccup, not the record's fault: retried as such
            raise
        return f"unreadable annotation file {ann_file}: {type(exc).__name__}: {exc}"
    if size == 0:
        return f"annotation file {ann_file} is empty"
    if size % 2 or last != b"\0\0":
        return (f"annotation file {ann_file} is cut short ({size} bytes, {'an odd number' if size % 2 else 'no end-of-file word'}: "
                "a WFDB annotation file is 16-bit words ending with two zero bytes): an interrupted download or copy? "
                "Fetch it again")
    return None


# The files a record is made of: a name written with one of them ("A00001.hea" in a labels CSV made from a file
# listing) means the record, never a record of that name (WFDB record names have no dot)
RECORD_FILE_SUFFIXES = (".hea", ".dat", ".mat", ".edf")


def record_name(entry: str) -> str:
    """A record's name as a RECORDS line or a labels CSV gives it: stripped, without a record file's suffix, its
    folders with '/' (a list written on Windows) and without './' (one record, one name: one subject by folder)."""
    entry = entry.strip().replace("\\", "/")
    entry = posixpath.normpath(entry) if "/" in entry else entry
    for suffix in RECORD_FILE_SUFFIXES:
        if entry.lower().endswith(suffix) and len(entry) > len(suffix):
            return entry[: -len(suffix)]
    return entry


def list_records(db_dir: str | Path, _depth: int = 0) -> list[str]:
    """Record names from the database's RECORDS file (one per line, PhysioNet's layout; a record in a subfolder is
    ``<folder>/<record>``, relative to the database folder; a name written with its file's suffix, ``100.hea``,
    means the record ``100``; a line ending in ``/`` names a folder with a RECORDS file of its own, as PhysioNet's
    hierarchical databases list ``p00/p000020/``), each once, in the file's order; lines starting with ``#`` are
    comments."""
    records_file = Path(db_dir) / "RECORDS"
    if not records_file.is_file():
        raise FileNotFoundError(
            f"{records_file} not found: a database folder needs a RECORDS file listing its records, one per line"
        )
    # utf-8-sig: a RECORDS file saved by a Windows editor starts with a byte-order mark, which would otherwise stick
    # to the first record's name (and that record would be "missing")
    try:
        lines = records_file.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:  # UTF-16 from a Windows editor, a Latin-1 name
        raise PipelineError(f"{records_file}: not UTF-8 text ({exc}): save it as UTF-8, one record name per line") from None
    names = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):  # a hand-made index's comments: no record starts so
            continue
        if any(c in line for c in "#,;") and not _has_record_files(db_dir, record_name(line)):  # ("rec #1" has files)
            line = re.split(r"\s#", line, maxsplit=1)[0]  # a comment after the name (a hand-made index's)
            if "," in line or ";" in line:  # a CSV given as the index: its rows would be records "A00001,N"
                raise PipelineError(f"{records_file}, line {line_no}: {line.strip()!r}: RECORDS lists one record name "
                                    "per line (labels go in a labels CSV: databases.<db>.labels_csv)")
        name = record_name(line)
        if leaves_its_folder(name):  # its windows would be stored outside the run's store, or as another database's
            raise PipelineError(f"{records_file}, line {line_no}: record {line.strip()!r} is outside the database folder: "
                                "RECORDS names records relative to its folder, without '..' or a leading '/'")
        if line.strip().replace("\\", "/").endswith("/") and _depth < 4:  # a folder: its own RECORDS, names prefixed
            names += [f"{name}/{inner}" for inner in list_records(Path(db_dir) / name, _depth + 1)]
        else:
            names.append(name)
    return list(dict.fromkeys(names))  # a record listed twice is one record (its windows would count twice)


def _has_record_files(db_dir: str | Path, name: str) -> bool:
    """Whether a record of that name has a header or an EDF file in ``db_dir``."""
    return os.path.isfile(os.path.join(str(db_dir), f"{name}.hea")) or bool(edf_record_file(db_dir, name))


def without_segments(folder: str | Path, names: list[str]) -> list[str]:
    """``names`` (records of ``folder``) less those that are segments of a multi-segment record among them: MIMIC's
    folders hold a record's header and its segments' headers side by side, and a segment is read as part of its
    record, not as a record of its own."""
    parts: set[str] = set()
    for name in names:
        try:
            lines = header_lines(os.path.join(str(folder), f"{name}.hea"))
        except OSError:
            continue
        if is_multi_segment(lines):  # its segments are named relative to its own folder
            parts.update(posixpath.join(posixpath.dirname(name), line[0]) for line in lines[1:])
    return [name for name in names if name not in parts]



def read_record(
    db_dir: str | Path,
    database: str,
    record: str,
    settings: DatabaseSettings,
    nan_policy: str = "error",
    require_annotations: bool = True,
    record_label: str | None = None,
    n_leads: int = 1,
    warn: bool = True,
) -> EcgRecord:
    """Read one lead (or ``n_leads``) of one record and its rhythm episodes, validating everything on the way.
    With ``require_annotations=False`` (prediction on new records) a record without annotations has no episodes;
    with ``record_label`` (a database labelled per record) the whole record is one episode of that label.
    A record with no WFDB header but an EDF/EDF+ file ``<record>.edf`` is read from that file (``ecgpipe.edf``); its
    labels come from the database's CSV, from a WFDB annotation file beside it as for a WFDB record, or with
    ``annotator = "edf+"`` from the file's own annotations (``edf_episodes``).
    What is read anyway (a signal file longer than its header says, a checksum mismatch with ``checksum = "warn"``) is
    in the record's ``notes``, and with ``warn`` (WFDB records) a warning too."""
    path = os.path.join(str(db_dir), record)
    notes: list[str] = []
    header_file = path + ".hea"
    edf_file = edf_record_file(db_dir, record)
    if edf_file:
        return _read_edf(edf_file, path, database, record, settings, nan_policy, require_annotations, record_label, n_leads)
    if not os.path.isfile(header_file):
        raise RecordError(path, f"header file {header_file} not found, nor an EDF file {path}.edf (missing record?)")
    try:
        header = wfdb.rdheader(path)
    except Exception as exc:  # wfdb raises many types for a bad header
        if may_pass(exc):  # the disk's hiccup, not the record's fault: retried as such
            raise
        name = os.path.basename(record)
        if not re.fullmatch(r"[-\w]+", name):  # WFDB's record-line syntax: the header is fine, the name is not
            legal = re.sub(r"[^-\w]", "_", name)
            raise RecordError(path, f"record name {name!r} cannot be read by WFDB, whose record names have only letters, "
                                    f"digits, '_' and '-': rename the record's files (and the name on the first line of "
                                    f"{header_file}), e.g. to {legal!r}") from None
        raise RecordError(path, f"malformed header {header_file}: {type(exc).__name__}: {exc}") from None
    if isinstance(header, wfdb.MultiRecord):  # PhysioNet's multi-segment records (MIMIC's waveforms)
        _check_rate(path, float(header.fs), database, settings)
        leads, signals = multi_segment_signals(path, header, settings, n_leads, notes)
    else:
        named_signals(header)
        record_line = header_lines(header_file)[0]
        if len(record_line) > 3 and record_line[3] == "0":  # WFDB's "unspecified", which wfdb-python reads as 0 samples
            raise RecordError(path, f"its header's record line gives a signal length of 0 ({' '.join(record_line)!r}), "
                                    "which wfdb cannot read: write the record's length in that field (or, where no base "
                                    f"time or date follows it, leave it out: it is then taken from the signal file), in {header_file}")
        if header.sig_name and not header.sig_len:  # optional on the record line: wfdb reads the whole file
            header.sig_len = inferred_length(path, header)
        if not header.sig_name or not header.sig_len:
            raise RecordError(path, empty_signal_file(path, header) or f"malformed header {header_file}: no signals or no signal length")
        if len(record_line) < 3:  # the rate is optional in WFDB too: a default the header does not say
            notes.append(f"{path}: its header gives no sampling frequency: read at WFDB's default of {float(header.fs):g} Hz")
        try:
            channels = choose_leads(list(header.sig_name), settings, n_leads)
        except LookupError as exc:
            raise RecordError(path, str(exc)) from None
        _check_rate(path, float(header.fs) * samples_per_frame(header, channels[0]), database, settings, len(record_line) < 3)
        leads, signals = [header.sig_name[c] for c in channels], signals_mv(path, header, channels, settings, notes)
        notes += [f"{path}: {n}" for n in [not_ecg_note(list(header.sig_name), channels, [*settings.lead, *settings.second_lead])] if n]
    n_nan = int(np.isnan(signals).sum())
    if n_nan and nan_policy == "error":
        lead, first = next((i, np.flatnonzero(np.isnan(s))) for i, s in enumerate(signals) if np.isnan(s).any())
        where = (" (samples in the gaps between its segments have no signal: nan_policy = \"drop\" in [segments] "
                 "drops the windows they touch)") if isinstance(header, wfdb.MultiRecord) else (
                 " (nan_policy = \"drop\" in [segments] drops the windows they touch and uses the others)")
        raise RecordError(path, f"{n_nan} NaN samples in lead {leads[lead]} (first at sample {int(first[0])}){where}")
    for note in notes if warn else []:
        warnings.warn(note, UserWarning, stacklevel=2)
    # leads stored at several samples per frame are read at their own rate; annotation times count frames (WFDB's)
    spf = signals.shape[1] // int(header.sig_len)
    episodes = record_episodes(path, settings.annotator, int(header.sig_len), record_label, require_annotations)
    return EcgRecord(
        database=database,
        record=record,
        path=path,
        fs=float(header.fs) * spf,
        leads=leads,
        signals=signals,
        episodes=[RhythmEpisode(e.label, e.start * spf, e.end * spf) for e in episodes] if spf > 1 else episodes,
        n_nan=n_nan,
        samples_per_frame=spf,
        notes=notes,
    )


def _check_rate(path: str, fs: float, database: str, settings: DatabaseSettings, wfdb_default: bool = False) -> None:
    if settings.fs not in (None, "any") and abs(fs - float(settings.fs)) > 1e-6:
        given = " (its header gives none: WFDB's default)" if wfdb_default else ""
        raise RecordError(path, f"sampling rate {fs:g} Hz{given}, but database {database} is configured for {float(settings.fs):g} Hz "
                                f"(a database whose records differ: fs = \"any\")")


def record_episodes(path: str, annotator: str, sig_len: int, record_label: str | None, require_annotations: bool) -> list[RhythmEpisode]:
    """A record's rhythm episodes: its per-record label as one episode, else its annotation file's rhythm changes."""
    ann_file = f"{path}.{annotator}"
    if record_label is not None:
        return [RhythmEpisode(record_label, 0, sig_len)]
    if not os.path.isfile(ann_file) and not require_annotations:
        return []
    if not os.path.isfile(ann_file):
        raise RecordError(path, f"annotation file {ann_file} not found")
    return read_episodes(path, annotator, sig_len)


def _read_edf(edf_file: str, path: str, database: str, record: str, settings: DatabaseSettings, nan_policy: str,
              require_annotations: bool, record_label: str | None, n_leads: int) -> EcgRecord:
    rec = read_edf_record(edf_file, settings, nan_policy, n_leads)
    _check_rate(edf_file, rec.fs, database, settings)
    n = rec.signals.shape[1]
    if record_label is None and settings.annotator == EDF_ANNOTATOR:
        episodes = edf_episodes(edf_file, rec.fs, n)
    else:
        episodes = record_episodes(path, settings.annotator, n, record_label, require_annotations)
    return replace(rec, database=database, record=record, path=path, episodes=episodes)


def edf_episodes(path: str, fs: float, n_samples: int) -> list[RhythmEpisode]:
    """Labelled episodes from an EDF+ file's own annotations (``annotator = "edf+"``): each annotation with a
    duration is an episode of its text, as EDF+ scorings label stretches of time (sleep stages, rhythms); instants
    (no duration) mark events, not rhythms, and are left out. Episodes are clipped to the recording."""
    episodes = []
    for a in read_edf_annotations(path, read_edf_header(path)):
        if not a.duration_s or a.duration_s <= 0:
            continue
        start, end = round(a.onset_s * fs), min(n_samples, round((a.onset_s + a.duration_s) * fs))
        if 0 <= start < end:
            episodes.append(RhythmEpisode(a.text.strip(), start, end))
    return sorted(episodes, key=lambda e: e.start)


def read_edf_record(path: str, settings: DatabaseSettings, nan_policy: str = "error", n_leads: int = 1) -> EcgRecord:
    """One EDF/EDF+ file as an ``EcgRecord`` without rhythm episodes, validated as ``records.read_record`` validates
    a WFDB record (errors are ``RecordError`` naming the file)."""
    if not os.path.isfile(path):
        raise RecordError(path, "EDF file not found")
    header = read_edf_header(path)
    if header.reserved.startswith("EDF+D"):
        raise RecordError(path, "EDF+D (discontinuous) recording: its data records are not contiguous in time; "
                                "export it as continuous EDF+C or EDF")
    if header.n_records < 0:
        raise RecordError(path, "its header does not give the number of data records (-1: the recording was not closed)")
    try:
        per_record = [int(n) for n in header.signals["samples_per_record"]]
    except ValueError:
        raise RecordError(path, "not an EDF file: its samples per data record are not numbers") from None
    expected = header.header_bytes + 2 * header.n_records * sum(per_record)
    size = os.path.getsize(path)
    if size < expected:
        raise RecordError(path, f"truncated EDF file: {size} bytes, its header implies {expected}")
    # the annotation channel keeps its place (channel numbers in --lead count it) but can never be chosen
    labels = [label if label != ANNOTATION_LABEL else f"({ANNOTATION_LABEL})" for label in header.labels]
    try:
        channels = choose_leads(labels, settings, n_leads)
    except LookupError as exc:
        raise RecordError(path, str(exc)) from None
    if any(header.labels[c] == ANNOTATION_LABEL for c in channels):
        raise RecordError(path, f"channel {channels} is EDF+'s annotation channel, not a signal")
    if len({per_record[c] for c in channels}) > 1:
        raise RecordError(path, f"leads {[labels[c] for c in channels]} are sampled at different rates")
    if not header.record_s > 0:
        raise RecordError(path, f"data records of {header.record_s} s: no sampling rate")
    data = np.fromfile(path, dtype="<i2", count=header.n_records * sum(per_record), offset=header.header_bytes)
    data = data.reshape(header.n_records, sum(per_record))
    offsets = np.concatenate([[0], np.cumsum(per_record)])
    leads = []
    for c in channels:
        digital = data[:, offsets[c] : offsets[c + 1]].ravel().astype(np.float64)
        try:
            pmin, pmax = header.number("physical_min", c), header.number("physical_max", c)
            dmin, dmax = header.number("digital_min", c), header.number("digital_max", c)
        except ValueError:
            raise RecordError(path, f"lead {labels[c]}: its physical or digital range is not a number") from None
        if dmax <= dmin or pmax == pmin:
            raise RecordError(path, f"lead {labels[c]}: empty range (digital {dmin:g} to {dmax:g}, physical {pmin:g} to {pmax:g})")
        physical = (digital - dmin) * ((pmax - pmin) / (dmax - dmin)) + pmin
        leads.append(physical * millivolts_per_unit(path, labels[c], header.signals["unit"][c]))
    signals = np.vstack(leads)
    n_nan = int(np.isnan(signals).sum())  # EDF has no NaN; kept for symmetry with WFDB records
    if n_nan and nan_policy == "error":
        raise RecordError(path, f"{n_nan} NaN samples")
    notes = [f"{path}: {n}" for n in [not_ecg_note(labels, channels, [*settings.lead, *settings.second_lead])] if n]
    notes += [f"{path}: lead {labels[c]}: no physical unit in its EDF header: read as mV (a lead exported in uV would "
              "be a thousand times too large)" for c in channels if not header.signals["unit"][c].strip()]
    if (extra := os.path.getsize(path) - header.header_bytes - 2 * header.n_records * sum(per_record)) > 0:
        notes.append(f"{path}: holds {extra} bytes more than its header's {header.n_records} data records; those read")
    return EcgRecord(database="new", record=os.path.basename(path), path=path, fs=per_record[channels[0]] / header.record_s,
                     leads=[labels[c] for c in channels], signals=signals, episodes=[], n_nan=n_nan, notes=notes)
