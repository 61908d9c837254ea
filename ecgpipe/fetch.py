"""``ecgpipe data fetch``: get a PhysioNet database into a data folder and verify it against SHA256SUMS.

Online: ``wfdb.dl_database`` downloads the records and PhysioNet's ``SHA256SUMS.txt`` is fetched beside them.
Offline: ``--from DIR`` copies a local mirror (``DIR/<db>/``). Either way every file listed in a checksum file is
verified; a mismatch or a missing file is an error naming the file.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
from pathlib import Path

from ecgpipe.databases import KNOWN_DATABASES
from ecgpipe.errors import EcgpipeError
from ecgpipe.location import write_file
from ecgpipe.records import list_records

# Checksum files, in the order they are looked for: PhysioNet's own name, a plain name, a mirror's renamed upstream copy.
SUM_FILES = ("SHA256SUMS.txt", "SHA256SUMS", "SHA256SUMS.upstream.txt")


class ChecksumError(EcgpipeError, RuntimeError):
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_sums(text: str, database: str) -> dict[str, str]:
    """``{file name: sha256}`` from a SHA256SUMS text; paths may be relative to the database or to its parent."""
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            continue
        digest, name = parts[0].lower(), parts[1].lstrip("*").strip()
        if name.startswith(f"{database}/"):
            name = name[len(database) + 1 :]
        if "/" not in name:
            sums[name] = digest
    return sums


def find_sums(db_dir: Path, database: str) -> dict[str, str] | None:
    for name in SUM_FILES:
        if (db_dir / name).is_file():
            return read_sums((db_dir / name).read_text(), database)
    parent = db_dir.parent / "SHA256SUMS"
    if parent.is_file():
        return read_sums(parent.read_text(), database) or None
    return None


# Files a record cannot do without; other listed files (viewer settings, HTML docs) may be absent from a mirror.
REQUIRED_SUFFIXES = {"hea", "dat", "mat", "atr"}


def verify(db_dir: Path, sums: dict[str, str], only: set[str] | None = None, remove_bad: bool = False) -> int:
    """Check every listed file (or those of the records in ``only``); returns the number verified. ``remove_bad``:
    delete a file that does not match, so that no run reads it (only files this fetch wrote: never a mirror's)."""
    problems, n = [], 0
    for name, digest in sorted(sums.items()):
        if only is not None and name.split(".")[0] not in only:
            continue
        path = db_dir / name
        if not path.is_file():
            if name.rsplit(".", 1)[-1] in REQUIRED_SUFFIXES:
                problems.append(f"{path}: missing")
        elif sha256(path) != digest:
            if remove_bad:
                path.unlink()
            problems.append(f"{path}: SHA-256 mismatch (altered or truncated)" + ("; removed" if remove_bad else ""))
        else:
            n += 1
    if problems:
        raise ChecksumError("checksum verification failed:\n  " + "\n  ".join(problems))
    return n


def add_to_records(dest: Path, records: list[str]) -> None:
    """Add to ``dest/RECORDS`` the records of ``records`` it does not list yet, in their order (a new file when there
    is none): fetching some records into a folder that holds others adds them; it never drops the others from the
    list that runs read, nor the file's comments or layout."""
    index = dest / "RECORDS"
    existing = set(list_records(dest)) if index.is_file() else set()
    new = [r for r in dict.fromkeys(records) if r not in existing]
    text = index.read_text(encoding="utf-8-sig") if index.is_file() else ""
    if new or not index.is_file():
        write_file(index, text + ("\n" if text and not text.endswith("\n") else "") + "".join(f"{r}\n" for r in new))


def unlisted_records(databases: list[str], mirror: str | Path, records: list[str]) -> list[str]:
    """The records of ``--records`` that no database's RECORDS in the mirror lists (one list serves every database
    fetched, so a record need be in one of them); a database folder without RECORDS is left to ``fetch`` to name."""
    listed: set[str] = set()
    for database in databases:
        if (Path(mirror) / database / "RECORDS").is_file():
            listed |= set(list_records(Path(mirror) / database))
    return [r for r in dict.fromkeys(records) if r not in listed]


def _same_path(a: Path, b: Path) -> bool:  # one folder or file under two names
    try:
        return a.samefile(b)
    except OSError:  # one of them does not exist
        return False


def fetch(database: str, to: str | Path, mirror: str | Path | None = None, records: list[str] | None = None) -> dict:
    """Fetch ``database`` into ``to/<database>/`` (from ``mirror/<database>/`` when given) and verify it.

    With ``records``, only those records are fetched and added to ``to/<database>/RECORDS`` (records listed there
    already stay listed). A mirror that is the destination itself is verified in place, nothing copied."""
    dest = Path(to) / database
    wanted = set(records) if records else None
    if mirror is not None:
        src = Path(mirror) / database
        if not (src / "RECORDS").is_file():
            raise FileNotFoundError(f"{src}: no RECORDS file, not a database folder")
        if _same_path(src, dest):  # --from X --to X: the files are already there; check them where they are
            sums = find_sums(src, database)
            if sums is None:
                return {"database": database, "to": str(dest), "verified": 0,
                        "note": "--from is the destination: nothing copied; no SHA256SUMS found: not verified"}
            return {"database": database, "to": str(dest), "verified": verify(dest, sums, wanted),
                    "note": "--from is the destination: nothing copied, verified in place"}
        listed = list_records(src)
        dest.mkdir(parents=True, exist_ok=True)
        record_stems = set(listed)
        for f in sorted(src.iterdir()):
            # the wanted records' files, and every file of no record (checksums, a labels CSV, ANNOTATORS; RECORDS
            # itself only when every record is fetched: else the records asked for are added to the folder's own)
            if not f.is_file() or (wanted is not None and f.name == "RECORDS"):
                continue
            if wanted is None or f.name.split(".")[0] in wanted or f.name.split(".")[0] not in record_stems:
                if not _same_path(f, dest / f.name):  # a file linked into both folders is there already
                    shutil.copy2(f, dest / f.name)
        sums = find_sums(src, database)
        if wanted is not None:
            add_to_records(dest, [r for r in listed if r in wanted])
    else:
        import wfdb

        dest.mkdir(parents=True, exist_ok=True)
        slug = KNOWN_DATABASES[database].physionet if database in KNOWN_DATABASES else database
        wfdb.dl_database(slug, dl_dir=str(dest), records=sorted(wanted) if wanted else "all", annotators="all")
        if wanted:
            add_to_records(dest, sorted(wanted))
        else:
            (dest / "RECORDS").write_text("\n".join(wfdb.get_record_list(slug)) + "\n")
        try:
            with urllib.request.urlopen(f"https://physionet.org/files/{slug}/SHA256SUMS.txt", timeout=60) as r:
                text = r.read().decode()
            (dest / "SHA256SUMS.txt").write_text(text)
            sums = read_sums(text, database)
        except OSError:
            sums = None
    if sums is None:
        return {"database": database, "to": str(dest), "verified": 0, "note": "no SHA256SUMS found: not verified"}
    return {"database": database, "to": str(dest), "verified": verify(dest, sums, wanted, remove_bad=True)}
