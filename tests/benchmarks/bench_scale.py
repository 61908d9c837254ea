"""Orchestration cost against the number of records: synthetic CinC-like corpora (30-s single-lead 300 Hz records
written with ``wfdb.wrsamp`` from real MIT-BIH excerpts, labelled per record), run through the real flow, side by
side with the same stage functions called in a plain loop.

    python tests/benchmarks/bench_scale.py --data-dir ../shared/data/physionet --sizes 100 1000 10000

Per size: the segments and segment-table stages' wall time in the flow and their pure compute (the same stage
functions in a plain loop in one process), their ratios, the cost per record, every stage's seconds, and the flow process's peak memory (RSS of the
process that runs the flow, measured as a child). One JSON line per size. The CNN runs on 32x32 images and no
classifier is tuned: what scales with the number of records is measured, not the backbone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import wfdb
from scipy.signal import resample_poly

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from ecgpipe.config import load_config  # noqa: E402
from ecgpipe.records import read_episodes  # noqa: E402

SOURCES = [("100", "(N", "N"), ("103", "(N", "N"), ("201", "(AFIB", "A"), ("203", "(AFIB", "A")]
TOML = """
name = "scale"
[databases.synth]
fs = 300.0
lead = [0]
labels_csv = "REFERENCE.csv"
[classes]
normal = ["N"]
afib = ["A"]
[segments]
target_fs = 300.0
length_s = 10.0
stride_s = 10.0
exclude_labels = ["~"]
[features]
image_size = 32
[classifier]
kind = "logreg"
pca = 16
[cv]
n_splits = 5
protocols = ["grouped_by_subject"]
[run]
chunk_size = 256
n_workers = 2
"""


def write_corpus(physionet: Path, folder: Path, n: int) -> None:
    """n records of 30 s, cycling through excerpts of real normal-sinus and AF episodes."""
    folder.mkdir(parents=True)
    pieces = []
    for source, rhythm, label in SOURCES:
        path = str(physionet / "mitdb" / source)
        sig = wfdb.rdrecord(path, channels=[0]).p_signal[:, 0]
        ep = max((e for e in read_episodes(path, "atr", len(sig)) if e.label == rhythm), key=lambda e: e.n_samples)
        for k in range(min(16, ep.n_samples // (30 * 360))):
            start = ep.start + k * 30 * 360
            pieces.append((resample_poly(sig[start : start + 30 * 360], 5, 6), label))
    rows, names = [], []
    for i in range(n):
        piece, label = pieces[i % len(pieces)]
        name = f"S{i:06d}"
        scaled = piece * (1 + 0.001 * (i // len(pieces)))  # every record its own bytes
        wfdb.wrsamp(name, fs=300, units=["mV"], sig_name=["ECG"], p_signal=scaled[:, None], fmt=["16"], write_dir=str(folder))
        rows.append(f"{name},{label}")
        names.append(name)
    (folder / "REFERENCE.csv").write_text("\n".join(rows) + "\n")
    (folder / "RECORDS").write_text("\n".join(names) + "\n")


def pure_seconds(cfg, data: Path, scratch: Path) -> tuple[float, float]:
    """The segments and segment-table stages' own work in a plain loop (no Prefect, no Dask): every record read,
    windowed and stored; then the table planned from the records' summaries and every chunk written."""
    from ecgpipe import store as zs
    from ecgpipe.stages import segments, table
    from ecgpipe.store import Layout

    units = segments.plan_records(cfg, data, download=False)
    store = str(scratch / "store.zarr")
    zs.ensure_groups(store, *Layout.GROUPS, *[Layout.database(db) for db in cfg.databases])
    t = time.perf_counter()
    summaries = [segments.compute_record(store, unit, cfg)[0] for unit in units]
    t_segments = time.perf_counter() - t
    t = time.perf_counter()
    planned = table.plan_table(store, summaries, cfg)
    table.create_table_arrays(store, planned, cfg)
    (job,) = table.table_tasks(planned, cfg, 1)
    table.write_table_chunks(store, job.first_chunk, job.n_chunks, job.record_names, planned.rhythm_labels, cfg)
    return t_segments, time.perf_counter() - t


def flow_in_child(cfg_path: Path, data: Path, out: Path) -> tuple[float, float]:
    """Run the flow in a child process (as a user would); its wall time and the flow process's own peak RSS (MiB;
    Dask workers and the Prefect server are other processes)."""
    code = ("import resource; from ecgpipe.cli import _quiet_environment; _quiet_environment();"
            "from ecgpipe.orchestration.console import quiet_console; quiet_console();"
            "from ecgpipe.config import load_config; from flows.ecg_pipeline import run_pipeline;"
            f"run_pipeline(load_config({str(cfg_path)!r}), {str(data)!r}, {str(out)!r});"
            "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t
    peak_kib = int(next(ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("PEAK_KIB")))
    return wall, peak_kib / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data/physionet")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--out", default="runs/scale")
    args = ap.parse_args()
    physionet, root = Path(args.data_dir), Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    lines = []
    for n in sorted(args.sizes):
        data = root / f"n{n}" / "data"
        write_corpus(physionet, data / "synth", n)
        cfg_path = root / f"n{n}" / "scale.toml"
        cfg_path.write_text(TOML)
        cfg = load_config(cfg_path)
        pure, pure_table = pure_seconds(cfg, data, root / f"n{n}" / "pure")
        wall, peak_mib = flow_in_child(cfg_path, data, root / f"n{n}" / "out")
        run = json.loads((root / f"n{n}" / "out" / "run.json").read_text())
        report = json.loads((root / f"n{n}" / "out" / "report.json").read_text())
        seg = report["stage_seconds"]["segments"]
        line = {"benchmark": "scale", "records": n, "segments_tasks": run["stages"]["segments"]["tasks"],
                "segments_wall_s": seg, "segments_pure_s": round(pure, 2), "segments_ratio": round(seg / pure, 2),
                "segments_s_per_record": round(seg / n, 4), "table_wall_s": report["stage_seconds"]["table"],
                "table_pure_s": round(pure_table, 2), "table_ratio": round(report["stage_seconds"]["table"] / pure_table, 2),
                "table_ms_per_record": round(1000 * report["stage_seconds"]["table"] / n, 2),
                "stage_seconds": report["stage_seconds"],
                "flow_wall_s": round(wall, 1), "flow_peak_rss_mib": round(peak_mib), "n_segments": report["n_segments"]}
        lines.append(line)
        print(f"{n:6d} records: segments {seg:7.1f} s in the flow ({line['segments_tasks']} tasks) vs {pure:7.1f} s pure "
              f"(ratio {line['segments_ratio']}), {line['segments_s_per_record']:.4f} s/record; table "
              f"{line['table_wall_s']:.1f} s vs {pure_table:.1f} s pure (ratio {line['table_ratio']}); flow {wall:.0f} s, "
              f"peak RSS {peak_mib:.0f} MiB", flush=True)
    for line in lines:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
