"""Where records come from: a local copy, or PhysioNet through wfdb's own download.

Resolution order for the data directory: ``--data-dir`` > ``$ECGPIPE_DATA_DIR`` > ``./data/physionet``. A database is
read from ``<data dir>/<database>/`` when that folder holds a RECORDS file; otherwise, only when asked
(``--download``), it is downloaded there with ``wfdb.dl_database`` (needs internet), and a failed download says how to
point at a local copy instead; without ``--download`` the error says how to get one.
"""

from __future__ import annotations

import os
import shlex
import zlib
from pathlib import Path

import numpy as np

from ecgpipe.config import PipelineConfig
from ecgpipe.edf import is_edf
from ecgpipe.errors import EcgpipeError
from ecgpipe.records import list_records, without_segments

DATA_DIR_ENV = "ECGPIPE_DATA_DIR"
DEFAULT_DATA_DIR = Path("data") / "physionet"


class DataSourceError(EcgpipeError, RuntimeError):
    """A database folder is missing and could not be fetched."""


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser().resolve()
    return DEFAULT_DATA_DIR.resolve()


def database_dir(config: PipelineConfig, database: str, data_dir: Path, download: bool = True) -> Path:
    """Local folder of one database, downloading it from PhysioNet first when it is not there."""
    folder = data_dir / database
    labels_csv = config.databases[database].labels_csv
    if (folder / "RECORDS").is_file() or (labels_csv and (folder / labels_csv).is_file()):
        return folder  # a labels CSV lists the records of a database without RECORDS (selected_records)
    if folder.is_dir() and config.databases[database].records:
        return folder  # the config lists the records
    found = records_in_folder(folder, nested=True) if folder.is_dir() else []
    if found:  # the records are here (in its subfolders too), their index is not: say so, not "not found"
        where = " (paths from that folder: records in subfolders are named so)" if any("/" in r for r in found) else ""
        raise DataSourceError(
            f"database {database!r}: {folder} holds {len(found)} record(s) ({', '.join(found[:3])}"
            f"{', ...' if len(found) > 3 else ''}) but no RECORDS file listing the records to use: write one, one "
            f"record name per line{where} (e.g. `cd {shlex.quote(str(folder))} && find . -name '*.hea' -o -iname '*.edf' "
            f"| sed -E 's#^\\./##; s#\\.(hea|[eE][dD][fF])$##' | sort > RECORDS`, then take out the segments of any "
            f"multi-segment record), or list them in databases.{database}.records")
    slug = config.database(database).physionet
    hint = (
        f"Point ecgpipe at a local copy with --data-dir DIR (or ${DATA_DIR_ENV}=DIR), where DIR/{database}/ holds the "
        f"records (WFDB .hea + signal files, or EDF/EDF+ .edf files), their labels "
        f"(.{config.databases[database].annotator} annotation files, or the labels_csv) and a RECORDS file listing them."
    )
    if not download or not slug:
        what = f"no RECORDS file{f' and no {labels_csv}' if labels_csv else ''}"
        raise DataSourceError(f"database {database!r} not found at {folder} ({what}). {hint}")
    import wfdb

    wanted = config.databases[database].records or "all"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        wfdb.dl_database(slug, dl_dir=str(folder), records=wanted, annotators="all")
        if not (folder / "RECORDS").is_file():
            # dl_database does not copy the RECORDS index itself; write the records we fetched.
            names = wanted if wanted != "all" else wfdb.get_record_list(slug)
            (folder / "RECORDS").write_text("\n".join(names) + "\n")
    except Exception as exc:
        raise DataSourceError(
            f"database {database!r} is not at {folder} and downloading {slug} from PhysioNet failed "
            f"({type(exc).__name__}: {exc}). {hint}"
        ) from None
    return folder


def selected_records(config: PipelineConfig, database: str, folder: Path) -> list[str]:
    """Records of a database to process: the config's subset (checked against RECORDS) or all of them; with
    ``run.max_records`` a seeded sample of them, in their order (each database's sample its own: adding a database
    changes no other's)."""
    names = _listed_records(config, database, folder)
    n = config.run.max_records
    if n is None or len(names) <= n:
        return names
    rng = np.random.default_rng([config.sampling.seed, zlib.crc32(database.encode())])
    return [names[i] for i in sorted(rng.choice(len(names), n, replace=False))]


def _listed_records(config: PipelineConfig, database: str, folder: Path) -> list[str]:
    labels_csv = config.databases[database].labels_csv
    wanted = config.databases[database].records
    if labels_csv and not (folder / "RECORDS").is_file():
        from ecgpipe.labels import read_record_labels

        available = list(read_record_labels(folder, labels_csv))  # no RECORDS file: the CSV lists the records
    elif wanted and not (folder / "RECORDS").is_file():
        return list(wanted)  # no index to check them against: a missing record fails by name when read
    else:
        available = list_records(folder)
    if not wanted:
        return available
    listed = set(available)  # a list's membership test, once per wanted record, would be quadratic at 10^5 records
    unknown = [r for r in wanted if r not in listed]
    if unknown:
        raise DataSourceError(f"databases.{database}.records: {unknown} not listed in {folder / 'RECORDS'}")
    return list(wanted)


def records_in_folder(folder: str | Path, nested: bool = False) -> list[str]:
    """The records whose files are in ``folder``: the stems of its WFDB headers and EDF files (sorted), less the
    segments of a multi-segment record among them; with ``nested``, its subfolders' records too, as
    ``<subfolder>/<record>`` (hidden folders and Zarr stores, a run's own, are not searched). What a folder without a
    RECORDS file holds, for ``ecgpipe predict`` and for a labels CSV's unlisted records."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if nested and not d.startswith(".") and not d.endswith(".zarr"))
        stems = sorted({f[: -len(".hea")] for f in files if f.endswith(".hea")} | {os.path.splitext(f)[0] for f in files if is_edf(f)})
        rel = Path(root).relative_to(folder).as_posix()
        found += [s if rel == "." else f"{rel}/{s}" for s in without_segments(root, stems)]
    return found
