"""Content keys: what a unit of work was computed from.

A unit's key hashes its inputs (record file digests, or the keys of the upstream units it reads), the settings of its
stage and of the stages before it, and the stage's code version (a hash of the source files the stage runs). A unit
whose stored key equals the key it would get now is up to date and is skipped; any difference recomputes it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

# Source files whose code decides each stage's output. Editing one of them makes that stage's units stale.
STAGE_SOURCES = {
    "segments": ("records.py", "segments.py", "dataset.py", "databases.py", "labels.py"),
    # the rhythm block (RR features, waveform descriptors) is stored with a record's windows but keyed apart from
    # them: changing it recomputes the records and the classifiers, not the spectrograms and CNN features
    "rhythm": ("rhythm.py", "waveform.py"),
    "spectrograms": ("spectrogram.py",),
    "features": ("features.py", "backbones.py"),
    "classify": ("classify.py",),
}


def content_key(*parts) -> str:
    """sha256 of the JSON form of ``parts`` (dicts sorted), as hex."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


@functools.lru_cache(maxsize=None)
def code_version(stage: str) -> str:
    pkg = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in STAGE_SOURCES[stage]:
        h.update(name.encode())
        h.update((pkg / name).read_bytes())
    return h.hexdigest()[:16]


def file_digest(paths: list[str | Path]) -> str:
    """sha256 over the contents of some files (a record's .hea/.dat/annotation files), in the order given."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update(p.name.encode())
        if p.is_file():
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(b"<missing>")
    return h.hexdigest()


def record_files(db_dir: str | Path, record: str, annotator: str) -> list[Path]:
    """The files a record's segments depend on: its header, every signal file the header names, its annotations."""
    db_dir = Path(db_dir)
    header = db_dir / f"{record}.hea"
    files = [header]
    if header.is_file():
        try:
            lines = header.read_text(errors="replace").splitlines()
            names = sorted({ln.split()[0] for ln in lines[1:] if ln.strip() and not ln.startswith("#")})
            files += [db_dir / n for n in names if "/" not in n]
        except (OSError, IndexError):
            pass
    files.append(db_dir / f"{record}.{annotator}")
    return files
