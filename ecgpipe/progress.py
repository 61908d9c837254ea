"""What the console shows of ecgpipe's own lines, in every process: progress lines (one format for a run's stages
and ``ecgpipe predict``: done/total, rate and time left) and its warnings as one line."""

from __future__ import annotations

import os
import warnings

PROGRESS_EVERY_S = 15.0  # a line at least this often while a stage runs, and at every tenth of it


def progress_line(stage: str, done: int, total: int, failed: int, elapsed_s: float) -> str:
    """``features: 120/700 (17 %), 3.1/s, ETA 3 min 7 s`` (and the failures so far)."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else float("nan")
    eta_text = ("done" if done == total else "ETA once a task has finished" if not rate > 0
                else f"ETA {int(eta // 60)} min {int(eta % 60)} s" if eta >= 60 else f"ETA {eta:.0f} s")
    return (f"{stage}: {done}/{total} ({100 * done / total:.0f} %), {rate:.1f}/s, {eta_text}"
            + (f", {failed} failed" if failed else ""))


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """ecgpipe's own warnings (a lock taken over, a checksum read with 'warn') as one line, like its errors; others
    (libraries') keep Python's form, which says where they come from. ``warnings.formatwarning`` of the command line
    and of its worker processes."""
    if filename.startswith(os.path.dirname(os.path.abspath(__file__))):
        return f"ecgpipe: warning: {message}\n"
    return _python_warning(message, category, filename, lineno, line)


_python_warning = warnings.formatwarning
