#!/usr/bin/env bash
# GPU worker: one process per GPU, advertising the GPU resource. When any worker advertises GPU, ecgpipe sends every
# feature task to such workers (dask.annotate(resources={"GPU": 1})) and the other stages to any worker.
# With dask-cuda installed, `dask cuda worker ... --resources GPU=1` pins one process per visible GPU instead.
set -euo pipefail
TLS_DIR=${TLS_DIR:-/etc/ecgpipe/tls}
for gpu in $(nvidia-smi --query-gpu=index --format=csv,noheader); do
  CUDA_VISIBLE_DEVICES=$gpu dask worker "tls://${SCHEDULER:?set SCHEDULER=host:port}" --nthreads 1 --resources GPU=1 \
    --name "$(hostname)-gpu$gpu" --dashboard-address "${WORKER_DASHBOARD:-127.0.0.1:0}" \
    --tls-ca-file "$TLS_DIR/ca.pem" --tls-cert "$TLS_DIR/node.pem" --tls-key "$TLS_DIR/node-key.pem" &
done
wait
