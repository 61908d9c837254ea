"""EDF and EDF+ recordings for ``ecgpipe predict``: what many clinical recorders and some PhysioNet databases ship.

Read with wfdb's own EDF reader (``wfdb.io.convert.edf.read_edf``) and validated like a WFDB record: the file's size
against its header, the leads chosen by the model's lead preferences, every lead in millivolts, NaN per the model's
policy. An EDF file carries no rhythm annotations here, so it is a record to predict, not to train on. Kept apart from
``ecgpipe.records`` (which the training stages import) so that reading EDF never changes their code version.
"""

from __future__ import annotations

import os

import numpy as np

from ecgpipe.config import DatabaseSettings
from ecgpipe.records import EcgRecord, RecordError, choose_leads, millivolts_per_unit

EDF_EXTENSION = ".edf"
_FIXED_HEADER_BYTES = 256  # then 256 bytes per signal (EDF specification, Kemp et al. 1992)


def is_edf(path: str) -> bool:
    return path.lower().endswith(EDF_EXTENSION)


def _header_field(header: bytes, start: int, width: int) -> str:
    return header[start : start + width].decode("ascii", errors="replace").strip()


def _check_size(path: str) -> None:
    """A file shorter than its header says (a copy cut short) is named, not read as shorter data."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        header = fh.read(_FIXED_HEADER_BYTES)
        try:
            header_bytes = int(_header_field(header, 184, 8))
            n_records = int(_header_field(header, 236, 8))
            n_signals = int(_header_field(header, 252, 4))
        except ValueError:
            raise RecordError(path, "not an EDF file: its header's sizes are not numbers") from None
        fh.seek(_FIXED_HEADER_BYTES + 216 * n_signals)  # each signal's samples per data record, 8 characters
        try:
            per_record = [int(_header_field(fh.read(8), 0, 8)) for _ in range(n_signals)]
        except ValueError:
            raise RecordError(path, "not an EDF file: its samples per data record are not numbers") from None
    if n_records < 0:
        raise RecordError(path, "its header does not give the number of data records (-1: the recording was not closed)")
    expected = header_bytes + 2 * n_records * sum(per_record)
    if size < expected:
        raise RecordError(path, f"truncated EDF file: {size} bytes, its header implies {expected}")


def read_edf_record(path: str, settings: DatabaseSettings, nan_policy: str = "error", n_leads: int = 1) -> EcgRecord:
    """One EDF/EDF+ file as an ``EcgRecord`` without rhythm episodes, validated as ``records.read_record`` validates
    a WFDB record (errors are ``RecordError`` naming the file)."""
    from wfdb.io.convert.edf import read_edf

    if not os.path.isfile(path):
        raise RecordError(path, "EDF file not found")
    _check_size(path)
    try:
        rec = read_edf(path)
    except Exception as exc:  # wfdb raises a bare Exception for a file that is not EDF
        raise RecordError(path, f"unreadable EDF file: {type(exc).__name__}: {exc}") from None
    names = [str(n).strip() for n in rec.sig_name]
    try:
        channels = choose_leads(names, settings, n_leads)
    except LookupError as exc:
        raise RecordError(path, str(exc)) from None
    per_frame = rec.samps_per_frame or [1] * len(names)
    if len({per_frame[c] for c in channels}) > 1:
        raise RecordError(path, f"leads {[names[c] for c in channels]} are sampled at different rates")
    signals = np.asarray(rec.p_signal, dtype=np.float64)[:, channels].T.copy()
    units = rec.units or []
    for i, channel in enumerate(channels):
        signals[i] *= millivolts_per_unit(path, names[channel], units[channel] if channel < len(units) else None)
    n_nan = int(np.isnan(signals).sum())
    if n_nan and nan_policy == "error":
        raise RecordError(path, f"{n_nan} NaN samples")
    return EcgRecord(database="new", record=os.path.basename(path), path=path, fs=float(rec.fs),
                     leads=[names[c] for c in channels], signals=signals, episodes=[], n_nan=n_nan)
