"""Content keys: what a unit of work was computed from.

A unit's key hashes its inputs (record file digests, or the keys of the upstream units it reads), the settings of its
stage and of the stages before it, and the stage's code version. A unit whose stored key equals the key it would get
now is up to date and is skipped; any difference recomputes it.

A stage's code version is, by construction, the hash of its stage module and of every ``ecgpipe`` module that module
imports, directly or through others, at module level or inside a function (found by reading their ``import``
statements, see :func:`module_closure`). So no edit to code that decides a stage's output can be missed; an edit to
a module the stage imports only for its types recomputes the stage too (conservative by design). What is hashed is the
code's tokens without comments, docstrings and line layout (:func:`code_tokens`): fixing a comment or a docstring, or
re-wrapping a line, leaves every stored unit valid (no stage reads a docstring: ``test_store_keys`` checks it).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import os
import tokenize
from pathlib import Path

import numpy as np

PACKAGE = "ecgpipe"
_ROOT = Path(__file__).resolve().parent.parent  # the folder holding the ecgpipe package


def content_key(*parts) -> str:
    """sha256 of the JSON form of ``parts`` (dicts sorted), as hex."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def array_digest(data: np.ndarray) -> str:
    """sha256 of an array's bytes (C order): what a marker records of the data its unit wrote."""
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def module_file(name: str) -> Path | None:
    """The source file of an ``ecgpipe`` module or package; None when there is none (a name imported from a module)."""
    base = _ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, module: str) -> set[str]:
    """Every module name an ``import`` statement in ``path`` may refer to (``from a import b`` gives a and a.b)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


@functools.cache
def module_closure(module: str, without: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``module`` and every ``ecgpipe`` module it imports, transitively, with the packages that contain them.
    Modules in ``without`` (and what only they import) are left out."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name in without or not (name == PACKAGE or name.startswith(PACKAGE + ".")):
            continue
        path = module_file(name)
        if path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        todo += sorted(_imported_names(path, name))
    return tuple(sorted(seen))


def _docstring_spans(tree: ast.Module) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of the docstrings of a module, its classes and its functions."""
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                spans.append(((first.lineno, first.col_offset), (first.end_lineno, first.end_col_offset)))
    return spans


def _version_spans(tree: ast.Module) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) of a module-level ``__version__ = ...``: a release number computes nothing, so bumping it alone
    must not make every stage stale."""
    return [((n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset)) for n in tree.body
            if isinstance(n, ast.Assign) and [getattr(t, "id", None) for t in n.targets] == ["__version__"]]


def code_tokens(source: str) -> str:
    """The source's tokens that decide what it does, one per line: comments, docstrings, a ``__version__``
    assignment, blank lines and line breaks inside brackets left out, indentation reduced to its structure
    (INDENT/DEDENT). Two sources with the same tokens run the same way."""
    tree = ast.parse(source)
    spans = _docstring_spans(tree) + _version_spans(tree)
    kept: list[str] = []
    after_skipped = False
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING):
            continue
        if any(start <= tok.start < end for start, end in spans):
            after_skipped = True
            continue
        if after_skipped and tok.type == tokenize.NEWLINE:  # the skipped statement's own end goes with it
            after_skipped = False
            continue
        after_skipped = False
        text = "" if tok.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE, tokenize.ENDMARKER) else tok.string
        kept.append(f"{tokenize.tok_name[tok.type]} {text}")
    return "\n".join(kept)


@functools.cache
def code_version(module: str, without: tuple[str, ...] = ()) -> str:
    """Hash of the code of ``module_closure(module, without)`` (its :func:`code_tokens`): changes whenever what any
    of that code does may change, not for a comment or a docstring."""
    h = hashlib.sha256()
    for name in module_closure(module, without):
        h.update(name.encode())
        h.update(code_tokens(module_file(name).read_text(encoding="utf-8")).encode())
    return h.hexdigest()[:16]


def file_digest(paths: list[str | Path]) -> str:
    """sha256 over the names and contents of some files (a record's .hea/.dat/annotation files), in the order given:
    a renamed file changes it."""
    return read_digest(paths)[0]


def read_digest(paths: list[str | Path]) -> tuple[str, bool]:
    """``file_digest`` and whether every file there was read to its end (False: one raised on reading, so the digest
    says so rather than what the file holds: ``input_digests`` does not keep it)."""
    h = hashlib.sha256()
    complete = True
    for p in paths:
        p = Path(p)
        h.update(p.name.encode())
        if not p.is_file():
            h.update(b"<missing>")
            continue
        try:
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError:  # unreadable (permissions): the record's own read names the file; planning goes on
            h.update(b"<unreadable>")
            complete = False
    return h.hexdigest(), complete


def signal_digest(db_dir: str | Path, record: str) -> str:
    """sha256 over a record's header and signal files (not its annotations): the same recording, wherever it lies."""
    return file_digest(record_files(db_dir, record, "")[:-1])


# an EDF file's suffix in any case (.edf, .EDF, .Edf...): recorders and Windows tools write either
EDF_SPELLINGS = tuple("." + "".join(c.upper() if k >> i & 1 else c for i, c in enumerate("edf")) for k in range(8))


def edf_record_file(db_dir: str | os.PathLike, record: str) -> str | None:
    """``<record>.edf`` (in any case) when a database's record is an EDF file: no WFDB header beside it (a WFDB
    header wins)."""
    stem = os.path.join(os.fspath(db_dir), record)
    if os.path.isfile(stem + ".hea"):
        return None
    return next((stem + suffix for suffix in EDF_SPELLINGS if os.path.isfile(stem + suffix)), None)


def record_files(db_dir: str | Path, record: str, annotator: str) -> list[Path]:
    """The files a record's segments depend on: its header, every signal file the header names, its annotations
    (an EDF record, one with ``<record>.edf`` and no WFDB header: that file and its annotations)."""
    db_dir = Path(db_dir)
    header = db_dir / f"{record}.hea"
    edf = edf_record_file(db_dir, record)
    if edf:
        return [Path(edf), db_dir / f"{record}.{annotator}"]
    return [*_header_files(header), db_dir / f"{record}.{annotator}"]


def header_lines(path: str | Path) -> list[list[str]]:
    """A WFDB header's lines split into fields, comments and blank lines left out: the record line first, then one
    line per signal (or, in a multi-segment record's header, per segment), as written: UTF-8, else Latin-1 (older
    tools wrote a unit "µV" so). Raises ``OSError``."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def is_multi_segment(lines: list[list[str]]) -> bool:
    """The record line of a multi-segment record reads ``name/n_segments`` (MIMIC's waveform databases)."""
    return bool(lines) and "/" in lines[0][0]


def _header_files(header: Path, depth: int = 0) -> list[Path]:
    """A WFDB header and the files it names: its signal files, or a multi-segment record's segments (each one's
    header and signal files; ``~``, a gap, has none)."""
    files = [header]
    if not header.is_file():
        return files
    try:
        lines = header_lines(header)
    except OSError:
        return files
    names = sorted({line[0] for line in lines[1:]} - {"~"})  # "~": a gap, or a layout's signal file: no file
    if is_multi_segment(lines) and depth == 0:  # the lines name segments, not files
        for name in names:
            if "/" not in name:
                files += _header_files(header.parent / f"{name}.hea", depth + 1)
    else:
        # a header names its signal files relative to its own folder (records in subfolders: ptbdb, PTB-XL)
        files += [header.parent / n for n in names if "/" not in n]
    return files
