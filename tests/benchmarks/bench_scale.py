"""Orchestration cost against the number of records: synthetic CinC-like corpora (30-s single-lead 300 Hz records
written with ``wfdb.wrsamp`` from real MIT-BIH excerpts, labelled per record), run through the real flow, side by
side with the same stage functions called in a plain loop.

    python tests/benchmarks/bench_scale.py --data-dir ../shared/data/physionet --sizes 100 1000 10000

Per size and stage: the wall time in the flow and the pure compute (the functions the flow's tasks call, in a plain
loop in one process), their ratio, the cost per record, every stage's seconds, the flow process's peak memory (RSS of the
process that runs the flow, measured as a child), and the files and folders the run's output holds per record (what an
inode quota counts). One JSON line per size. The CNN runs on 32x32 images and no
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


def pure_seconds(cfg, data: Path, scratch: Path) -> dict[str, float]:
    """Every stage's own work in a plain loop in this process (no Prefect, no Dask), with the functions the flow's
    tasks call: every record read, windowed and stored; the table planned from the records' summaries and every
    chunk written; every chunk's spectrograms and CNN features; every fold of every protocol. Seconds per stage."""
    from ecgpipe import store as zs
    from ecgpipe.location import Location
    from ecgpipe.markers import Markers
    from ecgpipe.protocols import make_splits
    from ecgpipe.stages import classification, features, segments, spectrograms, table
    from ecgpipe.store import Layout

    units = segments.plan_records(cfg, data, download=False)
    store = str(scratch / "store.zarr")
    zs.ensure_groups(store, *Layout.GROUPS)
    seconds, t = {}, time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal t
        seconds[stage], t = time.perf_counter() - t, time.perf_counter()

    summaries = [segments.compute_record(store, unit, cfg)[0] for unit in units]
    lap("segments")
    planned = table.plan_table(store, summaries, cfg)
    (job,) = table.table_tasks(planned, cfg, 1)
    written = table.create_table_arrays(store, planned, cfg)
    written |= table.write_table_chunks(store, job.first_chunk, job.n_chunks, job.record_names, planned.rhythm_labels, cfg)
    table.finish_table(store, planned, cfg, Markers(Location(str(scratch))), written)
    lap("table")
    n, size = len(planned), cfg.run.chunk_size
    spec_array, shape = spectrograms.array_name(cfg), spectrograms.row_shape(cfg)
    zs.create_array(store, Layout.data(spec_array), (n, *shape), (size, *shape), Layout.SPECTROGRAM_DTYPE)
    for i in range(job.n_chunks):
        spectrograms.compute_chunk(store, spec_array, i, cfg)
    lap("spectrograms")
    (extractor,) = features.feature_arrays(cfg, spectrograms.chunk_keys(cfg, planned))
    attrs = features.describe_extractor(cfg)
    zs.create_array(store, extractor.data, (n, attrs["width"]), (size, attrs["width"]), Layout.FEATURE_DTYPE)
    for i in range(job.n_chunks):
        features.compute_chunk(store, spec_array, i, [(extractor.array, attrs["layer"])], cfg)
    lap("features")
    rows = classification.read_classification_data(store, extractor.array)
    for protocol in cfg.cv.protocols:
        splits, _ = make_splits(protocol, rows.y, rows.subjects, cfg.cv, rows.databases)
        for fold in range(len(splits)):
            classification.evaluate_fold(rows, cfg, protocol, fold)
    lap("classify")
    return seconds


def flow_in_child(cfg_path: Path, data: Path, out: Path) -> tuple[float, float]:
    """Run the flow in a child process (as a user would); its wall time and the flow process's own peak RSS (MiB;
    Dask workers and the Prefect server are other processes)."""
    code = ("from ecgpipe.cli import _quiet_environment; _quiet_environment();"
            "from ecgpipe.orchestration.console import quiet_console; quiet_console();"
            "from ecgpipe.config import load_config; from flows.ecg_pipeline import run_pipeline;"
            f"run_pipeline(load_config({str(cfg_path)!r}), {str(data)!r}, {str(out)!r});"
            # VmHWM, not ru_maxrss: Linux carries the parent's high-water mark into ru_maxrss across fork and exec
            "print('PEAK_KIB', next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')))")
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
        wall, peak_mib = flow_in_child(cfg_path, data, root / f"n{n}" / "out")
        pure = pure_seconds(cfg, data, root / f"n{n}" / "pure")
        run = json.loads((root / f"n{n}" / "out" / "run.json").read_text())
        report = json.loads((root / f"n{n}" / "out" / "report.json").read_text())
        in_flow = report["stage_seconds"]
        stages = {stage: {"wall_s": in_flow[stage], "pure_s": round(pure[stage], 2), "ratio": round(in_flow[stage] / pure[stage], 2),
                          "ms_per_record": round(1000 * in_flow[stage] / n, 2)} for stage in pure}
        entries = sum(1 for _ in (root / f"n{n}" / "out").rglob("*"))  # files and folders: inodes
        line = {"benchmark": "scale", "records": n, "segments_tasks": run["stages"]["segments"]["tasks"], "stages": stages,
                "flow_wall_s": round(wall, 1), "flow_peak_rss_mib": round(peak_mib), "n_segments": report["n_segments"],
                "output_entries": entries, "entries_per_record": round(entries / n, 2)}
        print(f"{n:6d} records ({report['n_segments']} windows): flow {wall:.0f} s, peak RSS {peak_mib:.0f} MiB, "
              f"{entries} files and folders ({entries / n:.2f} per record); per stage "
              "in the flow vs pure (ratio, ms per record): "
              + "; ".join(f"{k} {v['wall_s']:.1f} vs {v['pure_s']:.1f} s ({v['ratio']}, {v['ms_per_record']})" for k, v in stages.items()),
              flush=True)
        lines.append(line)
    for line in lines:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
