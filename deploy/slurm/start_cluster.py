"""Start a Dask cluster on SLURM (CPU jobs plus GPU jobs advertising GPU=1), with TLS, and run ecgpipe on it.

    pip install dask-jobqueue
    deploy/hosts/make-certs.sh /shared/ecgpipe-tls $(hostname)        # once; keep the folder private (chmod 700)
    python deploy/slurm/start_cluster.py --config paper4 --data-dir /shared/physionet --out /shared/runs/paper4 \
        --tls-dir /shared/ecgpipe-tls

Scheduler and workers use the node certificate, this script (the client) the client certificate; connections
without a certificate of the run's CA are refused. Dashboards listen on 127.0.0.1 of their node: reach them through
an SSH tunnel (``ssh -L 8787:localhost:8787 <scheduler node>``).
"""

import argparse
from pathlib import Path

from dask_jobqueue import SLURMCluster
from distributed.security import Security

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

tls = Path(args.tls_dir)
nodes = Security(tls_ca_file=str(tls / "ca.pem"), tls_scheduler_cert=str(tls / "node.pem"), tls_scheduler_key=str(tls / "node-key.pem"),
                 tls_worker_cert=str(tls / "node.pem"), tls_worker_key=str(tls / "node-key.pem"), require_encryption=True)
client = Security(tls_ca_file=str(tls / "ca.pem"), tls_client_cert=str(tls / "client.pem"), tls_client_key=str(tls / "client-key.pem"),
                  require_encryption=True)

# the scheduler registers clients only with the client certificate, workers only with the node one
cpu = SLURMCluster(protocol="tls://", security=nodes, scheduler_options={"dashboard_address": "127.0.0.1:8787",
                                                                          "preload": ["ecgpipe.orchestration.tls_roles"]})
cpu.scale(jobs=args.cpu_jobs)
# GPU workers join the CPU cluster's scheduler: one process per GPU, with the GPU resource.
gpu = SLURMCluster(
    queue="gpu", cores=8, processes=1, memory="64GiB", job_extra_directives=["--gres=gpu:1"], protocol="tls://", security=nodes,
    scheduler_options={"address": cpu.scheduler_address}, worker_extra_args=["--resources", "GPU=1"],
)
gpu.scale(jobs=args.gpu_jobs)
# the flow process connects as a client: the DASK_* settings of deploy/hosts/dask-tls.yaml, from the client pair
import dask  # noqa: E402

with dask.config.set({"distributed.comm.require-encryption": True, "distributed.comm.tls.ca-file": client.tls_ca_file,
                      "distributed.comm.tls.client.cert": client.tls_client_cert,
                      "distributed.comm.tls.client.key": client.tls_client_key}):
    run_pipeline(load_config(args.config), args.data_dir, args.out, scheduler=cpu.scheduler_address)
