"""Running the pipeline for a resolved configuration in a fresh Python process (as a user's run would be)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from ecgpipe.config import PipelineConfig


def run_in_subprocess(cfg: PipelineConfig, data_dir: str, out: Path, config_file: Path, log: Path) -> float:
    """Write ``cfg`` to ``config_file`` (JSON), run the flow on it into ``out``; returns the wall time in seconds."""
    config_file.write_text(cfg.model_dump_json())
    code = (
        "import json; from ecgpipe.config import config_from_dict; from ecgpipe.cli import _quiet_environment;"
        "_quiet_environment(); from flows.ecg_pipeline import run_pipeline;"
        f"run_pipeline(config_from_dict(json.load(open({str(config_file)!r}))), {data_dir!r}, {str(out)!r})"
    )
    t = time.perf_counter()
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-c", code], check=True, stdout=fh, stderr=subprocess.STDOUT)
    return time.perf_counter() - t


def window_svm_run(run: Path, what: str):
    """A finished run's report (as JSON), its classifier settings and its classification data (the store's features
    and rhythm block), for benchmarks that refit its window-level SVM (``what`` names the benchmark in the refusal)."""
    import json

    from ecgpipe.config import ClassifierSettings
    from ecgpipe.stages.classification import read_classification_data

    report = json.loads((run / "report.json").read_text())
    base = ClassifierSettings.model_validate(report["config"]["classifier"])
    if base.kind != "svc" or base.level != "window":
        raise SystemExit(f"{run}: its classifier is {base.kind} at {base.level} level; {what} needs a window-level SVM")
    return report, base, read_classification_data(str(run / "store.zarr"), report["features_array"].removesuffix("/data"))
