"""Records as PhysioNet ships them: the real CinC 2017 files in ../shared (header checksum 0 in every record, init
values that do not match the first sample in some), read with the same checks as every other record."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ecgpipe.config import DatabaseSettings
from ecgpipe.records import RecordError, read_record


@pytest.fixture(scope="module")
def cinc(physionet):
    folder = physionet / "cinc2017"
    if not (folder / "RECORDS").is_file():
        pytest.fail(f"real CinC 2017 data not found at {folder}")
    return folder


def settings(**kw) -> DatabaseSettings:
    return DatabaseSettings(fs=300.0, lead=[0], labels_csv="REFERENCE-v3.csv", **kw)


def first_records(folder, n):
    return (folder / "RECORDS").read_text().split()[:n]


def test_published_headers_with_checksum_zero_are_read(cinc):
    """Checksum 0 means 'not recorded' (every CinC header): verified only when recorded, so all records read."""
    names = first_records(cinc, 40)
    headers = [(cinc / f"{n}.hea").read_text().splitlines()[1].split() for n in names]
    assert all(h[6] == "0" for h in headers)  # as published: the checksum field is 0
    for name in names:
        rec = read_record(str(cinc), "cinc2017", name, settings(), record_label="N")
        assert rec.fs == 300.0 and rec.signals.shape[0] == 1 and np.isfinite(rec.signals).all()


def test_init_value_mismatches_are_ignored(cinc):
    """In some published headers the initial value does not match the first sample; wfdb reads them and so do we."""
    import wfdb

    mismatched = []
    for name in first_records(cinc, 400):
        header = wfdb.rdheader(str(cinc / name))
        first = wfdb.rdrecord(str(cinc / name), physical=False, sampto=1).d_signal[0, 0]
        if header.init_value[0] != first:
            mismatched.append(name)
        if len(mismatched) == 2:
            break
    assert mismatched, "expected published headers whose init value differs from the first sample"
    for name in mismatched:
        assert read_record(str(cinc), "cinc2017", name, settings(), record_label="A").signals.shape[1] > 0


def test_a_recorded_checksum_is_still_verified_and_the_policy_can_relax_it(cinc, tmp_path):
    """A header that does record a checksum (here: the real one written into a copy) still catches altered data;
    checksum = 'warn' reads it with a warning, 'off' without checking."""
    import wfdb

    name = first_records(cinc, 1)[0]
    for ext in (".hea", ".mat"):
        shutil.copy(cinc / f"{name}{ext}", tmp_path / f"{name}{ext}")
    real = wfdb.rdrecord(str(cinc / name), physical=False).calc_checksum()[0]
    header = tmp_path / f"{name}.hea"
    fields = header.read_text().splitlines()
    parts = fields[1].split()
    parts[6] = str(real)
    header.write_text("\n".join([fields[0], " ".join(parts), *fields[2:]]) + "\n")
    assert read_record(str(tmp_path), "cinc2017", name, settings(), record_label="N").signals.shape[1] > 0
    data = bytearray((tmp_path / f"{name}.mat").read_bytes())
    data[200:204] = b"\x10\x20\x30\x40"
    (tmp_path / f"{name}.mat").write_bytes(bytes(data))
    with pytest.raises(RecordError, match="checksum mismatch"):
        read_record(str(tmp_path), "cinc2017", name, settings(), record_label="N")
    with pytest.warns(UserWarning, match="checksum mismatch"):
        read_record(str(tmp_path), "cinc2017", name, settings(checksum="warn"), record_label="N")
    read_record(str(tmp_path), "cinc2017", name, settings(checksum="off"), record_label="N")
