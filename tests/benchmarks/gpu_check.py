"""The GPU check: everything ecgpipe claims about CUDA, measured in one go (under 5 minutes on one GPU).

    bash tests/benchmarks/gpu_check.sh [DATA_DIR]        # or: python tests/benchmarks/gpu_check.py --data-dir DIR

1. a small flow on a real Dask cluster (`dask scheduler`, one CPU worker, one worker with `--resources GPU=1`):
   feature tasks must land on the GPU worker only;
2. CUDA features equal CPU features: float32 (max difference relative to the largest feature <= 1e-3) and with
   AMP (bf16 autocast: mean relative difference reported, <= 5e-2 asked);
3. speed on real spectrograms: the pipeline's extractor (float16 spectrograms in host memory -> device -> resize ->
   backbone -> pooled -> host) against a bare ``model(x)`` loop on batches already on the GPU, with AMP and
   channels_last, eager and with ``torch.compile``.
Prints one JSON line (``ok``: every check passed). ``--allow-cpu`` runs the same steps on a machine without CUDA
(tiny sizes, the "GPU" worker computes on the CPU): a dry run of the script itself, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _data import real_segments  # noqa: E402
from bench_features import timed  # noqa: E402  (best of repeats after a warm-up, CUDA-synchronised)

from ecgpipe.backbones import load_backbone  # noqa: E402
from ecgpipe.config import FeatureSettings, load_config  # noqa: E402
from ecgpipe.features import FeatureExtractor, spectrograms_to_images  # noqa: E402
from ecgpipe.spectrogram import spectrogram_chunk  # noqa: E402

FLOW_TOML = """
name = "gpu-check"
[databases.vfdb]
lead = [0]
[classes]
normal = ["(N"]
vt = ["(VT"]
vf = ["(VF", "(VFL"]
[sampling]
max_per_class = 64
[cv]
n_splits = 3
protocols = ["stratified_10fold"]
[run]
chunk_size = 32
"""


def flow_on_gpu_worker(data_dir: Path, tmp: Path) -> dict:
    """A real scheduler, a CPU worker and a GPU worker; a small run; where the feature tasks ran."""
    from distributed import Client

    from ecgpipe.config import load_config as load
    from flows.ecg_pipeline import run_pipeline

    dask = str(Path(sys.executable).with_name("dask"))
    sched_file = tmp / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
                               "--scheduler-file", str(sched_file)], **quiet)]
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        worker = [dask, "worker", "--scheduler-file", str(sched_file), "--nthreads", "1", "--dashboard-address", ":0"]
        procs.append(subprocess.Popen(worker, **quiet))
        procs.append(subprocess.Popen([*worker, "--resources", "GPU=1"], **quiet))
        with Client(scheduler_file=str(sched_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            address = client.scheduler.address
            info = client.scheduler_info(n_workers=-1)["workers"]
        gpu_workers = {a for a, w in info.items() if (w.get("resources") or {}).get("GPU")}
        data = tmp / "data" / "vfdb"
        data.mkdir(parents=True)
        for rec in ("418", "419", "420", "421"):
            for ext in ("hea", "dat", "atr"):
                (data / f"{rec}.{ext}").symlink_to((data_dir / "vfdb" / f"{rec}.{ext}").resolve())
        (data / "RECORDS").write_text("418\n419\n420\n421\n")
        (tmp / "c.toml").write_text(FLOW_TOML)
        t = time.perf_counter()
        report = run_pipeline(load(tmp / "c.toml"), str(tmp / "data"), str(tmp / "out"), scheduler=address)
        wall = time.perf_counter() - t
        ran = {json.loads(p.read_text())["worker"] for p in (tmp / "out" / "markers" / "features").rglob("*.json")}
        return {"flow_ok": bool(ran) and ran <= gpu_workers, "flow_s": round(wall, 1), "flow_segments": report["n_segments"],
                "flow_placement": report["feature_placement"], "flow_feature_s": report["stage_seconds"].get("features")}
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data/physionet")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--n", type=int, default=4096, help="images for the speed test (real spectrograms, tiled)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--allow-cpu", action="store_true", help="dry run without CUDA (tiny sizes; no measurement)")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(json.dumps({"benchmark": "gpu_check", "ok": False, "error": "no CUDA device (use --allow-cpu for a dry run)"}))
        sys.exit(2)
    device = "cuda" if cuda else "cpu"
    n, bs = (args.n, args.batch_size) if cuda else (64, 16)
    result: dict = {"benchmark": "gpu_check", "device": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)",
                    "torch": torch.__version__, "backbone": args.backbone, "n_images": n, "batch_size": bs}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ecgpipe-gpu-check-") as tmp:
        result.update(flow_on_gpu_worker(Path(args.data_dir), Path(tmp)))

    cfg = load_config("paper4")
    base = spectrogram_chunk(real_segments(args.data_dir, min(n, 512)), cfg.segments.target_fs, cfg.spectrogram).astype(np.float16)
    spec = np.concatenate([base] * -(-n // len(base)))[:n]
    cpu = FeatureExtractor(FeatureSettings(backbone=args.backbone, device="cpu", engine="torch", batch_size=64))(spec[:256])
    fp32 = FeatureExtractor(FeatureSettings(backbone=args.backbone, device=device, amp=False, batch_size=bs))(spec[:256])
    amp = FeatureExtractor(FeatureSettings(backbone=args.backbone, device=device, amp=True, batch_size=bs))(spec[:256])
    scale = float(np.abs(cpu).max())
    result["fp32_max_rel_diff"] = round(float(np.abs(fp32 - cpu).max()) / scale, 6)
    result["amp_mean_rel_diff"] = round(float(np.abs(amp - cpu).mean()) / float(np.abs(cpu).mean()), 6)
    features_ok = result["fp32_max_rel_diff"] <= 1e-3 and result["amp_mean_rel_diff"] <= 5e-2

    model, _ = load_backbone(args.backbone)
    model = model.eval().to(device, memory_format=torch.channels_last)
    batches = [spectrograms_to_images(torch.from_numpy(spec[i : i + bs].astype(np.float32)).to(device), 224)
               .contiguous(memory_format=torch.channels_last) for i in range(0, n, bs)]

    def bare_loop(m):
        @torch.inference_mode()
        def run():
            for x in batches:
                with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
                    m(x)
        return run

    for compiled in (False, True):
        tag = "compile" if compiled else "eager"
        settings = FeatureSettings(backbone=args.backbone, device=device, amp=True, batch_size=bs, compile=compiled)
        pipeline = FeatureExtractor(settings)
        bare = torch.compile(model) if compiled else model
        pipe_s, bare_s = timed(lambda p=pipeline: p(spec), 3), timed(bare_loop(bare), 3)
        result[f"pipeline_img_s_{tag}"] = round(n / pipe_s, 1)
        result[f"bare_img_s_{tag}"] = round(n / bare_s, 1)
        result[f"ratio_{tag}"] = round(bare_s / pipe_s, 3)
    best = max(result["pipeline_img_s_eager"], result["pipeline_img_s_compile"])
    result["targets"] = {"pipeline_vs_bare>=0.8": max(result["ratio_eager"], result["ratio_compile"]) >= 0.8,
                         "lite0_amp>=3000_img_s": best >= 3000}
    result["features_ok"] = features_ok
    result["ok"] = bool(result["flow_ok"] and features_ok)
    result["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
