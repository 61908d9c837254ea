"""A WFDB record's samples in millivolts, checked: every signal file present and long enough, as many samples as the
header says, each lead's checksum, its physical unit as the header writes it, leads stored at several samples per
frame, and multi-segment records laid end to end. Errors are ``RecordError`` naming the record and the problem; what
is read anyway goes to the caller's ``notes``.
"""

from __future__ import annotations

import os

import numpy as np
import wfdb

from ecgpipe.config import DatabaseSettings
from ecgpipe.errors import RecordError, may_pass
from ecgpipe.keys import header_lines
from ecgpipe.leads import choose_leads

# Bits per stored sample of the WFDB signal formats (format 212 packs two 12-bit samples into 3 bytes).
_FORMAT_BITS = {"8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12}


def _expected_bytes(header, fname: str) -> int | None:
    """Size a signal file must have for the header's sig_len, or None for formats this check does not know."""
    idx = [i for i, f in enumerate(header.file_name) if f == fname]
    fmts = {header.fmt[i] for i in idx}
    if len(fmts) != 1 or next(iter(fmts)) not in _FORMAT_BITS:
        return None
    per_frame = sum((header.samps_per_frame[i] if header.samps_per_frame else 1) for i in idx)
    offset = (header.byte_offset[idx[0]] or 0) if header.byte_offset else 0
    return offset + -(-header.sig_len * per_frame * _FORMAT_BITS[next(iter(fmts))] // 8)


# WFDB headers name each signal's physical unit; an empty one means millivolts (WFDB's default). "âµv" is a UTF-8
# "µV" read as Latin-1 (an EDF header, ASCII by its standard, written by a recorder that did not keep to it)
MILLIVOLTS_PER = {"mv": 1.0, "v": 1000.0, "volt": 1000.0, "volts": 1000.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3,
                  "âµv": 1e-3, "microvolt": 1e-3, "microvolts": 1e-3, "millivolt": 1.0, "millivolts": 1.0}


def named_signals(header) -> None:
    """Name the signals a header leaves without a description (optional in WFDB: ``x.dat 16 200/mV``) by their
    channel, ``ch0``, ``ch1``...: wfdb gives them None, which no lead choice can match or print."""
    if header.sig_name:
        header.sig_name = [name if name else f"ch{i}" for i, name in enumerate(header.sig_name)]


def signal_fields(path: str) -> list[list[str]]:
    """The fields of each signal line of the header at ``path`` (``.hea`` added), as written."""
    return header_lines(f"{path}.hea")[1:]


def written_units_and_gains(path: str, n_signals: int) -> tuple[list[str | None], list[float | None]]:
    """Each signal's physical unit and ADC gain as its header writes them (``gain(baseline)/unit``): wfdb reads the
    unit "µV" as "V" (a thousand-fold error on a microvolt lead, silently) and an uncalibrated gain of 0 as its
    default of 200. None where a field is not written."""
    units: list[str | None] = [None] * n_signals
    gains: list[float | None] = [None] * n_signals
    for i, fields in enumerate(signal_fields(path)[:n_signals]):
        if len(fields) > 2:
            gain, _, unit = fields[2].partition("/")
            units[i] = unit or None
            try:
                gains[i] = float(gain.split("(")[0])
            except ValueError:
                pass
    return units, gains


def empty_signal_file(path: str, header) -> str | None:
    """The problem of a record whose (first) signal file holds no sample (empty, or no longer than its byte offset),
    else None."""
    data_file = os.path.join(os.path.dirname(path), (header.file_name or [""])[0])
    if not os.path.isfile(data_file):
        return None
    size, offset = os.path.getsize(data_file), (header.byte_offset[0] or 0) if header.byte_offset else 0
    return None if size > offset else f"signal file {data_file} holds no sample ({size} bytes{f', offset {offset}' if offset else ''})"


def samples_per_frame(header, channel: int) -> int:
    """How many samples of a lead each frame holds (1 but in multi-frequency records)."""
    return (header.samps_per_frame or [1] * (channel + 1))[channel] or 1


def inferred_length(path: str, header) -> int | None:
    """Samples per signal of a header that does not give them (the record line's length is optional in WFDB), from
    its one signal file's size; None when there are several files or a format this does not know."""
    if len(set(header.file_name or [])) != 1 or len(set(header.fmt or [])) != 1 or header.fmt[0] not in _FORMAT_BITS:
        return None
    data_file = os.path.join(os.path.dirname(path), header.file_name[0])
    try:
        size = os.path.getsize(data_file)
    except OSError:
        return None  # the signal file's own check names it
    per_frame = sum(header.samps_per_frame or [1] * len(header.file_name))
    offset = (header.byte_offset[0] or 0) if header.byte_offset else 0
    return max(size - offset, 0) * 8 // (per_frame * _FORMAT_BITS[header.fmt[0]]) or None  # a file shorter than its offset: none


def millivolts_per_unit(path: str, lead: str, unit: str | None) -> float:
    """Factor from a lead's physical unit to millivolts; a unit that is not a voltage is a RecordError."""
    if not unit or not unit.strip():
        return 1.0
    factor = MILLIVOLTS_PER.get(unit.strip().lower())
    if factor is None:
        raise RecordError(path, f"lead {lead} is in {unit!r}: ecgpipe reads voltages (mV, V or uV)")
    return factor


def multi_segment_signals(path: str, header, settings: DatabaseSettings, n_leads: int,
                           notes: list[str]) -> tuple[list[str], np.ndarray]:
    """The chosen leads of a multi-segment record (``<record>/<n>`` on its header's first line) in millivolts, its
    segments laid end to end: each segment is a single-segment record read and checked as one (``_signals_mv``); a
    gap (``~``) and a segment without a chosen lead give NaN there. The leads are chosen among the layout segment's
    signals (a first segment of length 0, variable layout) or else the first segment's (fixed layout)."""
    folder = os.path.dirname(path)
    segments = list(zip(header.seg_name, header.seg_len))
    if header.sig_len is None:  # optional on the record line, as in a single-segment header: its segments' sum
        header.sig_len = sum(int(n) for _, n in segments)
    if any(int(length) < 0 for _, length in segments) or sum(int(n) for _, n in segments) != header.sig_len:
        raise RecordError(path, f"malformed header {path}.hea: its segments' lengths do not add up to its "
                                f"{header.sig_len} samples")
    headers = {}
    for name, _ in segments:
        if name != "~" and name not in headers:
            segment = os.path.join(folder, name)
            if not os.path.isfile(segment + ".hea"):
                raise RecordError(path, f"segment {name}: header file {segment}.hea not found")
            try:
                headers[name] = wfdb.rdheader(segment)
                named_signals(headers[name])
            except Exception as exc:
                if may_pass(exc):  # the disk's hiccup, not the record's fault: retried as such
                    raise
                raise RecordError(path, f"segment {name}: malformed header {segment}.hea: {type(exc).__name__}: {exc}") from None
    names = next((list(headers[n].sig_name or []) for n, _ in segments if n != "~"), [])
    try:
        leads = [names[c] for c in choose_leads(names, settings, n_leads)]
    except LookupError as exc:
        raise RecordError(path, str(exc)) from None
    signals = np.full((len(leads), header.sig_len), np.nan)
    start = 0
    for name, length in segments:
        length = int(length)
        if name != "~" and length:
            seg_header = headers[name]
            if seg_header.sig_len != length or abs(float(seg_header.fs) - float(header.fs)) > 1e-6:
                raise RecordError(path, f"segment {name}: {seg_header.sig_len} samples at {seg_header.fs} Hz, but "
                                        f"{path}.hea gives it {length} at {header.fs} Hz")
            present = [(i, list(seg_header.sig_name).index(lead)) for i, lead in enumerate(leads) if lead in seg_header.sig_name]
            if present:
                segment_mv = signals_mv(os.path.join(folder, name), seg_header, [c for _, c in present], settings, notes)
                if segment_mv.shape[1] != length:
                    raise RecordError(path, f"segment {name}: its leads are stored at several samples per frame, "
                                            "which ecgpipe reads in single-segment records only")
                for (i, _), lead_mv in zip(present, segment_mv):
                    signals[i, start : start + length] = lead_mv
        start += length
    return leads, signals


def signals_mv(path: str, header, channels: list[int], settings: DatabaseSettings, notes: list[str]) -> np.ndarray:
    """The ``channels`` of the single-segment record at ``path`` (its parsed ``header``) in millivolts, (n_leads,
    n_samples; times the samples per frame of leads stored at several, ``record_rate``), after checking that every sample is there: signal files present and long enough, the samples read
    as many as the header says, each lead's checksum. What is read anyway is appended to ``notes``."""
    for fname in set(header.file_name):
        # a header names its signal files relative to its own folder, which is the database folder only for a flat
        # database: PhysioNet's RECORDS also list records in subfolders (ptbdb "patient001/s0010_re")
        data_file = os.path.join(os.path.dirname(path), fname)
        if not os.path.isfile(data_file):
            raise RecordError(path, f"signal file {data_file} not found")
        expected = _expected_bytes(header, fname)
        actual = os.path.getsize(data_file)
        if expected is not None and actual < expected:
            raise RecordError(path, f"truncated signal file {data_file}: {actual} bytes, the header implies {expected}")
        if expected is not None and actual > expected and settings.checksum != "off":
            # wfdb reads the header's sig_len samples and drops the rest: a header cut short (its checksum 0, as
            # CinC's are, checks nothing) would lose the end of the record without a word. A note, not an error:
            # WFDB lets a header name part of a longer file (segments of one file, MIMIC-style layouts built so)
            times = (f", {actual // expected} times as many: a signal line missing from the header?"
                     if expected and actual % expected == 0 else "")
            notes.append(f"{path}: signal file {data_file} holds {actual - expected} bytes more than the header's "
                         f"{header.sig_len} samples imply ({expected}{times}); the header's samples read (a header cut "
                         "short loses the rest; checksum = 'off' silences this)")
    # a lead stored at several samples per frame (a multi-frequency record) is read at its own rate: wfdb would
    # average each frame's samples into one (half the rate at 2 per frame, checksums then never matching)
    per_frame = {samples_per_frame(header, c) for c in channels}
    if len(per_frame) > 1:
        raise RecordError(path, f"leads {[header.sig_name[c] for c in channels]} are stored at different numbers of "
                                f"samples per frame ({sorted(per_frame)}): choose leads of one rate")
    spf = per_frame.pop()
    try:
        rec = wfdb.rdrecord(path, channels=channels, physical=False, smooth_frames=spf == 1)
    except Exception as exc:
        if may_pass(exc):  # the disk's hiccup, not the record's fault: retried as such
            raise
        raise RecordError(path, f"unreadable signal: {type(exc).__name__}: {exc}") from None
    digital = rec.d_signal if spf == 1 else (np.column_stack(rec.e_d_signal) if rec.e_d_signal else None)
    if digital is None or digital.shape[0] != header.sig_len * spf:
        got = 0 if digital is None else digital.shape[0] // spf
        raise RecordError(path, f"truncated signal: {got} samples read, header says {header.sig_len}")
    # The header's checksum is the 16-bit sum of all samples: it catches truncated or altered signal files
    # that wfdb would otherwise read silently (it pads short format-212 files). A checksum of 0 means "not
    # recorded": PhysioNet ships whole datasets so (CinC 2017). Header init values are not checked (wfdb ignores
    # them, and published headers get them wrong).
    for expected, actual, channel in zip(rec.checksum or [], rec.calc_checksum(expanded=spf > 1), channels):
        if settings.checksum == "off" or not expected or (actual - expected) % 65536 == 0:
            continue
        problem = (f"signal checksum mismatch in lead {header.sig_name[channel]} (header {expected}, data {actual}): "
                   "file truncated or altered")
        if settings.checksum == "warn":
            notes.append(f"{path}: {problem}; read anyway (checksum = 'warn')")
        else:
            raise RecordError(path, problem)
    signals = rec.dac(expanded=False, return_res=64).T if spf == 1 else np.vstack(rec.dac(expanded=True, return_res=64))
    # every lead in millivolts from here on (thresholds such as ecgpipe.units.FLAT_MV and the QRS detector assume it),
    # by the unit the header writes (wfdb's parsed unit turns "µV" into "V")
    units, gains = written_units_and_gains(path, len(header.sig_name))
    for i, channel in enumerate(channels):
        unit = units[channel] if units[channel] is not None else (header.units or [None] * (channel + 1))[channel]
        signals[i] *= millivolts_per_unit(path, header.sig_name[channel], unit)
        if not gains[channel]:  # 0 (uncalibrated) or not written
            why = "ADC gain 0 in its header (uncalibrated)" if gains[channel] == 0 else "no ADC gain in its header"
            notes.append(f"{path}: lead {header.sig_name[channel]}: {why}: read at WFDB's default of 200 units per "
                         "mV, so its amplitudes in mV may be wrong")
    return signals
