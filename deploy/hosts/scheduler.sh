#!/usr/bin/env bash
# Dask scheduler with TLS. TLS_DIR holds ca.pem, node.pem, node-key.pem (see make-certs.sh).
set -euo pipefail
TLS_DIR=${TLS_DIR:-/etc/ecgpipe/tls}
exec dask scheduler --protocol tls --port "${PORT:-8786}" --dashboard-address "${DASHBOARD:-127.0.0.1:8787}" \
  --tls-ca-file "$TLS_DIR/ca.pem" --tls-cert "$TLS_DIR/node.pem" --tls-key "$TLS_DIR/node-key.pem" \
  --preload ecgpipe.orchestration.tls_roles   # clients only with the client certificate, workers with the node one
