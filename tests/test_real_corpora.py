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


@pytest.mark.system
def test_the_cinc2017_preset_runs_real_records_end_to_end(cinc, tmp_path, prefect_server):
    """A slice of the real CinC 2017 records through the shipped preset (smaller settings, same data path): none
    rejected for its checksum, every labelled record accounted for, record-level results per record."""
    from ecgpipe.config import load_config
    from flows.ecg_pipeline import run_pipeline

    labels = dict(line.split(",") for line in (cinc / "REFERENCE-v3.csv").read_text().split())
    by_label: dict[str, list[str]] = {}
    for name in (cinc / "RECORDS").read_text().split():
        by_label.setdefault(labels[name], []).append(name)
    chosen = by_label["N"][:8] + by_label["A"][:8] + by_label["O"][:8] + by_label["~"][:2]
    data = tmp_path / "data" / "cinc2017"
    data.mkdir(parents=True)
    for name in chosen:
        for ext in (".hea", ".mat"):
            shutil.copy(cinc / f"{name}{ext}", data / f"{name}{ext}")
    (data / "RECORDS").write_text("\n".join(chosen) + "\n")
    (data / "REFERENCE-v3.csv").write_text("".join(f"{n},{labels[n]}\n" for n in chosen))
    cfg = load_config("cinc2017", {"classifier": {"pca": 16, "tune": False}, "cv": {"n_splits": 3}, "run": {"chunk_size": 32, "n_workers": 1}})
    report = run_pipeline(cfg, str(tmp_path / "data"), str(tmp_path / "out"))
    assert report["skipped_records"] == []  # no record rejected: checksum 0 is "not recorded"
    used = {r["record"].split("/")[-1] for r in report["protocols"]["grouped_by_subject"]["per_record"]["records"]}
    without = {r["record"].split("/")[-1]: r["reason"] for r in report["records_without_windows"]}
    assert used | set(without) == set(chosen) and not used & set(without)  # every labelled record accounted for
    assert all("excluded" in without[n] for n in by_label["~"][:2])
    assert report["subject_word"] == "record" and report["n_subjects"] == len(used)
    assert (tmp_path / "out" / "records_grouped_by_subject.csv").read_text().count("\n") == len(used) + 1
