"""Prefect and Dask around the stages: thin tasks (``tasks``), per-stage bookkeeping (``bookkeeping``), the steps the
flow lists (``steps``), the model artifact (``model_artifact``), the cluster and Prefect API a run talks to
(``cluster``) and the ecgpipe code its workers run (``worker_code``), the checks before any work (``preflight``),
Ctrl-C and SIGTERM (``interrupt``), what the console shows (``console``) and the scheduler preload that checks
certificate roles (``tls_roles``). Nothing here computes a value that ends up in the store: that is
``ecgpipe.stages``."""
