"""Which ecgpipe code a Dask worker runs. A worker imports ecgpipe's modules once, when its first task needs them, and
runs that code for the rest of its life, whatever the files say later; a run's content keys, computed by the run's
own process from the files as they are now, would then name code the worker does not run, and its results would be
stored, and trusted by every later run, as the new code's. ``cluster.check_store_reachable`` compares each worker's
``worker_code()`` with this process's ``installed_code()`` before a run on an existing cluster."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

PACKAGE = "ecgpipe"
_ROOT = Path(__file__).resolve().parent.parent  # the package's folder
# imported to run this check, in a worker's first check too: their files' times say nothing of older imports
_OWN = {PACKAGE, f"{PACKAGE}.orchestration", __name__}
CLOCK_SLACK_S = 1.0  # file systems' coarse times (and a shared one's clock a little off the worker's)


def installed_code() -> str:
    """Hash of every module of the package as its files are now (their tokens: comments and docstrings aside)."""
    from ecgpipe.keys import code_tokens

    h = hashlib.sha256()
    for path in sorted(_ROOT.rglob("*.py")):
        h.update(path.relative_to(_ROOT).as_posix().encode())
        h.update(code_tokens(path.read_text(encoding="utf-8")).encode())
    return h.hexdigest()[:16]


def worker_code() -> str:
    """This process's code: ``installed_code()``, or ``<...>`` naming the modules it imported whose files changed
    after it started (it runs what it imported, not what they say now)."""
    import psutil  # a dependency of distributed

    started = psutil.Process().create_time()
    changed = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and name not in _OWN and (name == PACKAGE or name.startswith(PACKAGE + ".")):
            try:
                if os.path.getmtime(path) > started + CLOCK_SLACK_S:
                    changed.append(name)
            except OSError:  # removed since
                changed.append(name)
    if changed:
        names = ", ".join(sorted(changed)[:3]) + (" ..." if len(changed) > 3 else "")
        return f"<imported {names} before its file changed>"
    return installed_code()
