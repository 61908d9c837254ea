"""Entry point for Prefect deployments (``deploy/prefect/prefect.yaml``): parameters a scheduler can fill in.

It builds the Dask task runner from its parameters (a local cluster, or ``scheduler``) and runs the main flow as a
subflow. The Prefect worker that launches it has ``PREFECT_API_URL`` set, so every Dask worker reports to that API.
"""

from __future__ import annotations

from prefect import flow

from ecgpipe.config import load_config
from flows.ecg_pipeline import check_store_reachable, ecg_pipeline, task_runner


@flow(name="ecgpipe-run")
def ecgpipe_run(config: str = "paper4", data_dir: str | None = None, out_dir: str = "runs/paper4", scheduler: str | None = None) -> dict:
    """Run ecgpipe: ``config`` is a preset name or a TOML path; ``scheduler`` an existing Dask scheduler address."""
    cfg = load_config(config)
    if scheduler:
        check_store_reachable(scheduler, out_dir)
    runner = task_runner(cfg, out_dir, scheduler)
    report = ecg_pipeline.with_options(task_runner=runner)(
        config=cfg.model_dump(mode="json"), data_dir=data_dir, out_dir=out_dir
    )
    return {k: report[k] for k in ("n_segments", "wall_s", "protocols")}
