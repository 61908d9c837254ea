"""Real segments for benchmarks: 2-s windows of some mitdb records, resampled to 250 Hz (paper4 settings)."""

from __future__ import annotations

import numpy as np

from ecgpipe.config import load_config
from ecgpipe.dataset import record_windows
from ecgpipe.records import read_record


def real_segments(data_dir: str, n: int, records=("100", "201", "203", "207", "208", "209", "210", "219")) -> np.ndarray:
    # every common rhythm, so that the few records give enough windows (classes do not matter for timing)
    classes = {"any": ["(N", "(NSR", "(AFIB", "(AFL"], "vent": ["(VT", "(VF", "(VFL", "(B", "(T"]}
    cfg = load_config("paper4").model_copy(update={"classes": classes})
    parts, total = [], 0
    for rec in records:
        r = read_record(f"{data_dir}/mitdb", "mitdb", rec, cfg.database("mitdb"))
        w = record_windows(r, cfg).windows
        parts.append(w)
        total += len(w)
        if total >= n:
            break
    segs = np.concatenate(parts)
    reps = -(-n // len(segs))
    return np.tile(segs, (reps, 1))[:n]
