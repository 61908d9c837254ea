#!/usr/bin/env bash
# CPU worker: record, segment, spectrogram and classification tasks (and features when no GPU worker exists).
# One thread per process: the tasks are numpy/torch code that uses its own threads well; measure on your hosts.
set -euo pipefail
TLS_DIR=${TLS_DIR:-/etc/ecgpipe/tls}
exec dask worker "tls://${SCHEDULER:?set SCHEDULER=host:port}" --nworkers "${NWORKERS:-$(nproc)}" --nthreads 1 \
  --dashboard-address "${WORKER_DASHBOARD:-127.0.0.1:0}" \
  --tls-ca-file "$TLS_DIR/ca.pem" --tls-cert "$TLS_DIR/node.pem" --tls-key "$TLS_DIR/node-key.pem"
