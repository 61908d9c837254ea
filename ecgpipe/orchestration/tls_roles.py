"""Scheduler preload for TLS clusters: a certificate's role decides what it may register as.

Dask's TLS accepts any certificate its CA signed, whatever it was made for; ``deploy/hosts/make-certs.sh`` makes a
node certificate (CN ``ecgpipe-node``: scheduler and workers) and a client certificate (CN ``ecgpipe-client``: the
flow process). With this preload the scheduler registers clients only over connections authenticated by the client
certificate, and workers and nannies only over those authenticated by the node certificate: a stolen client key cannot
join the cluster as a worker (and see every task's data), and a node key cannot submit work as a client.

    dask scheduler --protocol tls ... --preload ecgpipe.orchestration.tls_roles
"""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger("ecgpipe.tls_roles")

CLIENT_CN, NODE_CN = "ecgpipe-client", "ecgpipe-node"
ROLES = {"register-client": CLIENT_CN, "register-worker": NODE_CN, "register_nanny": NODE_CN}


def common_name(comm) -> str | None:
    """The CN of the certificate the peer of ``comm`` authenticated with (None: no TLS, no certificate)."""
    cert = (getattr(comm, "extra_info", None) or {}).get("peercert") or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def _guard(op: str, role: str, handler):
    @functools.wraps(handler)
    async def guarded(comm, *args, **kwargs):
        cn = common_name(comm)
        if cn != role:
            logger.warning("refused %s from %s: certificate %r, not %r", op, getattr(comm, "peer_address", "?"), cn, role)
            comm.abort()
            raise PermissionError(f"{op}: the peer's certificate ({cn!r}) is not a {role!r} certificate")
        return await handler(comm, *args, **kwargs)

    return guarded


def dask_setup(scheduler) -> None:
    for op, role in ROLES.items():
        scheduler.handlers[op] = _guard(op, role, scheduler.handlers[op])
    logger.info("TLS roles enforced: clients need %s, workers and nannies %s", CLIENT_CN, NODE_CN)
