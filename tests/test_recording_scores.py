"""Endpoints over whole recordings in the run's report (``[recordings] score = true``), with real processes: a real
Prefect flow on a local Dask cluster, real MIT-BIH and VFDB records as PhysioNet ships them, a real Zarr store.

Checked: every window of every record is featurised by predict's own path; every record is scored by the fold that
held its patient out; annotated runs and positive windows agree with the annotation files read by wfdb directly; a
grid task that fails loses no other record's result and is recomputed alone on the next run; a new decision setting
rescores without featurising again."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import wfdb

from ecgpipe.config import load_config
from ecgpipe.errors import StageFailed
from ecgpipe.grid import grid_features
from ecgpipe.model import load_model
from ecgpipe.predict import predict_loaded
from ecgpipe.protocols import GROUPED, make_splits
from ecgpipe.records import read_record
from ecgpipe.report_tables import per_subject_means
from ecgpipe.stages.classification import read_classification_data
from ecgpipe.stages.recording_grid import read_grid, settings_name
from ecgpipe.stages.recording_scores import endpoint_calls
from ecgpipe.status import run_status
from ecgpipe.store import Layout

from conftest import copy_records

pytestmark = pytest.mark.system

SLICE = {"mitdb": ["100", "201", "203", "207", "210"], "vfdb": ["418", "422", "426"]}
TOML = """
name = "recordings"
[databases.mitdb]
lead = ["MLII"]
[databases.vfdb]
lead = [0]
[classes]
normal = ["(N"]
afib = ["(AFIB"]
vt = ["(VT"]
vf = ["(VF", "(VFIB", "(VFL"]
[features]
image_size = 32
[sampling]
max_per_class = 40
[cv]
n_splits = 3
protocols = ["grouped_by_subject"]
[classifier]
kind = "svc"
inputs = "cnn+rhythm"
pca = 8
class_weight = "balanced"
subject_balance = 1.0
[rhythm]
enabled = true
irregularity = true
[endpoints.shockable]
classes = ["vt", "vf"]
[endpoints.af]
classes = ["afib"]
change_penalty = PENALTY
[recordings]
score = true
[run]
n_workers = 2
retries = 0
"""


def _config(tmp: Path, penalty: float) -> Path:
    path = tmp / f"recordings-{penalty:g}.toml"
    path.write_text(TOML.replace("PENALTY", repr(float(penalty))))
    return path


def _stages(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())["stages"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, physionet, prefect_server):
    """Runs into one folder: grid batch 0 failing, then scoring fold 1 failing, then clean, then with another AF
    change penalty."""
    from flows.ecg_pipeline import run_pipeline

    tmp = tmp_path_factory.mktemp("recordings")
    data = tmp / "data"
    for db, records in SLICE.items():
        copy_records(physionet, data, db, records)
    out = tmp / "out"
    faulty, faulty_stages = [], []
    for fault in ("recording_grid:0", "recording_scores:1"):
        os.environ["ECGPIPE_INJECT_FAILURE"] = fault
        try:
            with pytest.raises(StageFailed) as failed:
                run_pipeline(load_config(_config(tmp, 4.0)), str(data), str(out))
        finally:
            del os.environ["ECGPIPE_INJECT_FAILURE"]
        faulty.append(str(failed.value))
        faulty_stages.append(_stages(out))
    faulty_md = (out / "report.md").exists()
    clean = run_pipeline(load_config(_config(tmp, 4.0)), str(data), str(out))
    clean_stages = _stages(out)
    report_md = (out / "report.md").read_text()
    recordings_csv = list(csv.DictReader((out / "recordings.csv").open()))
    rescored = run_pipeline(load_config(_config(tmp, 0.0)), str(data), str(out))
    return {"faulty": faulty, "faulty_stages": faulty_stages, "faulty_md": faulty_md, "clean": clean, "clean_stages": clean_stages,
            "rescored": rescored, "rescored_stages": _stages(out), "out": out, "data": data, "md": report_md,
            "csv": recordings_csv, "cfg": load_config(_config(tmp, 4.0)), "cfg0": load_config(_config(tmp, 0.0))}


def test_failed_tasks_lose_only_their_records_and_are_recomputed_alone(runs):
    """Grid batch 0 (mitdb/100), then scoring fold 1, fail for a reason a rerun may cure (an I/O error, no retries
    left): no bad input, so the run ends as failed instead of reporting without those records (a report missing
    patients after a storage hiccup); what the stage finished is kept, and each next run computes only what failed."""
    grid_failed, fold_failed = runs["faulty"]
    assert grid_failed.startswith("recording_grid: 1 unit(s) failed for a reason a rerun may cure, not for bad input")
    assert "batch 0 (mitdb/100): OSError: injected failure" in grid_failed and "run again to compute only those" in grid_failed
    assert "one that fails so every time is a record: leave it out with databases.<db>.records" in grid_failed
    assert fold_failed.startswith("recording_scores: 1 unit(s) failed") and "fold 1: OSError: injected failure" in fold_failed
    assert not runs["faulty_md"]  # no report of a run that did not finish
    first, second = runs["faulty_stages"]
    assert (first["recording_grid"]["failed"], first["recording_grid"]["computed"]) == (1, 7)
    assert second["recording_grid"] == {"computed": 1, "skipped": 7, "failed": 0, "tasks": 1}  # mitdb/100 alone
    assert second["recording_scores"]["failed"] > 0 and second["recording_scores"]["computed"] == 0
    # the next run featurises nothing and scores all eight
    assert runs["clean_stages"]["recording_grid"] == {"computed": 0, "skipped": 8, "failed": 0, "tasks": 0}
    assert runs["clean_stages"]["recording_scores"]["computed"] == 1
    # a record that fails for its own data (bad input) is named, the others scored: the report says which
    from ecgpipe.report import render_markdown

    clean = runs["clean"]
    named = render_markdown({**clean, "recordings": {**clean["recordings"], "failed": [{"record": "mitdb/100", "error": "bad"}]}})
    assert "- not scored: `mitdb/100`: bad" in named and "| af | detector over 15 windows" in named
    assert runs["clean"]["recordings"]["failed"] == [] and runs["clean"]["recordings"]["n_records"] == 8
    # patients balanced in training (paper4-best's setting) through every fit: folds, model, detectors per fold
    assert "subjects balanced" in runs["clean"]["classifier"] and "subjects balanced" in runs["clean"]["recordings"]["classifier"]
    assert {r["fold"] for r in runs["clean"]["recordings"]["records"]} == {0, 1, 2}


def test_a_new_decision_setting_rescores_without_featurising_again(runs):
    assert runs["rescored_stages"]["recording_grid"] == {"computed": 0, "skipped": 8, "failed": 0, "tasks": 0}
    assert runs["rescored_stages"]["recording_scores"]["computed"] == 1
    before, after = runs["clean"]["recordings"]["endpoints"], runs["rescored"]["recordings"]["endpoints"]
    assert after["af"]["penalty"] == 0.0 and before["af"]["penalty"] == 4.0
    # without a change penalty the calls flicker: at least as many called runs
    assert after["af"]["called_runs"] >= before["af"]["called_runs"]
    assert after["shockable"] == before["shockable"]  # its decision did not change


def test_every_record_is_scored_by_the_fold_that_held_its_patient_out(runs):
    rec = runs["clean"]["recordings"]
    store = str(runs["out"] / "store.zarr")
    data = read_classification_data(store, None)
    splits, _ = make_splits(GROUPED.name, data.y, data.subjects, runs["cfg"].cv, data.databases)
    assert rec["n_folds"] == len(splits) and rec["protocol"] == GROUPED.name
    for r in rec["records"]:
        train_subjects = set(data.subjects[splits[r["fold"]][0]].tolist())
        assert r["subject"] not in train_subjects, r
    assert sorted(r["record"] for r in rec["records"]) == sorted(f"{db}/{n}" for db, names in SLICE.items() for n in names)


def test_the_grid_is_what_predict_sees(runs):
    cfg = runs["cfg"]
    rec = read_record(str(runs["data"] / "vfdb"), "vfdb", "418", cfg.database("vfdb"), n_leads=cfg.segments.n_leads)
    direct = grid_features(cfg, rec)
    stored = read_grid(str(runs["out"] / "store.zarr"), Layout.recording(settings_name(cfg), "vfdb", "418"))
    assert np.array_equal(stored.starts, direct.starts) and np.array_equal(stored.usable, direct.usable)
    assert np.array_equal(stored.cnn, direct.cnn) and np.array_equal(stored.rhythm, direct.rhythm)
    assert len(stored.starts) == int(rec.signals.shape[1] / rec.fs // cfg.segments.length_s)


def _aux_episodes(path: Path) -> list[tuple[str, int, int]]:
    """(label, start, end) rhythm episodes straight from the annotation file (wfdb), independent of ecgpipe.records."""
    ann = wfdb.rdann(str(path), "atr")
    n = wfdb.rdheader(str(path)).sig_len
    marks = [(s, a.strip("\x00")) for s, a in zip(ann.sample, ann.aux_note) if a.strip("\x00").startswith("(")]
    return [(label, s, marks[i + 1][0] if i + 1 < len(marks) else n) for i, (s, label) in enumerate(marks)]


def test_runs_and_positive_windows_agree_with_the_annotation_files(runs):
    cfg, rec = runs["cfg"], runs["clean"]["recordings"]
    af_labels = set(cfg.classes["afib"])
    n_runs, positive = 0, 0
    for db, names in SLICE.items():
        for name in names:
            episodes = _aux_episodes(runs["data"] / db / name)
            fs = wfdb.rdheader(str(runs["data"] / db / name)).fs
            last_end = None
            for label, start, end in episodes:
                if label in af_labels:
                    n_runs += last_end != start  # consecutive AF episodes are one run
                    last_end = end
            grid = read_grid(str(runs["out"] / "store.zarr"), Layout.recording(settings_name(cfg), db, name))
            for s in grid.starts / cfg.segments.target_fs:
                positive += any(label in af_labels and start <= s * fs and (s + cfg.segments.length_s) * fs <= end
                                for label, start, end in episodes)
    assert rec["endpoints"]["af"]["runs"] == n_runs > 0
    assert rec["endpoints"]["af"]["positive_windows"] == positive > 0
    per_record = sum(r["endpoints"]["af"]["positive_windows"] for r in rec["records"])
    assert per_record == positive
    assert 0 <= rec["endpoints"]["af"]["sensitivity"] <= 1


def test_the_report_and_the_csv_show_the_whole_recording_endpoints(runs):
    md, rows = runs["md"], runs["csv"]
    assert "## Endpoints over whole recordings, as `ecgpipe predict` calls them (new patients)" in md
    assert "detector over 15 windows, change penalty 4" in md
    assert len(rows) == 8 and {"record", "subject", "fold", "af_sensitivity", "shockable_false_alarms"} <= set(rows[0])
    # the time of negative windows called positive, beside EC57's false alarms (since 0.20.0): in the table and per record
    assert "false-positive min per hour" in md and all(float(r["af_false_positive_min_per_hour"]) >= 0 for r in rows)
    total = runs["clean"]["recordings"]["endpoints"]["af"]
    called = sum(float(r["af_false_positive_min_per_hour"]) * float(r["hours"]) for r in rows)  # minutes, every window scored
    assert total["false_positive_min_per_hour"] * total["hours"] == pytest.approx(called, abs=0.05)
    hours = sum(float(r["hours"]) for r in rows)
    assert hours == pytest.approx(runs["clean"]["recordings"]["hours"], abs=0.01)
    assert hours == pytest.approx((5 * 1805 + 3 * 2100) / 3600, rel=0.01)  # every window of every recording
    # EC57's average statistics over whole recordings (since 0.22.0): each patient's own rate from its records, averaged
    for name, ep in runs["clean"]["recordings"]["endpoints"].items():
        by_subject: dict[str, list[int]] = {}
        for r in runs["clean"]["recordings"]["records"]:
            if name in r["endpoints"]:
                t = by_subject.setdefault(r["subject"], [0, 0, 0, 0])
                for i, k in enumerate(("positive_windows", "true_positives", "negative_windows", "true_negatives")):
                    t[i] += r["endpoints"][name][k]
        own = [tp / pos for pos, tp, _, _ in by_subject.values() if pos]
        assert ep["sensitivity_per_subject"]["subjects"] == len(own) > 0
        assert ep["sensitivity_per_subject"]["mean"] == pytest.approx(np.mean(own), abs=1e-4)
        assert ep["sensitivity_per_subject"]["lowest"] == pytest.approx(min(own), abs=1e-4)
        assert per_subject_means(ep) in md and "per subject: mean sensitivity / specificity (lowest)" in md


def test_status_counts_the_grids_and_the_scores(runs):
    now = run_status(runs["cfg0"], str(runs["data"]), str(runs["out"]))["stages"]
    assert now["recording_grid"]["done"] == 8 and now["recording_grid"]["rerun_computes"] == 0
    assert now["recording_scores"]["done"] == 1
    # with the penalty of the runs before: the grids are current, the scores are not (the last run rescored them)
    before = run_status(runs["cfg"], str(runs["data"]), str(runs["out"]))["stages"]
    assert before["recording_grid"]["done"] == 8
    assert before["recording_scores"]["stale"] == 1 and before["recording_scores"]["rerun_computes"] == 1


def test_the_calls_are_predict_s_calls(runs):
    """With the same detectors (the run's model, as the last run wrote it), the stage's calls on a stored grid are
    exactly ``ecgpipe predict``'s on the record."""
    model = load_model(str(runs["out"] / "model.skops"))
    assert set(model.detectors) == {"af", "shockable"} and model.config.endpoints["af"].change_penalty == 0.0
    for db, name in (("vfdb", "426"), ("mitdb", "203")):
        rec = read_record(str(runs["data"] / db), db, name, model.config.database(db), n_leads=model.config.segments.n_leads)
        pred = predict_loaded(model, rec, smooth=1)
        grid = read_grid(str(runs["out"] / "store.zarr"), Layout.recording(settings_name(model.config), db, name))
        ours = endpoint_calls(grid, model.config, model.detectors)
        for endpoint in ("af", "shockable"):
            assert np.array_equal(ours[endpoint], pred.endpoint_calls[endpoint]), (db, name, endpoint)
        assert (pred.endpoint_calls["shockable"] == 1).any() or (pred.endpoint_calls["af"] == 1).any()


def test_compare_pairs_the_whole_recording_calls_of_two_runs(runs, tmp_path):
    """``ecgpipe compare`` of two runs that scored the recordings: each endpoint as predict calls it, paired over
    patients; the values are the reports' own; the AF penalty that changed moves AF alone."""
    from ecgpipe.compare import compare_runs

    for name in ("clean", "rescored"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(runs[name]))
    result = compare_runs(tmp_path / "clean", tmp_path / "rescored", n_boot=200)
    scopes = {s.scored.split(" ")[0]: s for s in result.scopes if s.protocol.startswith("whole recordings")}
    assert set(scopes) == {"shockable", "af"}
    for name, scope in scopes.items():
        c, before, after = scope.comparison, runs["clean"]["recordings"], runs["rescored"]["recordings"]
        assert c.metric(f"{name} sensitivity").a == pytest.approx(before["endpoints"][name]["sensitivity"], abs=1e-4)
        assert c.metric(f"{name} specificity").b == pytest.approx(after["endpoints"][name]["specificity"], abs=1e-4)
        assert c.n_subjects == len({r["subject"] for r in before["records"]})
        assert c.n_rows == before["endpoints"][name]["positive_windows"] + before["endpoints"][name]["negative_windows"]
    assert all(d.difference == 0 and d.ci95 == [0.0, 0.0] for d in scopes["shockable"].comparison.differences)
    assert "penalty 4 / 15 windows, penalty 0" in scopes["af"].scored


def test_a_run_that_fails_after_its_model_is_fitted_leaves_the_earlier_report_and_model_together(runs):
    """Last in this module (it changes the folder). The model was written in place as soon as it was fitted: a run
    failing after the fit (here a whole-recording fold, under --strict) left a new model.skops beside the earlier
    report.json, whose model_digest no longer matched it, while the console said both were the earlier run's."""
    from ecgpipe.model import content_digest
    from flows.ecg_pipeline import run_pipeline

    out, data = runs["out"], runs["data"]
    before = {name: (out / name).read_bytes() for name in ("model.skops", "report.json")}
    assert json.loads(before["report.json"])["model_digest"] == content_digest(out / "model.skops")
    config = _config(out.parent, 2.0)  # a new decision setting: the artifact is refitted
    os.environ["ECGPIPE_INJECT_FAILURE"] = "recording_scores:0"
    try:
        with pytest.raises(Exception, match="injected failure"):
            run_pipeline(load_config(config), str(data), str(out), strict=True)
    finally:
        del os.environ["ECGPIPE_INJECT_FAILURE"]
    assert {name: (out / name).read_bytes() for name in before} == before
    assert (out / "model.next.skops").is_file()  # fitted, waiting for its run's report
    report = run_pipeline(load_config(config), str(data), str(out))
    assert report["model_digest"] == content_digest(out / "model.skops") != json.loads(before["report.json"])["model_digest"]
    assert not (out / "model.next.skops").exists()
    # an artifact a failed run left waiting is removed once a run reuses the one in place
    os.environ["ECGPIPE_INJECT_FAILURE"] = "recording_scores:0"
    try:
        with pytest.raises(Exception, match="injected failure"):
            run_pipeline(load_config(_config(out.parent, 3.0)), str(data), str(out), strict=True)
    finally:
        del os.environ["ECGPIPE_INJECT_FAILURE"]
    assert (out / "model.next.skops").is_file()
    assert run_pipeline(load_config(config), str(data), str(out))["model_digest"] == report["model_digest"]
    assert not (out / "model.next.skops").exists()


class _Killed(BaseException):
    """A stop in the narrowest window: the report written, the model not yet in place."""


def test_a_run_stopped_between_its_report_and_its_model_has_it_put_in_place_by_the_next(runs, monkeypatch):
    """After the test above. A run stopped after writing its report left that report beside the earlier model.skops,
    its own model waiting as model.next.skops: predict warned of nothing, and the next run fitted the model again.
    Now predict says so, the console's note names the waiting model, and the next run puts it in place and reuses it."""
    from ecgpipe import cli_checks
    from ecgpipe.model import content_digest
    from ecgpipe.orchestration import model_artifact
    from flows.ecg_pipeline import run_pipeline

    out, data = runs["out"], runs["data"]
    earlier = content_digest(out / "model.skops")

    def killed(run, job):
        raise _Killed()

    monkeypatch.setattr(model_artifact, "publish_model", killed)
    config = _config(out.parent, 6.0)  # a new decision setting: a new artifact
    with pytest.raises(_Killed):
        run_pipeline(load_config(config), str(data), str(out))
    monkeypatch.undo()
    report = json.loads((out / "report.json").read_text())
    staged = out / "model.next.skops"
    assert content_digest(out / "model.skops") == earlier != report["model_digest"] == content_digest(staged)
    assert "its model waits as" in cli_checks.earlier_report_note(str(out))
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    cli_checks.warn_of_another_report(load_model(out / "model.skops"))
    monkeypatch.undo()
    assert f"describes another model (sha256 {report['model_digest'][:16]}" in err.getvalue() and str(staged) in err.getvalue()
    fitted_at = staged.stat().st_mtime_ns
    again = run_pipeline(load_config(config), str(data), str(out))
    assert again["model_digest"] == report["model_digest"] == content_digest(out / "model.skops")
    assert (out / "model.skops").stat().st_mtime_ns == fitted_at and not staged.exists()  # put in place, not refitted
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    cli_checks.warn_of_another_report(load_model(out / "model.skops"))
    monkeypatch.undo()
    assert err.getvalue() == ""
    # a folder whose marker 0.21.0 wrote (the artifact named by its file's name and bytes) keeps its model too
    from ecgpipe.keys import file_digest

    marker = out / "markers" / "model" / "model.json"
    (marker).write_text(json.dumps({**json.loads(marker.read_text()), "artifact_digest": file_digest([out / "model.skops"])}))
    run_pipeline(load_config(config), str(data), str(out))
    assert (out / "model.skops").stat().st_mtime_ns == fitted_at
