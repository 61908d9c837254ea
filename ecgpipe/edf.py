"""EDF and EDF+ recordings for ``ecgpipe predict``: what many clinical recorders and some PhysioNet databases ship.

An EDF file is a text header (Kemp et al. 1992; EDF+: Kemp & Olivan 2003) and then data records of a fixed duration,
each holding every signal's samples as little-endian 16-bit integers, a signal's own number of samples per record.
The chosen leads are read at their own rate and validated like a WFDB record: the file's size against its header,
leads by their labels (the model's lead preferences), every lead in millivolts, NaN per the model's policy. An EDF
file carries no rhythm annotations here, so it is a record to predict, not to train on.

Why not ``wfdb.io.convert.edf.read_edf``: when a file's signals have different rates (every EDF+ file does: its
"EDF Annotations" signal has its own sample count) it resamples every signal to the greatest common divisor of the
rates by averaging, and scales the averaged ones wrongly, so an ECG at 256 Hz beside a 1-Hz signal comes back at 1 Hz.
Reading the one lead needed is a few lines of numpy. Kept apart from ``ecgpipe.records`` (which the training stages
import) so that EDF reading never changes their code version.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ecgpipe.config import DatabaseSettings
from ecgpipe.records import EcgRecord, RecordError, choose_leads, millivolts_per_unit

EDF_EXTENSION = ".edf"
ANNOTATION_LABEL = "EDF Annotations"  # EDF+'s text channel: not a signal
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
        fixed = fh.read(_FIXED_BYTES).decode("ascii", errors="replace")
        try:
            header_bytes, n_records = int(fixed[184:192]), int(fixed[236:244])
            record_s, n_signals = float(fixed[244:252]), int(fixed[252:256])
        except ValueError:
            raise RecordError(path, "not an EDF file: its header's sizes are not numbers") from None
        if len(fixed) < _FIXED_BYTES or header_bytes != _FIXED_BYTES * (n_signals + 1) or n_signals < 1:
            raise RecordError(path, f"not an EDF file: a header of {header_bytes} bytes for {n_signals} signals")
        text = fh.read(header_bytes - _FIXED_BYTES).decode("ascii", errors="replace")
    signals, at = {}, 0
    for name, width in _SIGNAL_FIELDS:
        signals[name] = [text[at + i * width : at + (i + 1) * width].strip() for i in range(n_signals)]
        at += width * n_signals
    return EdfHeader(header_bytes, n_records, record_s, fixed[192:236].strip(), signals)


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
    return EcgRecord(database="new", record=os.path.basename(path), path=path, fs=per_record[channels[0]] / header.record_s,
                     leads=[labels[c] for c in channels], signals=signals, episodes=[], n_nan=n_nan)
