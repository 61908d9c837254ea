"""Completion markers: the source of truth for what a run has finished.

A marker is a small JSON file ``OUT/markers/<stage>/<unit>.json`` holding the unit's content key (see ``keys.py``),
a digest of the data it wrote, the stamp of the files holding that data and a summary. It is written *after* the
unit's data is fully in the store, atomically, so a unit killed half-way has no marker (or an old key) and is
redone. Each unit's marker is written only by the task that owns the unit (a classifier row's by the flow, which also
removes the folds kept for a row once its marker holds them), so markers never race. ``OUT`` may be a local folder or
an fsspec URL.

A unit is done when its marker has the key the unit would get now and its data is what the marker recorded. That
second check reads the data and hashes it only when the files' stamp (names, sizes, modification times:
``Location.files_stamp``) differs from the marker's, as git and make trust a file's size and time: a rerun that changes
nothing then costs a listing or a stat per unit instead of a read of the whole store (``run.verify = "content"``, or
``--verify``, hashes everything).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ecgpipe.location import Location


class Markers:
    def __init__(self, out_dir, verify: str = "stamp"):
        self.location = out_dir if isinstance(out_dir, Location) else Location(out_dir)
        self.verify = verify  # "stamp": trust unchanged files; "content": hash the data of every unit checked

    @staticmethod
    def _rel(stage: str, unit: str) -> str:
        return f"markers/{stage}/{unit}.json"

    def read(self, stage: str, unit: str) -> dict | None:
        text = self.location.read_text(self._rel(stage, unit))
        try:
            return json.loads(text) if text is not None else None
        except json.JSONDecodeError:
            return None

    def write(self, stage: str, unit: str, key: str, info: dict | None = None, files: str | None = None) -> None:
        """``files``: where the unit's data lies (relative to the output location, e.g. ``store.zarr/records/mitdb/
        100.zip``); its stamp is recorded so that a later check of unchanged files needs no read."""
        stamp = {"stamp": self.location.files_stamp(files)} if files is not None else {}
        self.location.write_text(self._rel(stage, unit), json.dumps({"key": key, **(info or {}), **stamp}))

    def delete(self, stage: str, unit: str) -> None:
        """Remove the unit's marker, where there is one."""
        self.location.delete(self._rel(stage, unit))

    def intact(self, marker: dict, files: str, digest: Callable[[], object], field: str = "digest") -> bool:
        """Whether a unit's stored data is what its marker recorded: the files' stamp is the marker's (nothing read),
        or else, and always with ``verify = "content"``, ``digest()`` (which reads the data) equals ``marker[field]``.
        Missing or unreadable data is not intact."""
        try:
            if self.verify == "stamp" and marker.get("stamp") and self.location.files_stamp(files) == marker["stamp"]:
                return True
            return digest() == marker.get(field)
        except Exception:  # missing or unreadable data
            return False
