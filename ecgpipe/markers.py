"""Completion markers: the source of truth for what a run has finished.

A marker is a small JSON file ``OUT/markers/<stage>/<unit>.json`` holding the unit's content key (see ``keys.py``),
a digest of the data it wrote and a summary. It is written *after* the unit's data is fully in the store, atomically,
so a unit killed half-way has no marker (or an old key) and is redone. Each unit's marker is written only by the task
that owns the unit, so markers never race. ``OUT`` may be a local folder or an fsspec URL.
"""

from __future__ import annotations

import json

from ecgpipe.location import Location


class Markers:
    def __init__(self, out_dir):
        self.location = out_dir if isinstance(out_dir, Location) else Location(out_dir)

    @staticmethod
    def _rel(stage: str, unit: str) -> str:
        return f"markers/{stage}/{unit}.json"

    def read(self, stage: str, unit: str) -> dict | None:
        text = self.location.read_text(self._rel(stage, unit))
        try:
            return json.loads(text) if text is not None else None
        except json.JSONDecodeError:
            return None

    def is_done(self, stage: str, unit: str, key: str) -> bool:
        marker = self.read(stage, unit)
        return marker is not None and marker.get("key") == key

    def write(self, stage: str, unit: str, key: str, info: dict | None = None) -> None:
        self.location.write_text(self._rel(stage, unit), json.dumps({"key": key, **(info or {})}))
