"""Start a Dask cluster on SLURM (CPU jobs plus GPU jobs advertising GPU=1) and run ecgpipe on it.

    pip install dask-jobqueue
    python deploy/slurm/start_cluster.py --config paper4 --data-dir /shared/physionet --out /shared/runs/paper4
"""

import argparse

from dask_jobqueue import SLURMCluster

from ecgpipe.config import load_config
from flows.ecg_pipeline import run_pipeline

ap = argparse.ArgumentParser()
ap.add_argument("--config", default="paper4")
ap.add_argument("--data-dir", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--cpu-jobs", type=int, default=2)
ap.add_argument("--gpu-jobs", type=int, default=1)
args = ap.parse_args()

cpu = SLURMCluster()  # settings from jobqueue.yaml
cpu.scale(jobs=args.cpu_jobs)
# GPU workers join the CPU cluster's scheduler: one process per GPU, with the GPU resource.
gpu = SLURMCluster(
    queue="gpu", cores=8, processes=1, memory="64GiB", job_extra_directives=["--gres=gpu:1"],
    scheduler_options={"address": cpu.scheduler_address}, worker_extra_args=["--resources", "GPU=1"],
)
gpu.scale(jobs=args.gpu_jobs)
run_pipeline(load_config(args.config), args.data_dir, args.out, scheduler=cpu.scheduler_address)
