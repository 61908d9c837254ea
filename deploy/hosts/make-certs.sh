#!/usr/bin/env bash
# Make a private CA, one certificate for cluster nodes (scheduler + workers) and one for clients.
# Usage: deploy/hosts/make-certs.sh DIR [HOSTNAME...]   (keep DIR private; copy ca.pem + the pair a host needs)
set -euo pipefail
dir=${1:?usage: make-certs.sh DIR [HOSTNAME...]}; shift || true
mkdir -p "$dir" && cd "$dir"
san="DNS:localhost,IP:127.0.0.1"; for h in "$@"; do san="$san,DNS:$h"; done
openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=ecgpipe-ca" -keyout ca-key.pem -out ca.pem
# node: scheduler and workers (they serve and connect); client: the ecgpipe flow process only (it connects).
# Give each host only the pair it needs: a client machine never holds node-key.pem.
for who in node client; do
  usage=$([ "$who" = node ] && echo "serverAuth,clientAuth" || echo "clientAuth")
  openssl req -newkey rsa:3072 -nodes -subj "/CN=ecgpipe-$who" -keyout "$who-key.pem" -out "$who.csr"
  openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
    -extfile <(printf "subjectAltName=%s\nextendedKeyUsage=%s" "$san" "$usage") -out "$who.pem"
done
chmod 600 ./*-key.pem
echo "certificates in $dir: ca.pem, node.pem/node-key.pem (scheduler, workers), client.pem/client-key.pem"
