"""Entry point for Prefect deployments (``deploy/prefect/prefect.yaml``): parameters a scheduler can fill in.

It runs the main flow as a subflow through ``run_pipeline`` (preflight, the output folder's lock, the Dask task runner
from its parameters: a local cluster, or ``scheduler``). The Prefect worker that launches it has ``PREFECT_API_URL`` set, so every Dask worker reports to that API.
"""

from __future__ import annotations

from prefect import flow

from ecgpipe.config import load_config
from flows.ecg_pipeline import run_pipeline


def deployment_config(config: str, verify: bool = False, max_records: int | None = None):
    """The run's config as ``ecgpipe run --config CONFIG [--verify] [--max-records N]`` would load it."""
    run = {"verify": "content" if verify else None, "max_records": max_records}
    return load_config(config, {"run": {k: v for k, v in run.items() if v is not None}})


@flow(name="ecgpipe-run")
def ecgpipe_run(config: str = "paper4", data_dir: str | None = None, out_dir: str = "runs/paper4", scheduler: str | None = None,
                verify: bool = False, max_records: int | None = None, strict: bool = False) -> dict:
    """Run ecgpipe: ``config`` is a preset name or a TOML path; ``scheduler`` an existing Dask scheduler address;
    ``verify``, ``max_records`` and ``strict`` as ``ecgpipe run``'s --verify (hash every finished unit's data: after
    an edit on a shared file system), --max-records (a pilot) and --strict (stop at the first bad record).
    The same path as ``ecgpipe run``: checks before any work, one run per output folder (a scheduled run that
    overlaps the previous one on the same folder is refused, not interleaved with it; an object store's URL has no
    lock), then the main flow as a
    subflow on the deployment's Prefect API."""
    report = run_pipeline(deployment_config(config, verify, max_records), data_dir, out_dir, scheduler, strict=strict or None)
    return {k: report[k] for k in ("n_segments", "wall_s", "protocols")}
