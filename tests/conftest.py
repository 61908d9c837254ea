"""Shared fixtures: the real PhysioNet data beside the checkout, broken copies of it, and one Prefect API per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
