"""Progress lines, one format for a run's stages and ``ecgpipe predict``: done/total, rate and time left."""

from __future__ import annotations

PROGRESS_EVERY_S = 15.0  # a line at least this often while a stage runs, and at every tenth of it


def progress_line(stage: str, done: int, total: int, failed: int, elapsed_s: float) -> str:
    """``features: 120/700 (17 %), 3.1/s, ETA 3 min 7 s`` (and the failures so far)."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else float("nan")
    eta_text = ("done" if done == total else "ETA once a task has finished" if not rate > 0
                else f"ETA {int(eta // 60)} min {int(eta % 60)} s" if eta >= 60 else f"ETA {eta:.0f} s")
    return (f"{stage}: {done}/{total} ({100 * done / total:.0f} %), {rate:.1f}/s, {eta_text}"
            + (f", {failed} failed" if failed else ""))
