"""Digests of a run's input files, kept beside its results so that planning a rerun reads only what changed.

Every record's content key starts from a sha256 of its files (``keys.file_digest``): a record whose bytes change
is recomputed, wherever it lies. Hashing is a full read of the corpus (about a second for CinC 2017's 120 MB, hours
for a multi-terabyte Holter corpus on a network file system), and planning used to do it on every run, twice: the
preflight check, then the flow's plan. Here each digest is kept with the stamp of the files it was computed from
(path, size, modification and change times, inode: ``os.stat``) in ``OUT/inputs/digests.json``, and reused while
that stamp is unchanged: the trust git and make put in a file's stat data, the same as the output markers'
(``markers.py``). ``run.verify = "content"`` (``--verify``) hashes every input again.

Two rules keep the trust earned. A digest is kept only when the stamp taken after hashing is the one taken before
(a file written while it was read is hashed again next time), and only for files last modified more than
``SETTLE_S`` seconds earlier (or copied, or had their permissions changed): a write within the file system's time resolution of the stamp could leave the stamp
as it was (git's "racy clean" files).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ecgpipe.keys import code_version, file_digest, record_files
from ecgpipe.location import Location

CACHE = "inputs/digests.json"
SETTLE_S = 5.0

# Digests this process has computed or loaded, by (folder, files): the preflight check and the flow's plan of one
# `ecgpipe run` are one process, so the second finds what the first hashed.
_REMEMBERED: dict[tuple[str, str], tuple[str, str]] = {}


def _version() -> str:
    """How ``file_digest`` computes: a change to it makes every kept digest worthless."""
    return code_version("ecgpipe.keys")


def files_stamp(paths: Sequence[str | Path]) -> tuple[str, int]:
    """(stamp, newest change in ns) of some files: the stamp changes when any of them is written, replaced,
    truncated, created or removed, or has its permissions changed. The newest change is the latest modification or
    inode change time (a copy that keeps the original's modification time is still new: ``cp -p``, ``rsync -a``)."""
    parts, newest = [], 0
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            parts.append(f"{p}:-")
            continue
        parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}")
        newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest(), newest


class InputDigests:
    """``file_digest`` of a record's files, reused from ``OUT/inputs/digests.json`` (or from earlier in this
    process) while the files' stamp is the one it was computed from. ``out=None``: nothing kept on disk."""

    def __init__(self, out: Location | str | None = None, verify: str = "stamp"):
        self.location = out if isinstance(out, Location) or out is None else Location(out)
        self.trust = verify == "stamp"
        self.entries: dict[str, dict[str, list[str]]] = self._load()  # with "content" kept, not trusted
        self.hashed = 0  # records whose files were read (not reused) by this object
        self._new = False

    def _load(self) -> dict[str, dict[str, list[str]]]:
        if self.location is None:
            return {}
        try:
            doc = json.loads(self.location.read_text(CACHE) or "{}")
        except Exception:  # unreadable, half a file, an unreachable URL: start again, hashing is always correct
            return {}
        return doc.get("digests", {}) if doc.get("version") == _version() else {}

    def __call__(self, paths: Sequence[str | Path]) -> str:
        """The digest of ``paths`` (``keys.file_digest``), reading them only when their stamp is new."""
        absolute = [os.path.abspath(p) for p in paths]
        folder = os.path.dirname(absolute[0])
        names = "|".join(os.path.relpath(p, folder) for p in absolute)
        stamp, _ = files_stamp(absolute)
        if self.trust:
            known = self.entries.get(folder, {}).get(names) or _REMEMBERED.get((folder, names))
            if known and known[0] == stamp:
                self._keep(folder, names, stamp, known[1])
                return known[1]
        digest = file_digest(list(paths))
        self.hashed += 1
        after, newest = files_stamp(absolute)
        if after == stamp and newest < time.time_ns() - SETTLE_S * 1e9:
            _REMEMBERED[(folder, names)] = (stamp, digest)
            self._keep(folder, names, stamp, digest)
        return digest

    def signal(self, db_dir: str | Path, record: str) -> str:
        """``keys.signal_digest``: the record's header and signal files, not its annotations."""
        return self(record_files(db_dir, record, "")[:-1])

    def _keep(self, folder: str, names: str, stamp: str, digest: str) -> None:
        entry = self.entries.setdefault(folder, {})
        if entry.get(names) != [stamp, digest]:
            entry[names] = [stamp, digest]
            self._new = True

    def save(self) -> None:
        """Write the digests known now (earlier ones of records not planned this time kept) when any is new. A
        folder that cannot be written costs only the hashing next time, never the run."""
        if self.location is None or not self._new:
            return
        try:
            self.location.write_text(CACHE, json.dumps({"version": _version(), "digests": self.entries}))
            self._new = False
        except OSError as exc:
            logging.getLogger(__name__).warning(f"{self.location.child(CACHE)}: input digests not kept ({exc})")
