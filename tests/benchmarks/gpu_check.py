"""The GPU check: everything ecgpipe claims about CUDA, measured in one go (a few minutes on one GPU).

    bash tests/benchmarks/gpu_check.sh [DATA_DIR] [--out DIR]   # or: python tests/benchmarks/gpu_check.py --data-dir DIR

1. CUDA features equal CPU features (real spectrograms of mitdb 100): float32 with TF32 off (max difference relative
   to the largest feature <= 1e-3), float32 as PyTorch runs it by default (TF32 convolutions), and AMP (the default
   autocast dtype: mean relative difference <= 5e-2 asked; the other dtype reported beside it);
2. speed: the pipeline's extractor (float16 spectrograms in host memory -> device -> resize -> backbone -> pooled ->
   host) against a bare ``model(x)`` loop on images already on the GPU, with AMP (bfloat16 and float16) and channels_last,
   eager and with ``torch.compile``, at batch sizes 256 and 1024; EfficientNet-Lite0 (the default) and DenseNet-121 (random weights: its ImageNet weights are not
   obtainable offline, and speed does not depend on them);
3. a real flow on a real Dask cluster (`dask scheduler`, one CPU worker, one worker with `--resources GPU=1`): every
   feature task must land on the GPU worker; the feature stage's img/s inside the run.
Each part is guarded: a failing part records its error and the others still run. Prints one JSON line (``ok``: every
check passed) and writes it to ``--out``/gpu_check.json. ``--allow-cpu`` runs the same steps on a machine without CUDA
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
import traceback
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
max_per_class = {max_per_class}
[features]
batch_size = {batch_size}
[cv]
n_splits = 3
protocols = ["stratified_10fold"]
[run]
chunk_size = {chunk_size}
"""
FLOW_RECORDS = ("418", "419", "420", "421")


def flow_on_gpu_worker(data_dir: Path, tmp: Path, cuda: bool) -> dict:
    """A real scheduler, a CPU worker and a GPU worker; a small run; where the feature tasks ran, and how fast."""
    from distributed import Client

    from ecgpipe.config import load_config as load
    from flows.ecg_pipeline import run_pipeline

    # `python -m dask` rather than a `dask` script beside the interpreter: packages may live on PYTHONPATH
    dask = [sys.executable, "-m", "dask"]
    sched_file = tmp / "scheduler.json"
    logs = {name: open(tmp / f"{name}.log", "w") for name in ("scheduler", "cpu-worker", "gpu-worker")}
    quiet = {"stdout": subprocess.DEVNULL, "start_new_session": True}
    procs = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
                               "--scheduler-file", str(sched_file)], stderr=logs["scheduler"], **quiet)]
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.2)
        worker = [*dask, "worker", "--scheduler-file", str(sched_file), "--nthreads", "1", "--dashboard-address", ":0"]
        procs.append(subprocess.Popen(worker, stderr=logs["cpu-worker"], **quiet))
        procs.append(subprocess.Popen([*worker, "--resources", "GPU=1"], stderr=logs["gpu-worker"], **quiet))
        with Client(scheduler_file=str(sched_file), timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            address = client.scheduler.address
            info = client.scheduler_info(n_workers=-1)["workers"]
        gpu_workers = {a for a, w in info.items() if (w.get("resources") or {}).get("GPU")}
        data = tmp / "data" / "vfdb"
        data.mkdir(parents=True)
        for rec in FLOW_RECORDS:
            for ext in ("hea", "dat", "atr"):
                (data / f"{rec}.{ext}").symlink_to((data_dir / "vfdb" / f"{rec}.{ext}").resolve())
        (data / "RECORDS").write_text("".join(f"{r}\n" for r in FLOW_RECORDS))
        sizes = {"max_per_class": 1500, "batch_size": 256, "chunk_size": 512} if cuda else \
                {"max_per_class": 64, "batch_size": 32, "chunk_size": 32}
        (tmp / "c.toml").write_text(FLOW_TOML.format(**sizes))
        t = time.perf_counter()
        report = run_pipeline(load(tmp / "c.toml"), str(tmp / "data"), str(tmp / "out"), scheduler=address)
        wall = time.perf_counter() - t
        ran = {json.loads(p.read_text())["worker"] for p in (tmp / "out" / "markers" / "features").rglob("*.json")}
        feature_s = report["stage_seconds"].get("features")
        return {"flow_ok": bool(ran) and ran <= gpu_workers, "flow_s": round(wall, 1),
                "flow_segments": report["n_segments"], "flow_placement": report["feature_placement"],
                "flow_feature_s": feature_s, "flow_stage_seconds": report["stage_seconds"],
                "flow_feature_img_s": round(report["n_segments"] / feature_s, 1) if feature_s else None}
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
        for f in logs.values():
            f.close()


def features_agree(spec: np.ndarray, backbone: str, device: str, cuda: bool) -> dict:
    """CUDA features against CPU (eager torch, float32) features of the same spectrograms."""
    cpu = FeatureExtractor(FeatureSettings(backbone=backbone, device="cpu", engine="torch", batch_size=64))(spec)

    def rel(x: np.ndarray) -> tuple[float, float]:
        return (round(float(np.abs(x - cpu).max()) / float(np.abs(cpu).max()), 6),
                round(float(np.abs(x - cpu).mean()) / float(np.abs(cpu).mean()), 6))

    out = {}
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        strict = FeatureExtractor(FeatureSettings(backbone=backbone, device=device, amp=False, batch_size=256))(spec)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    out["fp32_max_rel_diff"], out["fp32_mean_rel_diff"] = rel(strict)
    default = FeatureExtractor(FeatureSettings(backbone=backbone, device=device, amp=False, batch_size=256))(spec)
    out["fp32_default_max_rel_diff"], out["fp32_default_mean_rel_diff"] = rel(default)
    for dtype in ("bfloat16", "float16"):
        amp = FeatureExtractor(FeatureSettings(backbone=backbone, device=device, amp=True, amp_dtype=dtype, batch_size=256))(spec)
        out[f"amp_{dtype}_max_rel_diff"], out[f"amp_{dtype}_mean_rel_diff"] = rel(amp)
    out["amp_default_dtype"] = default_dtype = FeatureSettings().amp_dtype
    out["features_ok"] = out["fp32_max_rel_diff"] <= 1e-3 and out[f"amp_{default_dtype}_mean_rel_diff"] <= 5e-2
    return out


def bare_loop(model, batches: list[torch.Tensor], device: str, dtype: str, amp: bool):
    """The bare loop: the model over images already on the device, nothing else."""
    @torch.inference_mode()
    def run():
        for x in batches:
            with torch.autocast(device, dtype=getattr(torch, dtype), enabled=amp):
                model(x)
    return run


def speed(spec: np.ndarray, backbone: str, device: str, cuda: bool, variants: tuple[tuple[int, bool, str], ...],
          weights: str = "pretrained") -> dict:
    """Pipeline extractor vs a bare model loop over the same images (already on the device), AMP on CUDA; one entry
    per (batch size, torch.compile, autocast dtype) variant."""
    n = len(spec)
    model, _ = load_backbone(backbone, weights)
    model = model.eval().to(device, memory_format=torch.channels_last)
    out: dict = {}
    for bs, compiled, dtype in variants:
        batches = [spectrograms_to_images(torch.from_numpy(spec[i : i + bs].astype(np.float32)).to(device), 224)
                   .contiguous(memory_format=torch.channels_last) for i in range(0, n, bs)]

        tag = f"{backbone}_bs{bs}_{'compile' if compiled else 'eager'}_{dtype}"
        settings = FeatureSettings(backbone=backbone, weights=weights, device=device, amp=True, amp_dtype=dtype,
                                   batch_size=bs, compile=compiled, engine="torch")
        pipeline = FeatureExtractor(settings)
        bare = torch.compile(model) if compiled else model
        t = time.perf_counter()
        pipe_s, bare_s = timed(lambda p=pipeline: p(spec), 3), timed(bare_loop(bare, batches, device, dtype, cuda), 3)
        out[tag] = {"pipeline_img_s": round(n / pipe_s, 1), "bare_img_s": round(n / bare_s, 1),
                    "ratio": round(bare_s / pipe_s, 3), "wall_s": round(time.perf_counter() - t, 1)}
        print(json.dumps({tag: out[tag]}), file=sys.stderr, flush=True)
        del batches, pipeline, bare
        torch._dynamo.reset()
    return out


def guarded(result: dict, name: str, fn, *args) -> None:
    t = time.perf_counter()
    try:
        result.update(fn(*args))
    except Exception as exc:  # a failing part must not cost the others' numbers (one shot on a lent GPU)
        traceback.print_exc()
        result.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:500]
    result.setdefault("part_seconds", {})[name] = round(time.perf_counter() - t, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data/physionet")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--n", type=int, default=8192, help="images for the speed test (real spectrograms, tiled)")
    ap.add_argument("--out", default=None, help="folder for gpu_check.json")
    ap.add_argument("--skip-flow", action="store_true")
    ap.add_argument("--allow-cpu", action="store_true", help="dry run without CUDA (tiny sizes; no measurement)")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(json.dumps({"benchmark": "gpu_check", "ok": False, "error": "no CUDA device (use --allow-cpu for a dry run)"}))
        sys.exit(2)
    device = "cuda" if cuda else "cpu"
    n = args.n if cuda else 64
    result: dict = {"benchmark": "gpu_check", "device": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)",
                    "torch": torch.__version__, "cudnn": torch.backends.cudnn.version() if cuda else None,
                    "backbone": args.backbone, "n_images": n}
    t0 = time.perf_counter()
    cfg = load_config("paper4")
    base = spectrogram_chunk(real_segments(args.data_dir, min(n, 512)), cfg.segments.target_fs, cfg.spectrogram).astype(np.float16)
    spec = np.concatenate([base] * -(-n // len(base)))[:n]
    result["spectrogram_shape"] = list(spec.shape[1:])

    guarded(result, "agree", features_agree, spec[:512] if cuda else spec[:32], args.backbone, device, cuda)
    lite = ((256, False, "bfloat16"), (256, True, "bfloat16"), (1024, False, "bfloat16"), (1024, True, "bfloat16"),
            (256, False, "float16"), (1024, True, "float16")) if cuda else ((16, False, "bfloat16"), (16, True, "float16"))
    guarded(result, "speed_lite0", lambda: {"speed": speed(spec, args.backbone, device, cuda, lite)})
    dense = ((256, False, "bfloat16"), (256, False, "float16")) if cuda else ((16, False, "bfloat16"),)
    guarded(result, "speed_densenet121", lambda: {"speed_densenet121": speed(
        spec[: n // 2] if cuda else spec[:16], "densenet121", device, cuda, dense, "random")})
    if not args.skip_flow:
        with tempfile.TemporaryDirectory(prefix="ecgpipe-gpu-check-") as tmp:
            guarded(result, "flow", flow_on_gpu_worker, Path(args.data_dir), Path(tmp), cuda)
    runs = result.get("speed", {})
    if runs:
        best = max(r["pipeline_img_s"] for r in runs.values())
        result["targets"] = {"pipeline_vs_bare>=0.8": max(r["ratio"] for r in runs.values()) >= 0.8,
                             "lite0_amp>=3000_img_s": best >= 3000}
    result["ok"] = bool(result.get("flow_ok", args.skip_flow) and result.get("features_ok") and "errors" not in result)
    result["total_s"] = round(time.perf_counter() - t0, 1)
    line = json.dumps(result)
    print(line)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_check.json").write_text(line + "\n")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
