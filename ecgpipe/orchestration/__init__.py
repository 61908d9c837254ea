"""Prefect and Dask around the stages: thin tasks (``tasks``), per-stage bookkeeping (``bookkeeping``), the steps the
flow lists (``steps``) and the cluster and Prefect API a run talks to (``cluster``). Nothing here computes a value
that ends up in the store: that is ``ecgpipe.stages``."""
