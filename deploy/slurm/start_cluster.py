"""Start a Dask cluster on SLURM (CPU jobs plus GPU jobs advertising GPU=1, all on one scheduler), with TLS, and run
ecgpipe on it.

    pip install dask-jobqueue
    deploy/hosts/make-certs.sh /shared/ecgpipe-tls $(hostname)        # once; keep the folder private (chmod 700)
    python deploy/slurm/start_cluster.py --config paper4 --data-dir /shared/physionet --out /shared/runs/paper4 \
        --tls-dir /shared/ecgpipe-tls

Scheduler and workers use the node certificate, this script (the client) the client certificate; connections
without a certificate of the run's CA are refused. Dashboards listen on 127.0.0.1 of their node: reach them through
an SSH tunnel (``ssh -L 8787:localhost:8787 <scheduler node>``).

The CPU workers are a ``SLURMCluster`` (its scheduler runs in this process); the GPU workers are SLURM jobs of
dask-jobqueue's own job script pointed at that scheduler (a second ``SLURMCluster`` would start a second scheduler,
which the flow never sees). ``tests/test_deploy.py`` builds the cluster and runs the GPU job's worker command.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from dask_jobqueue import SLURMCluster
from dask_jobqueue.slurm import SLURMJob
from distributed.security import Security

# every dask worker process of these jobs keeps its dashboard on its node (the GPU jobs' own worker_extra_args replace
# jobqueue.yaml's, so they say it again)
WORKER_DASHBOARD = ["--dashboard-address", "127.0.0.1:0"]


def cluster_security(tls_dir: str | Path) -> Security:
    """Scheduler and workers with the node pair; the cluster object and the flow, which connect to the scheduler as
    clients, with the client pair (the scheduler's ``tls_roles`` preload registers clients only with that one)."""
    tls = Path(tls_dir)
    node, node_key = str(tls / "node.pem"), str(tls / "node-key.pem")
    return Security(tls_ca_file=str(tls / "ca.pem"), tls_scheduler_cert=node, tls_scheduler_key=node_key,
                    tls_worker_cert=node, tls_worker_key=node_key, tls_client_cert=str(tls / "client.pem"),
                    tls_client_key=str(tls / "client-key.pem"), require_encryption=True)


def cpu_cluster(security: Security, **options) -> SLURMCluster:
    """The scheduler (in this process) and its CPU worker jobs (jobqueue.yaml's settings; ``options`` override them)."""
    scheduler_options = {"dashboard_address": "127.0.0.1:8787", "preload": ["ecgpipe.orchestration.tls_roles"],
                         **options.pop("scheduler_options", {})}
    return SLURMCluster(protocol="tls://", security=security, scheduler_options=scheduler_options, **options)


def gpu_job_script(scheduler_address: str, security: Security, queue: str = "gpu", cores: int = 8,
                   memory: str = "64GiB", **options) -> str:
    """A SLURM job script of one GPU worker process (``--resources GPU=1``, ``--gres=gpu:1``) joining the scheduler at
    ``scheduler_address``: dask-jobqueue's job script, with the node certificate."""
    # a worker's name must be unique on the scheduler: the job id, expanded by the job's shell
    job = SLURMJob(scheduler=scheduler_address, name="ecgpipe-gpu-${SLURM_JOB_ID}", queue=queue, cores=cores, processes=1,
                   memory=memory, job_extra_directives=["--gres=gpu:1"], security=security,
                   worker_extra_args=["--resources", "GPU=1", *WORKER_DASHBOARD], **options)
    return job.job_script()


def submit(script: str, n_jobs: int) -> list[str]:
    """Submit ``script`` ``n_jobs`` times with sbatch; their job ids (for scancel)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(script)
    return [subprocess.run(["sbatch", "--parsable", f.name], check=True, capture_output=True, text=True).stdout.strip()
            for _ in range(n_jobs)]


def main() -> None:
    import dask

    from ecgpipe.config import load_config
    from flows.ecg_pipeline import run_pipeline

    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="paper4")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu-jobs", type=int, default=2)
    ap.add_argument("--gpu-jobs", type=int, default=1)
    ap.add_argument("--tls-dir", required=True, help="folder written by deploy/hosts/make-certs.sh, on the shared file system")
    args = ap.parse_args()

    security = cluster_security(args.tls_dir)
    cluster = cpu_cluster(security)
    cluster.scale(jobs=args.cpu_jobs)
    gpu_jobs = submit(gpu_job_script(cluster.scheduler_address, security), args.gpu_jobs) if args.gpu_jobs else []
    try:
        # the flow process connects as a client: the DASK_* settings of deploy/hosts/dask-tls.yaml, from the client pair
        with dask.config.set({"distributed.comm.require-encryption": True, "distributed.comm.tls.ca-file": security.tls_ca_file,
                              "distributed.comm.tls.client.cert": security.tls_client_cert,
                              "distributed.comm.tls.client.key": security.tls_client_key}):
            run_pipeline(load_config(args.config), args.data_dir, args.out, scheduler=cluster.scheduler_address)
    finally:
        if gpu_jobs:
            subprocess.run(["scancel", *gpu_jobs], check=False)
        cluster.close()


if __name__ == "__main__":
    main()
