"""Editing a stage's code makes exactly that stage and the stages downstream stale (``ecgpipe status``), and a rerun
recomputes exactly those. Real processes: the CLI runs on an edited copy of the package, with a real Prefect flow on
a real local Dask cluster, against a run made with the unedited code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, copy_records

# a system test: real Prefect flows, Dask clusters, torch models or processes (`make check` leaves it out)
pytestmark = pytest.mark.system

RECORDS = ["418", "426", "430"]
TOML = """
name = "stage-code"
[databases.vfdb]
lead = [0]
[classes]
normal = ["(N"]
vt = ["(VT"]
vf = ["(VF", "(VFIB", "(VFL"]
[sampling]
max_per_class = 12
[rhythm]
enabled = true
context_s = 8.0
[classifier]
inputs = "cnn+rhythm"
[features]
image_size = 32
[endpoints.shockable]
classes = ["vt", "vf"]
[recordings]
score = true
[cv]
n_splits = 3
[run]
chunk_size = 8
n_workers = 1
"""
ALL = ("segments", "table", "spectrograms", "features", "classify", "recording_grid", "recording_scores")
SCORING = ("classify", "recording_scores")
# the module edited -> the stages that must become stale (all others stay done). A record's grid (every window of it)
# is featurised again only when code its values come from changes: not for the table, the sampled windows' arrays,
# the classifier or the endpoints' tally
EDITS = {
    "ecgpipe/stages/segments.py": ALL,
    "ecgpipe/stages/table.py": ALL[1:5] + ALL[6:],
    "ecgpipe/stages/spectrograms.py": ALL[2:5] + ALL[6:],
    "ecgpipe/stages/features.py": ALL[3:5] + ALL[6:],
    # the CNN's code: features and every grid of CNN features; no spectrogram (featurize imports it, never to compute one)
    "ecgpipe/features.py": ALL[3:],
    "ecgpipe/stages/classification.py": SCORING,
    # the rhythm block is keyed apart from the windows: records, table, classifier and grids; no spectrogram or CNN chunk
    "ecgpipe/rhythm_block.py": ("segments", "table", "classify", "recording_grid", "recording_scores"),
    # pure maths beneath a stage is part of its code version too
    "ecgpipe/spectrogram.py": ALL[2:],
    "ecgpipe/classify.py": SCORING,
    "ecgpipe/recording_endpoints.py": ("recording_scores",),
    "ecgpipe/stages/recording_grid.py": ALL[5:],
    "ecgpipe/stages/recording_scores.py": ALL[6:],
}



def cli(code: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(code)}
    return subprocess.run([sys.executable, "-m", "ecgpipe.cli", *args], cwd=code, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, physionet, prefect_server):
    tmp = tmp_path_factory.mktemp("stage_code")
    data = tmp / "data"
    copy_records(physionet, data, "vfdb", RECORDS)
    (tmp / "cfg.toml").write_text(TOML)
    out = tmp / "base"
    proc = cli(REPO, "run", "--config", str(tmp / "cfg.toml"), "--data-dir", str(data), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"tmp": tmp, "out": out, "data": data}


def edited_copy(tmp: Path, module: str) -> Path:
    code = tmp / ("code-" + module.replace("/", "_"))
    for package in ("ecgpipe", "flows"):
        shutil.copytree(REPO / package, code / package, ignore=shutil.ignore_patterns("__pycache__"))
    with open(code / module, "a") as fh:
        fh.write("\n_EDITED = True  # an edit to the code (a comment or docstring alone changes no code version)\n")
    return code


@pytest.mark.parametrize("module", list(EDITS))
def test_editing_a_stage_module_makes_it_and_its_downstream_stale_and_a_rerun_recomputes_them(base_run, tmp_path, module):
    out = tmp_path / "out"
    shutil.copytree(base_run["out"], out)
    code = edited_copy(tmp_path, module)
    where = subprocess.run([sys.executable, "-c", "import ecgpipe; print(ecgpipe.__file__)"], cwd=code,
                           env={**os.environ, "PYTHONPATH": str(code)}, capture_output=True, text=True, check=True)
    assert where.stdout.strip() == str(code / "ecgpipe" / "__init__.py")  # the edited copy is what runs

    unedited = json.loads(cli(REPO, "status", "--out", str(out), "--json").stdout)
    assert all(s["rerun_computes"] == 0 for s in unedited["stages"].values())

    proc = cli(code, "status", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads(proc.stdout)["stages"]
    if module == "ecgpipe/stages/segments.py":  # every record stale: said so, not "nothing computed yet"
        assert json.loads(proc.stdout)["note"].startswith("every record done earlier is stale (3 of 3")
    stale = EDITS[module]
    for stage in ALL:
        got = status[stage]
        if stage not in stale:
            assert got["rerun_computes"] == 0 and got["done"] == got["total"], (stage, got)
        elif got["rerun_computes"] == "all":  # the windows themselves are stale: what follows waits for them
            assert module == "ecgpipe/stages/segments.py" and stage != "segments", (stage, got)
        else:  # stale: a marker with another key (a classifier row's is named by its key, found by its label)
            assert got["rerun_computes"] == got["stale"] == got["total"] and got["done"] == 0, (stage, got)

    proc = cli(code, "run", "--config", str(base_run["tmp"] / "cfg.toml"), "--data-dir", str(base_run["data"]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = json.loads((out / "run.json").read_text())["stages"]
    for stage in ALL:
        if stage in stale:
            assert stages[stage]["computed"] > 0 and stages[stage]["skipped"] == 0, (stage, stages[stage])
        else:
            assert stages[stage]["computed"] == 0, (stage, stages[stage])
    after = json.loads(cli(code, "status", "--out", str(out), "--json").stdout)
    assert all(s["rerun_computes"] == 0 for s in after["stages"].values())


# settings changed -> the stages a rerun computes again (the others reused): what admits a record (its checksum policy,
# the rate it must have) recomputes records, not their windows' spectrograms, CNN features or grids; the training
# windows' stride recomputes everything sampled from them, not the grids (every window of a record, a length apart)
SETTING_CHANGES = {
    "admission": (('lead = [0]', 'lead = [0]\nchecksum = "warn"\nfs = "any"'),
                  {"segments", "table", "classify", "recording_scores"}),
    "stride": (("[sampling]", "[segments]\nstride_s = 1.0\n[sampling]"),
               {"segments", "table", "spectrograms", "features", "classify", "recording_scores"}),
}


@pytest.mark.parametrize("change", list(SETTING_CHANGES))
def test_a_setting_recomputes_only_the_stages_whose_values_it_changes(base_run, tmp_path, change):
    (old, new), recomputed = SETTING_CHANGES[change]
    out = tmp_path / "out"
    shutil.copytree(base_run["out"], out)
    cfg = tmp_path / "changed.toml"
    assert old in TOML
    cfg.write_text(TOML.replace(old, new, 1))
    proc = cli(REPO, "run", "--config", str(cfg), "--data-dir", str(base_run["data"]), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert {stage for stage in ALL if stages[stage]["computed"] > 0} == recomputed, stages
