"""Completion markers: the source of truth for what a run has finished.

A marker is a small JSON file ``OUT/markers/<stage>/<unit>.json`` holding the unit's content key (see ``keys.py``)
and a summary. It is written *after* the unit's data is fully in the store, atomically (temporary file + rename), so a
unit killed half-way has no marker (or an old key) and is redone. Each unit's marker is written only by the task that
owns the unit, so markers never race.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


class Markers:
    def __init__(self, out_dir: str | Path):
        self.root = Path(out_dir) / "markers"

    def path(self, stage: str, unit: str) -> Path:
        return self.root / stage / f"{unit}.json"

    def read(self, stage: str, unit: str) -> dict | None:
        try:
            return json.loads(self.path(stage, unit).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_done(self, stage: str, unit: str, key: str) -> bool:
        marker = self.read(stage, unit)
        return marker is not None and marker.get("key") == key

    def write(self, stage: str, unit: str, key: str, info: dict | None = None) -> None:
        path = self.path(stage, unit)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump({"key": key, **(info or {})}, f)
        os.replace(tmp, path)

    def clear(self, stage: str, unit: str) -> None:
        self.path(stage, unit).unlink(missing_ok=True)
