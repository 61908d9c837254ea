"""Shared fixtures: the real PhysioNet data beside the checkout, broken copies of it, and one Prefect API per session."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PHYSIONET = Path(os.environ.get("ECGPIPE_TEST_DATA", REPO.parent / "shared" / "data" / "physionet"))

# Quiet, offline-friendly Prefect for every test process and the processes it starts.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@pytest.fixture(scope="session")
def physionet() -> Path:
    """The real mitdb + vfdb copy (CI has ../shared beside the checkout). Missing data is a failure, not a skip."""
    if not (PHYSIONET / "mitdb" / "RECORDS").is_file() or not (PHYSIONET / "vfdb" / "RECORDS").is_file():
        pytest.fail(f"real PhysioNet data not found at {PHYSIONET} (set ECGPIPE_TEST_DATA to its folder)")
    return PHYSIONET


@pytest.fixture(scope="session")
def cinc(physionet) -> Path:
    """The real CinC 2017 records (5970, as published: labels in REFERENCE-v3.csv). Missing data is a failure."""
    folder = physionet / "cinc2017"
    if not (folder / "RECORDS").is_file() or not (folder / "REFERENCE-v3.csv").is_file():
        pytest.fail(f"real CinC 2017 data not found at {folder}")
    return folder


def copy_cinc(cinc: Path, dst_root: Path, names: list[str], labelled: list[str] | None = None) -> Path:
    """CinC 2017 records (header and .mat) copied into dst_root/cinc2017 with a RECORDS file of them and a
    REFERENCE-v3.csv with the published label of each record of ``labelled`` (default: every one)."""
    labels = dict(line.split(",") for line in (cinc / "REFERENCE-v3.csv").read_text().split())
    data = dst_root / "cinc2017"
    data.mkdir(parents=True)
    for name in names:
        for ext in (".hea", ".mat"):
            shutil.copy(cinc / f"{name}{ext}", data / f"{name}{ext}")
    (data / "RECORDS").write_text("\n".join(names) + "\n")
    (data / "REFERENCE-v3.csv").write_text("".join(f"{n},{labels[n]}\n" for n in (names if labelled is None else labelled)))
    return data


def copy_records(src_root: Path, dst_root: Path, database: str, records: list[str]) -> Path:
    """Copy some records of a database (all their files) into dst_root/database with a RECORDS file."""
    dst = dst_root / database
    dst.mkdir(parents=True, exist_ok=True)
    for rec in records:
        for f in (src_root / database).glob(f"{rec}.*"):
            shutil.copy(f, dst / f.name)
    (dst / "RECORDS").write_text("\n".join(records) + "\n")
    return dst


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One temporary Prefect API for the session, exported so Dask worker processes report to it too."""
    home = tmp_path_factory.mktemp("prefect_home")
    os.environ["PREFECT_HOME"] = str(home)
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        url = PREFECT_API_URL.value()
        os.environ["PREFECT_API_URL"] = url
        yield url
        os.environ.pop("PREFECT_API_URL", None)


# A small three-class slice of vfdb for tests that exercise clusters and deployments rather than the data.
VFDB_SLICE_TOML = """
name = "vfdb-slice"
[databases.vfdb]
lead = [0]
[classes]
normal = ["(N"]
vt = ["(VT"]
vf = ["(VF", "(VFL"]
[sampling]
max_per_class = 12
[cv]
n_splits = 3
[run]
chunk_size = 16
n_workers = 1
"""

DASK = str(Path(sys.executable).with_name("dask"))
_QUIET = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}


def start_scheduler(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A real `dask scheduler` on 127.0.0.1 (random port); returns the process and its scheduler file."""
    sched_file = tmp_path / "scheduler.json"
    proc = subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0", "--scheduler-file", str(sched_file)],
        **_QUIET,
    )
    deadline = time.time() + 60
    while not sched_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert sched_file.exists(), "dask scheduler did not start"
    return proc, sched_file


def start_worker(sched_file: Path, *extra: str, wrap=None) -> subprocess.Popen:
    """A real `dask worker` (one thread); ``wrap`` turns the command into another, e.g. to run it in a namespace."""
    cmd = [DASK, "worker", "--scheduler-file", str(sched_file), "--nthreads", "1", "--dashboard-address", ":0", *extra]
    return subprocess.Popen(wrap(cmd) if wrap else cmd, **_QUIET)


def wait_for_workers(sched_file: Path, n: int) -> str:
    from distributed import Client

    with Client(scheduler_file=str(sched_file), timeout=60) as client:
        client.wait_for_workers(n, timeout=120)
        return client.scheduler.address


def stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def write_edf_plus(path, ecg_digital: np.ndarray, fs: int, physical: tuple[float, float], digital: tuple[int, int],
                   annotations: tuple[tuple[float, float | None, str], ...] = (), start_s: float = 0.0) -> int:
    """An EDF+C file as recorders write it: one-second data records holding an ECG lead (label MLII, in uV) and
    EDF+'s "EDF Annotations" channel with a sample count of its own: each data record's time-keeping TAL, then
    ``annotations`` ((onset s, duration s or None, text)), one per data record in turn. ``start_s``: the first data
    record starts that long after the header's start time (time stamps count from the header's). Returns the number
    of ECG samples written."""
    n_records = len(ecg_digital) // fs
    labels, spr = ["MLII", "EDF Annotations"], [fs, 60]
    fields = [(labels, 16), (["", ""], 80), (["uV", ""], 8), ([f"{physical[0] * 1000:g}", "-1"], 8),
              ([f"{physical[1] * 1000:g}", "1"], 8), ([str(digital[0]), "-32768"], 8), ([str(digital[1]), "32767"], 8),
              (["", ""], 80), ([str(n) for n in spr], 8), (["", ""], 32)]
    head = (f"{'0':<8}{'X X X X':<80}{'Startdate 01-JAN-2000 X X X':<80}{'01.01.00':<8}{'00.00.00':<8}{768:<8}"
            f"{'EDF+C':<44}{n_records:<8}{'1':<8}{2:<4}")
    head += "".join(f"{value:<{width}}" for values, width in fields for value in values)
    assert len(head) == 768 and len(annotations) <= n_records
    records = []
    for i in range(n_records):
        tal = f"+{start_s + i:g}\x14\x14\x00"  # time-keeping TAL: when this data record starts
        if i < len(annotations):
            onset, duration, text = annotations[i]
            tal += f"+{start_s + onset:.6f}" + (f"\x15{duration:.6f}" if duration is not None else "") + f"\x14{text}\x14\x00"
        raw = tal.encode("utf-8")
        assert len(raw) <= 2 * spr[1]
        ecg = np.asarray(ecg_digital[i * fs : (i + 1) * fs], dtype="<i2").tobytes()
        records.append(ecg + raw + bytes(2 * spr[1] - len(raw)))
    path.write_bytes(head.encode("ascii") + b"".join(records))
    return n_records * fs
