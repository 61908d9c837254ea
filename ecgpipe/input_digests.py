"""Digests of a run's input files, kept beside its results so that planning a rerun reads only what changed.

Every record's content key starts from a sha256 of its files (``keys.file_digest``): a record whose bytes change
is recomputed, wherever it lies. Hashing is a full read of the corpus (about a second for CinC 2017's 120 MB, hours
for a multi-terabyte Holter corpus on a network file system), and planning used to do it on every run, twice: the
preflight check, then the flow's plan. Here each digest is kept with the stamp of the files it was computed from
(path, size, modification and change times, inode: ``os.stat``) in ``OUT/inputs/digests.json``, and reused while
that stamp is unchanged: the trust git and make put in a file's stat data, the same as the output markers'
(``markers.py``). ``run.verify = "content"`` (``--verify``) hashes every input again.

Three rules keep the trust earned. A digest is kept only when the stamp taken after hashing is the one taken before
(a file written while it was read is hashed again next time), only when every file was read to its end (an I/O
error is not remembered as the file's content), and only for files last changed more than ``SETTLE_S`` seconds
earlier (modified, copied, or their permissions changed): a write within the file system's time resolution of the
stamp could leave the stamp as it was (git's "racy clean" files). What the stamp cannot see: bytes changed with the
size, modification time and inode put back (the change time cannot be), and, on a network file system, a file
rewritten from another host while this one still answers ``stat`` from its attribute cache (NFS: up to ``acregmax``,
60 s by default): after editing data from another host, rerun with ``--verify``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ecgpipe.errors import PipelineError
from ecgpipe.keys import code_tokens, read_digest, record_files
from ecgpipe.location import Location
from ecgpipe.orchestration import interrupt

CACHE = "inputs/digests.json"
SETTLE_S = 5.0
# While a corpus is hashed, the digests computed are written this often (``ECGPIPE_KEEP_DIGESTS_EVERY_S``): a job
# killed with no SIGTERM first (a node lost, the kernel's OOM killer, SLURM's SIGKILL after a SIGTERM lost) loses at
# most this much reading; a SIGTERM or Ctrl-C keeps everything read (``preflight.keep_digests_read``).
KEEP_EVERY_S = 300.0


def keep_every_s() -> float:
    """``KEEP_EVERY_S``, or the environment's ``ECGPIPE_KEEP_DIGESTS_EVERY_S`` (0: after every record, for tests),
    read when a plan starts."""
    text = os.environ.get("ECGPIPE_KEEP_DIGESTS_EVERY_S")
    try:
        seconds = KEEP_EVERY_S if text is None else float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise PipelineError(f"ECGPIPE_KEEP_DIGESTS_EVERY_S={text!r}: give the seconds between writes of the input "
                            f"digests while a corpus is hashed, 0 or more (default {KEEP_EVERY_S:g})")
    return seconds

# The preflight's digests, by (output location, verify), until the same run's plan takes them: the preflight check
# and the flow's plan of one `ecgpipe run` are one process, and each input is read once per run.
_PREFLIGHT: dict[tuple[str, str], InputDigests] = {}


def _version() -> str:
    """How ``file_digest`` computes: a change to it makes every kept digest worthless (another edit of keys.py does
    not: a corpus of 300 000 records is read again only when the way it is hashed changes)."""
    from ecgpipe import keys

    return hashlib.blake2b("".join(code_tokens(inspect.getsource(f)) for f in (keys.file_digest, keys.read_digest)).encode(),
                           digest_size=8).hexdigest()


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
        # not the device number: NFS and Lustre give each client mount its own (and autofs a new one per mount), so
        # every job on another node would read the whole corpus again (git's index leaves it out for that reason)
        parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}")
        newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest(), newest


def _entries(doc) -> dict[str, dict[str, list[str]]]:
    """The ``digests`` of a kept file, checked entry by entry: a malformed one is dropped, never trusted."""
    if not isinstance(doc, dict) or doc.get("version") != _version() or not isinstance(doc.get("digests"), dict):
        return {}
    return {folder: {names: entry for names, entry in records.items()
                     if isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)}
            for folder, records in doc["digests"].items() if isinstance(records, dict)}


def _still_there(folder: str, records: dict[str, list[str]]) -> dict[str, list[str]]:
    """The entries of ``folder`` whose first file (a record's header, or its EDF file) is still there; all of them
    when the folder itself is not (an unmounted share or a removed disk: hashing it again could take hours)."""
    if not os.path.isdir(folder):
        return records
    present = set(os.listdir(folder))  # one listing, not a stat per record
    return {names: entry for names, entry in records.items()
            if (first := names.split("|")[0]) in present or ("/" in first and os.path.exists(os.path.join(folder, first)))}


class InputDigests:
    """``file_digest`` of a record's files, reused from ``OUT/inputs/digests.json`` (with ``verify = "content"``:
    only from earlier in this run) while the files' stamp is the one it was computed from. ``out=None``: nothing
    kept on disk."""

    def __init__(self, out: Location | str | None = None, verify: str = "stamp"):
        self.location = out if isinstance(out, Location) or out is None else Location(out)
        self.verify = verify
        self._kept = self._load()
        # trusted: with "stamp" what the last run kept and this one computed; with "content" only this run's
        self.entries: dict[str, dict[str, list[str]]] = self._kept if verify == "stamp" else {}
        self.hashed = 0  # records whose files this object read (not reused)
        self.new = 0  # digests computed here and trusted for the next run, not kept on disk yet
        self.computed = 0  # digests computed here and trusted for the next run, kept on disk or not

    @classmethod
    def of_run(cls, out, verify: str = "stamp", preflight: bool = False) -> InputDigests:
        """The digests of the run planned into ``out``: the preflight's make new ones and leave them for the plan;
        the plan takes them (same process), or makes new ones (a flow started by a deployment, ``ecgpipe status``)."""
        location = out if isinstance(out, Location) else Location(out)
        if preflight:
            _PREFLIGHT[(location.url, verify)] = digests = cls(location, verify)
            return digests
        return _PREFLIGHT.pop((location.url, verify), None) or cls(location, verify)

    @staticmethod
    def forget(out, verify: str = "stamp") -> None:
        """Drop the preflight's digests of a run into ``out`` that stopped before its plan took them."""
        location = out if isinstance(out, Location) else Location(out)
        _PREFLIGHT.pop((location.url, verify), None)

    def _load(self) -> dict[str, dict[str, list[str]]]:
        if self.location is None:
            return {}
        try:
            return _entries(json.loads(self.location.read_text(CACHE) or "{}"))
        except Exception:  # unreadable, half a file, an unreachable URL: start again, hashing is always correct
            return {}

    def __call__(self, paths: Sequence[str | Path]) -> str:
        """The digest of ``paths`` (``keys.file_digest``), reading them only when their stamp is new. Called once per
        record by the checks of a run (and by a plan that plans afresh): a run asked to stop (SIGTERM, Ctrl-C) stops
        here."""
        interrupt.check()
        absolute = [os.path.abspath(p) for p in paths]
        folder = os.path.dirname(absolute[0])
        names = "|".join(os.path.relpath(p, folder) for p in absolute)
        stamp, _ = files_stamp(absolute)
        known = self.entries.get(folder, {}).get(names)
        if known and known[0] == stamp:
            return known[1]
        digest, complete = read_digest(list(paths))
        self.hashed += 1
        after, newest = files_stamp(absolute)
        if complete and after == stamp and newest < time.time_ns() - SETTLE_S * 1e9:
            self.entries.setdefault(folder, {})[names] = [stamp, digest]
            self.new += 1
            self.computed += 1
        return digest

    def kept_every(self, seconds: float, keep: Callable[[], object]) -> Callable[[Sequence[str | Path]], str]:
        """This cache as a ``digest_of`` that calls ``keep()`` (a write of the digests) each time ``seconds`` have
        passed since the last such call, where new digests wait: what a SIGKILL in the middle of hashing a
        corpus loses is bounded by ``seconds`` of reading, not the whole of it. Each keep writes the whole document
        (~130 bytes per record: ~2 s at a million records, every 5 minutes by default)."""
        last = time.monotonic()

        def digest_of(paths: Sequence[str | Path]) -> str:
            nonlocal last
            digest = self(paths)
            if self.new and time.monotonic() - last >= seconds:
                keep()
                last = time.monotonic()
            return digest

        return digest_of

    def signal(self, db_dir: str | Path, record: str) -> str:
        """``keys.signal_digest``: the record's header and signal files, not its annotations."""
        return self(record_files(db_dir, record, "")[:-1])

    def document(self, prune: bool = True) -> str:
        """The digests known now as ``CACHE`` holds them: entries of records not planned this time are kept (a pilot
        run of a few records does not make the next full run read the others again); with ``prune``, those of
        records whose first file, the header, is gone from a folder still there are dropped (one listing per folder)."""
        known = self.entries
        if known is not self._kept:  # "content": this run's digests over the ones kept before
            known = {folder: {**self._kept.get(folder, {}), **records} for folder, records in self.entries.items()}
            known = {**self._kept, **known}
        if prune:
            known = {folder: kept for folder, records in known.items() if (kept := _still_there(folder, records))}
        return json.dumps({"version": _version(), "digests": known})

    def save_unless_a_run_holds(self) -> bool:
        """``save()`` (without the pruning's listings), unless a live run holds the output folder: its own plan keeps
        what it reads. For writers that are not the run holding the folder (the checks before a run takes it,
        ``ecgpipe status``): no lock is taken, since a run starting while one is held for a moment would be refused;
        the file is replaced whole and each entry is trusted only with its files' stamp, so a write that races a run's
        costs hashing, never a wrong digest. A killed run's lock left behind does not stop the write."""
        from ecgpipe.lock import RunLock

        root = self.location.local_root if self.location is not None else None
        if root and os.path.isdir(root):
            lock = RunLock(root)
            if (holder := lock.holder()) is not None and lock.holder_running(holder):
                return False
        return self.save(self.document(prune=False))

    def save(self, text: str | None = None) -> bool:
        """Write the digests known now (``document()``, or ``text`` made from it) when any is new; whether they are
        on disk. A folder that cannot be written costs only the hashing next time, never the run."""
        if self.location is None or not self.new:
            return not self.new
        try:
            self.location.write_text(CACHE, self.document() if text is None else text)
            self.new = 0
            return True
        except Exception as exc:  # a full disk, a read-only folder, an object store refusing: never the run's end
            logging.getLogger(__name__).warning(f"{self.location.child(CACHE)}: input digests not kept ({exc})")
            return False


FINGERPRINT_BYTES = 65536  # read from each end of each signal file


def signal_fingerprint(db_dir: str | Path, record: str) -> str | None:
    """A record's signal files alone (not its header: a copy renamed, or with labels appended to its header, is the
    same recording), by their sizes and their first and last 64 KiB each: what predict and evaluate match against a
    model's training recordings, at two small reads per file however long the recording. None where a file cannot
    be read (a record that is not there: no match)."""
    files = [p for p in record_files(db_dir, record, "")[:-1] if p.suffix != ".hea"]  # an EDF file is its own signal
    h = hashlib.sha256()
    try:
        for path in files:
            size = os.path.getsize(path)
            with open(path, "rb") as fh:
                head = fh.read(FINGERPRINT_BYTES)
                fh.seek(max(size - FINGERPRINT_BYTES, 0))
                tail = fh.read(FINGERPRINT_BYTES)
            h.update(f"{size}:".encode() + head + tail)
    except OSError:
        return None
    return h.hexdigest() if files else None
