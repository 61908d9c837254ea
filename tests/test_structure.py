"""The code's structure, checked: every stage's code version covers every module the stage imports, upstream stages
never import downstream ones, no import cycle, no oversized module. Fast: no Prefect, no Dask, no torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from ecgpipe.keys import module_closure, module_file
from ecgpipe.plan import STAGES

from conftest import REPO

STAGE_MODULES = {
    "segments": "ecgpipe.stages.segments",
    "table": "ecgpipe.stages.table",
    "spectrograms": "ecgpipe.stages.spectrograms",
    "features": "ecgpipe.stages.features",
    "classify": "ecgpipe.stages.classification",
    "recording_grid": "ecgpipe.stages.recording_grid",
    "recording_scores": "ecgpipe.stages.recording_scores",
}


def test_every_stage_has_a_module_in_pipeline_order():
    assert list(STAGE_MODULES) == list(STAGES)
    for stage, module in STAGE_MODULES.items():
        assert __import__(module, fromlist=["STAGE"]).STAGE == stage


@pytest.mark.parametrize("stage", list(STAGE_MODULES))
def test_code_version_covers_every_module_the_stage_imports(stage):
    """Import the stage module in a fresh interpreter and run its unit functions' lazy imports: every ecgpipe module
    that ends up loaded must be hashed into the stage's code version."""
    module = STAGE_MODULES[stage]
    # modules the stage's functions import when they run (the CNN extractor, the model artifact)
    lazy = {"spectrograms": ["ecgpipe.features"], "features": ["ecgpipe.features"], "classify": ["ecgpipe.model"],
            "recording_grid": ["ecgpipe.features"]}
    probe = "import sys, json, importlib; " + "; ".join(f"importlib.import_module({m!r})" for m in [module, *lazy.get(stage, [])])
    probe += "; print(json.dumps(sorted(n for n in sys.modules if n == 'ecgpipe' or n.startswith('ecgpipe.'))))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout)
    hashed = set(module_closure(module))
    assert module in hashed
    assert set(loaded) - hashed == set(), f"{stage}: imported but not in its code version"


def test_a_module_left_out_of_the_closure_is_detected(tmp_path, monkeypatch):
    """The closure follows every import form: plain, from-import of a module, from-import of a name, relative, and
    imports inside functions."""
    import ecgpipe.keys as keys

    pkg = tmp_path / "ecgpipe"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import ecgpipe.b\nfrom ecgpipe import c\nfrom ecgpipe.d import name\n"
                              "def f():\n    from .sub import e\n")
    for name in ("b", "c", "d"):
        (pkg / f"{name}.py").write_text("name = 1\n")
    (pkg / "sub" / "e.py").write_text("from ..f import x\n")
    (pkg / "f.py").write_text("x = 1\n")
    (pkg / "unused.py").write_text("")
    monkeypatch.setattr(keys, "_ROOT", tmp_path)
    keys.module_closure.cache_clear()
    try:
        got = set(keys.module_closure("ecgpipe.a"))
    finally:
        keys.module_closure.cache_clear()
    assert got == {"ecgpipe", "ecgpipe.a", "ecgpipe.b", "ecgpipe.c", "ecgpipe.d", "ecgpipe.sub", "ecgpipe.sub.e", "ecgpipe.f"}


SOURCE = '''"""A module."""
import numpy as np  # why

__version__ = "0.4.0"


class Window:
    """A window."""

    size = 2

    def shift(self, by,
              scale=1):
        """Moved."""
        return (self.size +
                by * scale)  # layout
'''


@pytest.mark.parametrize("edit, same", [
    (lambda s: s.replace("# why", "# because"), True),
    (lambda s: s.replace('"""A window."""', '"""A 2-s window\n    of ECG."""'), True),
    (lambda s: s.replace('        """Moved."""\n', ""), True),  # a docstring removed
    (lambda s: s.replace('"""A module."""\n', ""), True),
    (lambda s: s.replace("by,\n              scale=1)", "by, scale=1)"), True),
    (lambda s: s + "\n\n# the end\n", True),
    (lambda s: s.replace("by * scale", "by / scale"), False),
    (lambda s: s.replace("size = 2", "size = 3"), False),
    (lambda s: s.replace("scale=1", "scale=2"), False),
    (lambda s: s.replace("size = 2", "size = 2\n    label = \"A window.\""), False),  # a string that is not a docstring
    (lambda s: s.replace("        return", "        pass\n        return"), False),
    (lambda s: s.replace('"0.4.0"', '"0.5.0"'), True),  # a release number alone recomputes nothing
    (lambda s: s.replace('__version__ = "0.4.0"', 'version = "0.4.0"'), False),  # any other assignment counts
])
def test_code_tokens_ignore_comments_docstrings_and_layout_but_not_code(edit, same):
    from ecgpipe.keys import code_tokens

    edited = edit(SOURCE)
    assert edited != SOURCE
    assert (code_tokens(edited) == code_tokens(SOURCE)) is same


def test_no_stage_code_reads_a_docstring():
    """Docstrings are left out of a stage's code version, which is safe only while no stage's code reads one."""
    for module in sorted({m for stage in STAGE_MODULES.values() for m in module_closure(stage)}):
        tree = ast.parse(module_file(module).read_text())
        names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert not names & {"__doc__", "getdoc"}, module


def test_upstream_stages_never_import_downstream_ones():
    order = list(STAGE_MODULES.values())
    for i, module in enumerate(order):
        downstream = set(order[i + 1 :])
        assert downstream.isdisjoint(module_closure(module)), f"{module} imports a later stage"


def _all_modules() -> list[str]:
    names = []
    for path in sorted((REPO / "ecgpipe").rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def _imports(name: str) -> set[str]:
    """ecgpipe modules that module ``name`` imports, at module level or inside a function (a lazy import that closes
    a cycle still ties two modules into one)."""
    path = module_file(name)
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *([base] if base else [])])
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("ecgpipe") and module_file(m) is not None and m != name}


def test_no_import_cycle():
    graph = {m: _imports(m) for m in _all_modules()}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in graph.get(m, ()):
            if n == "ecgpipe" or m.startswith(n + "."):  # a package and its own modules
                continue
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, m, n]))
            if n not in state:
                visit(n, [*stack, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_no_oversized_module():
    too_long = {str(p.relative_to(REPO)): n for p in (REPO / "ecgpipe").rglob("*.py")
                if (n := len(p.read_text().splitlines())) > 450}
    too_long |= {str(p.relative_to(REPO)): n for p in (REPO / "flows").glob("*.py")
                 if (n := len(p.read_text().splitlines())) > 200}
    assert too_long == {}


def test_progress_lines_say_done_total_rate_and_eta():
    from ecgpipe.orchestration.bookkeeping import progress_line

    assert progress_line("features", 120, 700, 0, 40.0) == "features: 120/700 (17 %), 3.0/s, ETA 3 min 13 s"
    assert progress_line("segments", 5, 10, 1, 10.0) == "segments: 5/10 (50 %), 0.5/s, ETA 10 s, 1 failed"
    assert progress_line("classify", 6, 6, 0, 3.0).endswith("done")
    assert progress_line("features", 0, 8, 0, 15.0) == "features: 0/8 (0 %), 0.0/s, ETA once a task has finished"  # not "ETA nan s"


def test_a_terminal_gets_a_live_bar_and_log_lines_go_above_it(monkeypatch):
    """On a terminal, wait_all shows a rich bar (done/total, %, time left) and the progress log lines leave the
    console (Prefect's API keeps them); the other log lines print through the bar's console; off a terminal, nothing."""
    import io
    import logging
    import sys
    from concurrent.futures import Future

    from ecgpipe.orchestration import console
    from ecgpipe.orchestration.bookkeeping import wait_all

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    class Done:  # what wait_all waits on: a finished future wrapped as Prefect wraps Dask's
        def __init__(self, value):
            self.wrapped_future = Future()
            self.wrapped_future.set_result(value)

        def result(self):
            return self.wrapped_future.result()

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.delenv(console.NO_BAR_ENV, raising=False)
    shown = []
    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(console.NoTaskLines())
    handler.emit = lambda record: shown.append(record.getMessage()) if handler.filter(record) else None
    logger = logging.getLogger("ecgpipe-test-bar")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        results, failures = wait_all([Done(i) for i in range(4)], "features", logger)
    finally:
        logger.removeHandler(handler)
    assert results == [0, 1, 2, 3] and failures == []
    assert "features" in terminal.getvalue() and "4/4" in terminal.getvalue() and "100%" in terminal.getvalue()
    assert not any(line.startswith("features: ") for line in shown)  # the bar says it instead
    monkeypatch.setenv(console.NO_BAR_ENV, "1")
    plain = Terminal()
    monkeypatch.setattr(sys, "stderr", plain)
    with console.stage_bar("segments", 3) as advance:
        advance()
    assert plain.getvalue() == ""


def test_the_flow_process_plans_a_run_without_importing_torch(physionet):
    """The flow process only plans and orchestrates: importing the flow, checking a run's settings (backbone names
    included) and planning its records must not load torch (~500 MiB of the flow process's memory)."""
    code = (
        "import sys; from flows.ecg_pipeline import run_pipeline; from ecgpipe.config import load_config;"
        "from ecgpipe.orchestration.preflight import preflight;"
        f"units = preflight(load_config('paper4-best'), {str(physionet)!r});"
        "print(len(units), sorted(m for m in ('torch', 'torchvision', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) == 70 and out[1:] == ["[]"], out


def test_the_console_shows_the_temporary_servers_address_without_prefects_docs_link():
    import logging

    from ecgpipe.orchestration.console import NoTaskLines

    record = logging.LogRecord("prefect", logging.INFO, __file__, 1, "Starting temporary server on http://127.0.0.1:8551\n"
                               "See https://docs.prefect.io/v3/concepts/server#how-to-guides for more information on "
                               "running a dedicated Prefect server.", (), None)
    assert NoTaskLines().filter(record) and record.getMessage() == "Starting temporary server on http://127.0.0.1:8551"
