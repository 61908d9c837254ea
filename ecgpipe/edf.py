"""EDF and EDF+ recordings: what many clinical recorders and some PhysioNet databases ship.

An EDF file is a text header (Kemp et al. 1992; EDF+: Kemp & Olivan 2003) and then data records of a fixed duration,
each holding every signal's samples as little-endian 16-bit integers, a signal's own number of samples per record.
This module is the format: the header and its fields. ``records.read_edf_record`` reads a file's chosen leads at
their own rate as an ``EcgRecord``, validated like a WFDB record: the file's size against its header, leads by their
labels (the model's or database's lead preferences), every lead in millivolts, NaN per the policy. A database of
EDF files for training (``records.read_record`` reads ``<record>.edf`` where a record has no WFDB header) takes its
labels from the database's labels CSV, from a WFDB annotation file beside each EDF file, or (``annotator = "edf+"``)
from the file's own EDF+ annotations that have a duration (``read_edf_annotations``).

Why not ``wfdb.io.convert.edf.read_edf``: when a file's signals have different rates (every EDF+ file does: its
"EDF Annotations" signal has its own sample count) it resamples every signal to the greatest common divisor of the
rates by averaging, and scales the averaged ones wrongly, so an ECG at 256 Hz beside a 1-Hz signal comes back at 1 Hz.
Reading the one lead needed is a few lines of numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecgpipe.errors import RecordError

EDF_EXTENSION = ".edf"
ANNOTATION_LABEL = "EDF Annotations"  # EDF+'s text channel: not a signal
ANNOTATOR = "edf+"  # DatabaseSettings.annotator meaning "the EDF+ file's own annotations"
_FIXED_BYTES = 256
# per-signal header fields, each stored for every signal in turn: (name, width in characters)
_SIGNAL_FIELDS = (("label", 16), ("transducer", 80), ("unit", 8), ("physical_min", 8), ("physical_max", 8),
                  ("digital_min", 8), ("digital_max", 8), ("prefiltering", 80), ("samples_per_record", 8),
                  ("reserved", 32))


def is_edf(path: str) -> bool:
    return path.lower().endswith(EDF_EXTENSION)


@dataclass
class EdfHeader:
    header_bytes: int
    n_records: int
    record_s: float  # duration of one data record
    reserved: str  # "EDF+C" (continuous) or "EDF+D" (discontinuous) in EDF+ files, empty in EDF
    signals: dict[str, list[str]]  # per-signal fields by name, one entry per signal

    @property
    def labels(self) -> list[str]:
        return self.signals["label"]

    def number(self, field: str, i: int) -> float:
        return float(self.signals[field][i])


def read_edf_header(path: str) -> EdfHeader:
    """The header of an EDF/EDF+ file; ``RecordError`` naming the file when it is not one."""
    with open(path, "rb") as fh:
        # Latin-1: one character per byte (the fields are fixed widths), and a recorder's "µV" (0xB5) readable
        fixed = fh.read(_FIXED_BYTES).decode("latin-1")
        try:
            header_bytes, n_records = int(fixed[184:192]), int(fixed[236:244])
            record_s, n_signals = float(fixed[244:252]), int(fixed[252:256])
        except ValueError:
            raise RecordError(path, "not an EDF file: its header's sizes are not numbers") from None
        if len(fixed) < _FIXED_BYTES or header_bytes != _FIXED_BYTES * (n_signals + 1) or n_signals < 1:
            raise RecordError(path, f"not an EDF file: a header of {header_bytes} bytes for {n_signals} signals")
        text = fh.read(header_bytes - _FIXED_BYTES).decode("latin-1")
    signals, at = {}, 0
    for name, width in _SIGNAL_FIELDS:
        signals[name] = [text[at + i * width : at + (i + 1) * width].strip() for i in range(n_signals)]
        at += width * n_signals
    return EdfHeader(header_bytes, n_records, record_s, fixed[192:236].strip(), signals)


@dataclass(frozen=True)
class EdfAnnotation:
    onset_s: float  # from the first sample
    duration_s: float | None  # None: an instant
    text: str


def read_edf_annotations(path: str, header: EdfHeader) -> list[EdfAnnotation]:
    """Every annotation of an EDF+ file's "EDF Annotations" channel(s), in file order. Each data record's share of
    the channel holds time-stamped annotation lists (TALs): ``+onset[\x15duration](\x14text)*\x14\x00``; the
    first TAL of a data record only keeps time (no text) and is left out."""
    channels = [i for i, label in enumerate(header.labels) if label == ANNOTATION_LABEL]
    if not channels:
        raise RecordError(path, f"no '{ANNOTATION_LABEL}' channel: not an EDF+ file with annotations")
    per_record = [int(n) for n in header.signals["samples_per_record"]]
    offsets = [0]
    for n in per_record:
        offsets.append(offsets[-1] + 2 * n)
    record_bytes = offsets[-1]
    out, first_record_s = [], None
    with open(path, "rb") as fh:
        fh.seek(header.header_bytes)
        for r in range(header.n_records):
            block = fh.read(record_bytes)
            if len(block) < record_bytes:
                raise RecordError(path, f"truncated EDF file: data record {r} is cut short")
            for c in channels:
                for tal in block[offsets[c] : offsets[c + 1]].split(b"\x00"):
                    fields = tal.decode("utf-8", errors="replace").split("\x14")
                    if len(fields) < 2 or not fields[0]:
                        continue  # padding between and after TALs
                    stamp = fields[0].split("\x15")
                    try:
                        onset = float(stamp[0])
                        duration = float(stamp[1]) if len(stamp) > 1 and stamp[1] else None
                    except ValueError:
                        raise RecordError(path, f"EDF+ annotation with a bad time stamp {fields[0]!r} in data record {r}") from None
                    if first_record_s is None:  # the first data record's time-keeping TAL: where the samples start
                        first_record_s = onset
                    out += [EdfAnnotation(onset, duration, text) for text in fields[1:] if text.strip()]
    # onsets count from the header's start time; the samples from the first data record, which may start later
    start = first_record_s or 0.0
    return [EdfAnnotation(a.onset_s - start, a.duration_s, a.text) for a in out]
