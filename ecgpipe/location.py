"""A run's output folder: a local path (the default) or an fsspec URL such as ``s3://bucket/runs/x`` or ``file:///x``.

Everything a run writes besides the Zarr arrays (markers, run.json, config.json, reports) goes through here, so an
output folder on object storage works like a local one. Every worker must reach the same location.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import time
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem


def is_url(path: str) -> bool:
    return "://" in str(path) or "::" in str(path)


def zarr_storage_options(path: str) -> dict:
    """Keyword arguments for zarr.open_* of a path inside a location (local files need parent folders made)."""
    if str(path).startswith("file://"):
        return {"storage_options": {"auto_mkdir": True}}
    return {}


PARTIAL_WRITE_GRACE_S = 600.0  # a temporary file untouched this long is no write at work (remove_partial_writes)


def _name_the_file(exc: BaseException, path: str) -> None:
    """Name in ``exc`` the file it was writing, where the system left it out (a full disk's OSError names none, and
    the advice then cannot say which disk filled: OUT's, or /tmp's)."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
        exc.filename = path


def write_file(path: str | os.PathLike, text: str) -> None:
    """Write ``path`` (on this machine) whole or not at all, on the disk before it replaces the file there."""
    path = os.path.abspath(path)
    Location(os.path.dirname(path)).write_text(os.path.basename(path), text, durable=True)


class Location:
    def __init__(self, url: str | os.PathLike):
        url = str(url)
        if is_url(url):
            self.fs, self.root = fsspec.core.url_to_fs(url)
            self.url = url.rstrip("/")
        else:
            self.fs, self.root = LocalFileSystem(), os.path.abspath(url)
            self.url = self.root

    @property
    def local_root(self) -> str | None:
        """The folder on this machine's file system, when the location is one (a plain path or file:// URL)."""
        return self.root if isinstance(self.fs, LocalFileSystem) else None

    def child(self, *parts: str) -> str:
        """URL (or path) of something inside the location, in the form the caller gave."""
        return "/".join([self.url, *parts])

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def makedirs(self, rel: str = "") -> None:
        self.fs.makedirs(self._path(rel), exist_ok=True)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._path(rel))

    def read_text(self, rel: str) -> str | None:
        try:
            with self.fs.open(self._path(rel), "r") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def open(self, rel: str):
        """The file ``rel``, open for reading bytes, seekable (FileNotFoundError where there is none)."""
        return self.fs.open(self._path(rel), "rb")

    def files_below(self, rel: str):
        """Every file below the folder ``rel`` (relative to the location), one at a time on a local disk (a folder of
        millions of files is not listed at once)."""
        top = self._path(rel)
        if isinstance(self.fs, LocalFileSystem):
            for folder, _, files in os.walk(top):
                yield from (os.path.relpath(os.path.join(folder, name), self.root) for name in files)
            return
        yield from (name[len(self.root) + 1:] for name in self.fs.find(top))

    def remove_empty_folders(self, rel: str) -> None:
        """Remove the folders below ``rel`` (and ``rel``) left empty, deepest first (local disks; objects have none)."""
        if not isinstance(self.fs, LocalFileSystem) or not os.path.isdir(self._path(rel)):
            return
        for folder, _, _ in os.walk(self._path(rel), topdown=False):
            with contextlib.suppress(OSError):  # not empty: a bundle, or a folder holding one
                os.rmdir(folder)

    def write_with(self, rel: str, write) -> None:
        """Write the file ``rel`` by calling ``write(file)``, so that readers never see half of it: beside its place
        first, then moved in (renamed on a local disk)."""
        path = self._path(rel)
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        try:
            with self.fs.open(tmp, "wb") as f:  # an object store commits what was written even as an error leaves
                write(f)
            if isinstance(self.fs, LocalFileSystem):
                os.replace(tmp, path)
            else:
                self.fs.mv(tmp, path)
        except BaseException as exc:  # a full disk, an error, SIGTERM: no half-written file stays (SIGKILL leaves a .tmp-*)
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            _name_the_file(exc, path)
            raise

    def write_text(self, rel: str, text: str, durable: bool = False) -> None:
        """Write a small file so that readers never see half of it (rename on local disks; objects are atomic);
        ``durable``: on the disk before it is renamed in, so that a power cut cannot leave it empty (what no rerun
        rebuilds: a user's list, a prediction's note; markers need not, a damaged unit is recomputed)."""
        path = self._path(rel)
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if isinstance(self.fs, LocalFileSystem):
            tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
            try:
                with open(tmp, "w") as f:
                    f.write(text)
                    if durable:
                        f.flush()
                        os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException as exc:  # a full disk, an error, SIGTERM: no half-written file stays (SIGKILL leaves a .tmp-*)
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                _name_the_file(exc, path)
                raise
        else:
            self.fs.pipe_file(path, text.encode())

    def files_stamp(self, rel: str) -> str | None:
        """A fingerprint of every file below ``rel`` (or of the file ``rel``): their names, sizes and modification
        times, which writing any of them again, truncating, adding or removing one changes, and copying a run with its
        times kept (``cp -a``, ``rsync -a``) does not. What it cannot see: bytes changed in place with the size and
        modification time put back, or within the file system's timestamp resolution of the stamp being taken. None
        where the file system reports no modification time (then only the data's own digest can tell)."""
        path = self._path(rel)
        entries = []
        if isinstance(self.fs, LocalFileSystem):
            for folder, _, files in os.walk(path):
                for name in files:
                    st = os.stat(os.path.join(folder, name))
                    entries.append(f"{os.path.relpath(os.path.join(folder, name), path)}:{st.st_size}:{st.st_mtime_ns}")
            if os.path.isfile(path):
                st = os.stat(path)
                entries.append(f":{st.st_size}:{st.st_mtime_ns}")
        else:
            self.fs.invalidate_cache(path)
            for name, info in sorted(self.fs.find(path, detail=True).items()):
                when = next((info[k] for k in ("mtime", "LastModified", "ETag", "etag", "updated", "created") if info.get(k)), None)
                if when is None:
                    return None
                entries.append(f"{name[len(path):]}:{info.get('size')}:{when}")
        return hashlib.blake2b("\n".join(sorted(entries)).encode(), digest_size=16).hexdigest()

    def delete(self, rel: str) -> None:
        try:
            self.fs.rm_file(self._path(rel))
        except FileNotFoundError:
            pass

    def delete_files(self, rels: list[str]) -> None:
        """Remove these files (those already gone too), in one call where the file system takes many."""
        try:
            self.fs.rm([self._path(rel) for rel in rels])
        except FileNotFoundError:  # one went meanwhile: the others one by one
            for rel in rels:
                self.delete(rel)

    def write_files(self, files: dict[str, bytes]) -> None:
        """Write several files as one set, in order (the last one, e.g. report.json, says the set is there): on a
        local disk every file is written beside its place first and only then renamed into it, so a full disk or a
        kill while writing leaves the earlier set whole, never part of each; objects are put one by one."""
        if not isinstance(self.fs, LocalFileSystem):
            for rel, data in files.items():
                self.fs.makedirs(self._path(rel).rsplit("/", 1)[0], exist_ok=True)
                self.fs.pipe_file(self._path(rel), data)
            return
        staged: list[tuple[str, str]] = []
        try:
            for rel, data in files.items():
                path = self._path(rel)
                parent = path.rsplit("/", 1)[0]
                os.makedirs(parent, exist_ok=True)
                staged.append((f"{parent}/.tmp-{uuid.uuid4().hex}", path))
                with open(staged[-1][0], "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())  # a report is not rebuilt by a rerun: on the disk before it replaces the last
            for tmp, path in staged:  # renames need no space: once every file is written, the set goes in whole
                os.replace(tmp, path)
        except BaseException as exc:
            for tmp, _ in staged:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
            _name_the_file(exc, staged[-1][1] if staged else self.root)
            raise

    def remove_partial_writes(self) -> list[str]:
        """Remove what writes cut short by a kill left in a run's folder (SIGKILL, a worker killed for memory): this
        module's ``.tmp-<hex>`` files, Zarr's ``<chunk>.<hex>.partial``, a model or lock note half-written. Only for
        the run that holds the folder, as it starts: nothing of its own is being written yet, and no other run writes
        there. Only in what a run writes (its top level, store.zarr, markers, inputs), never in a folder below that
        holds a lock of its own (``--out run/predictions`` of a predict at work), and only files untouched for
        ``PARTIAL_WRITE_GRACE_S``. Local disks only (an object store commits whole objects). The paths removed,
        relative to the location."""
        root, removed = self.local_root, []
        if root is None or not os.path.isdir(root):
            return removed
        # writers that take no lock may be at work in OUT this moment (`ecgpipe status` keeping input digests, the
        # checks of a run about to be refused, compare --json): what was touched in the last ten minutes stays
        before = time.time() - PARTIAL_WRITE_GRACE_S
        partial = re.compile(r"\.tmp-[0-9a-f]{32}|.+\.[0-9a-f]{32}\.partial|model\.next\.skops\.tmp|\.ecgpipe\.lock\.tmp")
        tops = [(root, [], [e.name for e in os.scandir(root) if e.is_file()])]
        below = (os.walk(os.path.join(root, name)) for name in ("store.zarr", "markers", "inputs"))
        for folder, subfolders, files in itertools.chain(tops, *below):
            subfolders[:] = [d for d in subfolders if not os.path.exists(os.path.join(folder, d, ".ecgpipe.lock"))]
            for name in filter(partial.fullmatch, files):
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path := os.path.join(folder, name)).st_mtime < before:
                        os.remove(path)
                        removed.append(os.path.relpath(path, root))
        return removed

    def put_file(self, local_file: str, rel: str) -> None:
        self.fs.makedirs(self._path(rel).rsplit("/", 1)[0], exist_ok=True)
        self.fs.put_file(local_file, self._path(rel))
