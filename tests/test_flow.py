"""A real Prefect flow run on a real local Dask cluster over a slice of the real records (one record broken on purpose)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import wfdb
import zarr

from ecgpipe.config import load_config

from conftest import REPO, copy_records

# a system test: real Prefect flows, Dask clusters, torch models or processes (`make check` leaves it out)
pytestmark = pytest.mark.system

SLICE = {"mitdb": ["201", "203", "207", "100"], "vfdb": ["418", "426"]}
BROKEN = "100"  # its .dat is truncated below
CAP = 30
CHUNK = 32

SMALL_TOML = f"""
name = "slice"
[databases.mitdb]
lead = ["MLII", "V5"]
[databases.vfdb]
lead = [0]
[classes]
normal = ["(N", "(NSR"]
afib = ["(AFIB", "(AFL"]
vt = ["(VT"]
vf = ["(VF", "(VFIB", "(VFL"]
[sampling]
max_per_class = {CAP}
seed = 7
[cv]
protocols = ["stratified_10fold", "grouped_by_subject", "leave_one_database_out"]
[rhythm]
enabled = true
context_s = 10.0
irregularity = true
waveform = true
[sweep]
features = [{{}}, {{layer = "_blocks.10"}}]
classifiers = [
    {{kind = "svc", C = 10.0}},
    {{kind = "logreg", tune = true, C_grid = [0.01, 1.0], inner_splits = 2}},
    {{kind = "svc", inputs = "cnn+rhythm", pca = 16}},
    {{kind = "svc", inputs = "rhythm"}},
]
[run]
chunk_size = {CHUNK}
n_workers = 2
"""


def make_slice(physionet: Path, root: Path) -> Path:
    for db, records in SLICE.items():
        copy_records(physionet, root, db, records)
    dat = root / "mitdb" / f"{BROKEN}.dat"
    dat.write_bytes(dat.read_bytes()[: len(dat.read_bytes()) // 3])
    return root


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory, physionet, prefect_server):
    from flows.ecg_pipeline import run_pipeline

    tmp = tmp_path_factory.mktemp("flow")
    data = make_slice(physionet, tmp / "data")
    cfg_path = tmp / "slice.toml"
    cfg_path.write_text(SMALL_TOML)
    cfg = load_config(cfg_path)
    out = tmp / "out"
    report = run_pipeline(cfg, str(data), str(out))
    from ecgpipe.plan import _PREFLIGHT_UNITS, _handoff

    assert _handoff(cfg, str(data), out) not in _PREFLIGHT_UNITS  # the flow's plan took the preflight's units
    return {"report": report, "out": out, "data": data, "cfg": cfg, "cfg_path": cfg_path, "physionet": physionet}


def test_bad_record_is_skipped_and_named(flow_run):
    skipped = flow_run["report"]["skipped_records"]
    assert len(skipped) == 1
    assert skipped[0]["record"].endswith(f"mitdb/{BROKEN}")
    assert "checksum" in skipped[0]["error"] or "truncated" in skipped[0]["error"]
    assert f"mitdb/{BROKEN}" in (flow_run["out"] / "report.md").read_text()


def test_record_windows_agree_with_the_annotation_files(flow_run, physionet):
    """Candidate windows per record and label vs. the independently computed counts in rhythm_stats.json."""
    stats = json.loads((physionet / "rhythm_stats.json").read_text())
    store = flow_run["out"] / "store.zarr"
    cfg = flow_run["cfg"]
    for db, records in SLICE.items():
        for rec in records:
            bundle = store / "records" / db / f"{rec}.zip"
            if rec == BROKEN:
                assert not bundle.exists()
                continue
            # one file per record, a Zarr group that zarr's own ZipStore opens
            group = zarr.open_group(zarr.storage.ZipStore(bundle, mode="r"), mode="r")
            episodes = group.attrs["episodes"]
            labels = [episodes[e][0] for e in group["episode"][...]]
            expected = stats[db]["records"][rec]["segments_2s"]
            for label in set(cfg.label_to_class) & set(expected):
                n_eps = sum(1 for e in episodes if e[0] == label)
                got = labels.count(label)
                # 2-s windows at 250 Hz vs at the native rate: each episode may lose one window to rounding
                assert expected[label] - n_eps <= got <= expected[label], (db, rec, label, got, expected[label])
            assert group["windows"].shape == (len(labels), 500) and group["windows"].dtype == np.float32


def test_selected_segments_carry_correct_labels_and_lie_in_their_episode(flow_run, physionet):
    store = zarr.open_group(str(flow_run["out"] / "store.zarr"), mode="r")
    seg = store["segments"]
    attrs = seg.attrs
    cfg = flow_run["cfg"]
    cls, src, start, rhythm = (seg[k][...] for k in ("class_index", "source", "start", "rhythm"))
    n = len(cls)
    assert seg["signal"].shape == (n, 500) and seg["signal"].dtype == np.float32
    assert seg["signal"].chunks == (CHUNK, 500)
    counts = np.bincount(cls, minlength=4)
    assert counts.tolist() == [flow_run["report"]["class_counts"][c] for c in cfg.class_names]
    assert all(0 < c <= CAP for c in counts)
    anns = {}
    for i in range(n):
        source = attrs["sources"][src[i]]
        label = attrs["rhythm_labels"][rhythm[i]]
        assert cfg.label_to_class[label] == cfg.class_names[cls[i]]
        key = (source["database"], source["record"])
        if key not in anns:
            ann = wfdb.rdann(str(physionet / key[0] / key[1]), "atr")
            hdr = wfdb.rdheader(str(physionet / key[0] / key[1]))
            anns[key] = ([(s, a.strip("\x00")) for s, sym, a in zip(ann.sample, ann.symbol, ann.aux_note) if sym == "+"], hdr.fs, hdr.sig_len)
        changes, fs, sig_len = anns[key]
        first, last = start[i] * fs / 250, (start[i] + 500) * fs / 250
        inside = [lab for j, (s, lab) in enumerate(changes) if s <= first and last <= (changes[j + 1][0] if j + 1 < len(changes) else sig_len)]
        assert inside == [label], (key, start[i], label, inside)
    # the rows are (source, start) arrays, in the order of the records; the attributes hold one entry per record, none
    # per segment
    assert [(s["database"], s["record"]) for s in attrs["sources"]] == sorted((s["database"], s["record"]) for s in attrs["sources"])
    assert len(set(zip(src.tolist(), start.tolist()))) == n
    assert n > 50 and all(len(v) < n for v in attrs.values() if isinstance(v, (list, dict)))
    # subject ids: mitdb records are their own subjects here; 201 stands for itself
    assert {s["subject"] for s in attrs["sources"]} == {f"{db}:{r}" for db, rs in SLICE.items() for r in rs if r != BROKEN}


def test_spectrograms_and_features_in_zarr(flow_run):
    report = flow_run["report"]
    store = zarr.open_group(report["store"], mode="r")
    n = report["n_segments"]
    spec_name = [k for k in store["spectrograms"].group_keys()]
    assert len(spec_name) == 1
    spec = store[f"spectrograms/{spec_name[0]}/data"]
    assert spec.shape == (n, 52, 55) and spec.dtype == np.float16 and spec.chunks == (CHUNK, 52, 55)
    values = spec[...]
    assert np.isfinite(values).all() and values.astype(np.float32).std() > 0.1
    feats = store[_pooled_features(report)]
    assert feats.shape == (n, 1280) and feats.dtype == np.float32 and feats.chunks == (CHUNK, 1280)
    f = feats[...]
    assert np.isfinite(f).all() and (np.abs(f).sum(axis=1) > 0).all()  # every chunk was written


def test_features_equal_a_direct_computation(flow_run):
    """The pipeline's features equal the pure functions applied in this process (no chunk lost or mixed up)."""
    from ecgpipe.features import FeatureExtractor
    from ecgpipe.spectrogram import spectrogram_chunk

    report, cfg = flow_run["report"], flow_run["cfg"]
    store = zarr.open_group(report["store"], mode="r")
    rows = np.array([0, CHUNK - 1, CHUNK, report["n_segments"] - 1])
    signal = store["segments/signal"][...][rows]
    spec = spectrogram_chunk(signal, 250.0, cfg.spectrogram).astype(np.float16)
    for variant in cfg.feature_variants:  # every extractor of the sweep: pooled output and block 10
        direct = FeatureExtractor(variant)(spec)
        array = next(r["features_array"] for r in report["comparison"] if r["layer"] == (variant.layer or "_avg_pooling"))
        assert np.allclose(store[array][...][rows], direct, atol=1e-3)


def test_predict_s_window_path_gives_the_features_training_stored(flow_run):
    """``ecgpipe predict`` (and bench_context.py --grid) featurise a record through ``grid_features``; on a window at
    the same start it must give what training stored: the CNN features and the rhythm block."""
    from ecgpipe.grid import grid_features
    from ecgpipe.records import read_record

    report, cfg = flow_run["report"], flow_run["cfg"]
    store = zarr.open_group(report["store"], mode="r")
    sources = store["segments"].attrs["sources"]
    row = int(np.argmax(store["segments/start"][...]))  # a window far into its record
    source, start = sources[int(store["segments/source"][row])], int(store["segments/start"][row])
    cfg = cfg.with_stage(classifier=cfg.classifier.model_copy(update={"inputs": "cnn+rhythm"}))
    rec = read_record(flow_run["data"] / source["database"], source["database"], source["record"],
                      cfg.database(source["database"]), require_annotations=False)
    grid = grid_features(cfg, rec, stride_s=start / cfg.segments.target_fs)  # a grid through this window's start
    at = int(np.flatnonzero(grid.starts[grid.usable] == start)[0])
    assert np.allclose(grid.cnn[at], store[_pooled_features(report)][row], atol=1e-3)
    assert np.allclose(grid.rhythm[at], store["segments/rhythm_features"][row], rtol=1e-4, atol=1e-4)


def _pooled_features(report) -> str:
    return next(r["features_array"] for r in report["comparison"] if r["layer"] == "_avg_pooling")


def test_report_is_complete_and_consistent(flow_run):
    report = flow_run["report"]
    on_disk = json.loads((flow_run["out"] / "report.json").read_text())
    for key in ("protocols", "n_segments", "class_counts", "backbone", "weights", "config", "skipped_records", "wall_s"):
        assert key in on_disk
    assert on_disk["warning"] is None and "package efficientnet-lite0" in on_disk["weights"]
    from ecgpipe.model import content_digest, load_model

    model = load_model(on_disk["model"])  # the report names the artifact's digest; the artifact knows its recordings
    assert on_disk["model_digest"] == model.digest == content_digest(on_disk["model"])
    assert on_disk["model_digest"] in (flow_run["out"] / "report.md").read_text()
    assert set(model.training["recordings_sha256"]) == set(on_disk["provenance"]["record_keys"])
    # the software that computed the numbers, in the report and the model alike
    from ecgpipe.environment import software_versions

    assert on_disk["software"] == model.environment == software_versions()
    assert f"numpy {on_disk['software']['numpy']}" in (flow_run["out"] / "report.md").read_text()
    assert set(model.training["signals_fingerprint"]) == set(on_disk["provenance"]["record_keys"])
    # a LocalCluster has no GPU resource: features fall back to any (CPU) worker instead of waiting forever
    assert on_disk["feature_placement"].startswith("any worker")
    # the feature stage's rate: images through the backbone (one pass per chunk for both taps) per stage second
    seconds = on_disk["stage_seconds"]["features"]
    assert on_disk["feature_img_s"] == pytest.approx(on_disk["n_segments"] / seconds, rel=0.02)
    assert f"at {on_disk['feature_img_s']:.0f} img/s" in (flow_run["out"] / "report.md").read_text()
    assert set(on_disk["protocols"]) == {"stratified_10fold", "grouped_by_subject", "leave_one_database_out"}
    assert sum(report["class_counts"].values()) == report["n_segments"]
    for name, p in on_disk["protocols"].items():
        cm = np.array(p["confusion_matrix"])
        if name == "leave_one_database_out":  # afib is in mitdb only in this slice: left out
            assert cm[1].sum() == 0 and cm.sum() == report["n_segments"] - report["class_counts"]["afib"]
            assert [f["n_test"] for f in p["folds"]] == [report["class_counts_by_database"]["normal"]["mitdb"] + report["class_counts_by_database"]["vt"]["mitdb"] + report["class_counts_by_database"]["vf"]["mitdb"], cm.sum() - p["folds"][0]["n_test"]]
        else:
            assert cm.sum() == report["n_segments"]
            assert cm.sum(axis=1).tolist() == list(report["class_counts"].values())
        assert p["ci95"]["accuracy"][0] <= p["accuracy"] <= p["ci95"]["accuracy"][1]
        assert p["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
        for k in ("accuracy", "balanced_accuracy", "macro_f1", "per_class", "folds"):
            assert k in p
        assert (flow_run["out"] / f"confusion_{name}.png").stat().st_size > 1000
    assert on_disk["protocols"]["grouped_by_subject"]["n_folds"] == 5  # 5 usable subjects in the slice
    assert on_disk["protocols"]["stratified_10fold"]["accuracy"] > 0.4  # well above chance (0.25) with pretrained features
    page = (flow_run["out"] / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.count("data:image/png;base64,") == len(on_disk["protocols"]) + 1  # + examples
    assert "http://" not in page.replace("http://127.0.0.1", "") and "<script" not in page  # self-contained, static
    assert f"{100 * on_disk['protocols']['grouped_by_subject']['accuracy']:.2f} %" in page
    assert on_disk["provenance"]["dataset_key"] and len(on_disk["provenance"]["record_keys"]) == 5
    checksums = on_disk["provenance"]["record_files_sha256"]  # every record read, the broken one too
    assert len(checksums) == 6 and all(len(v) == 64 for v in checksums.values()) and "data checksums" in page
    md = (flow_run["out"] / "report.md").read_text()
    assert md.startswith("# ecgpipe report: slice") and "grouped_by_subject" in md
    seg = on_disk["config"]["segments"]  # the segments' settings in the summary, not only in report.json
    assert f"- windows: {seg['length_s']:g} s long, one every {seg['stride_s']:g} s, one lead, every database resampled to" in md
    assert "Accuracy and macro-F1 are pooled over every fold's out-of-fold predictions" in md


def test_sweep_rows_share_the_spectrograms_and_the_best_row_is_detailed(flow_run):
    report = flow_run["report"]
    rows = report["comparison"]
    # 2 extractors x 3 classifiers that use CNN features + 1 rhythm-only row (it does not depend on the extractor)
    assert len(rows) == 7
    assert [r["layer"] for r in rows].count("_blocks.10") == 3 and [r["backbone"] for r in rows].count("-") == 1
    store = zarr.open_group(report["store"], mode="r")
    assert len(list(store["spectrograms"].array_keys()) + list(store["spectrograms"].group_keys())) == 1  # one spectrogram array
    widths = sorted(store[r["features_array"]].shape[1] for r in rows if r["backbone"] != "-")
    assert set(widths) == {112, 1280}  # _blocks.10 of Lite0 has 112 channels, the pooled output 1280
    best = [r for r in rows if r["best"]]
    assert len(best) == 1
    grouped = [r["protocols"]["grouped_by_subject"]["macro_f1"] for r in rows]
    assert best[0]["protocols"]["grouped_by_subject"]["macro_f1"] == max(grouped)
    assert report["protocols"]["grouped_by_subject"]["macro_f1"] == max(grouped)  # the detailed sections are the best row's
    tuned = [r for r in rows if r["classifier"].startswith("LogReg")]
    assert len(tuned) == 2
    for r in tuned:  # the inner CV picked C from the grid in every outer fold of every protocol
        for protocol, chosen in r["chosen"].items():
            assert len(chosen) == r["n_folds"][protocol] and all(c["C"] in (0.01, 1.0) for c in chosen)
    # 8 RR features, 6 RR-irregularity features and 11 waveform descriptors per segment, all finite
    assert store["segments/rhythm_features"].shape == (report["n_segments"], 25)
    assert store["segments/rhythm_features"].attrs["columns"][8:10] == ["rr_autocorr_lag1", "rr_autocorr_lag2"]
    assert np.isfinite(store["segments/rhythm_features"][...]).all()
    assert any(r["classifier"].startswith("RR+irr+wave only") for r in rows)
    for p in report["protocols"].values():  # the per-patient breakdown accounts for every scored segment
        assert np.sum(p["per_subject"]["called"]) == np.array(p["confusion_matrix"]).sum()
    page = (flow_run["out"] / "report.html").read_text()
    assert "<tr class=best>" in page and page.count("<tr class=best>") == 1
    described = "8 RR-interval features, 6 RR-irregularity features and 11 waveform descriptors over 10 s"
    assert report["rhythm_description"] == described and f"no CNN: {described}" in page  # the rhythm-only row
    md = (flow_run["out"] / "report.md").read_text()
    assert "## Comparison" in md and md.count("\n| **") == 1  # one bold (best) row


def test_every_row_is_compared_with_the_best_row_pairwise(flow_run):
    """Each row's macro-F1 minus the best row's, with a paired interval over patients, under every protocol; the
    report's tables show it under the selection protocol."""
    rows = flow_run["report"]["comparison"]
    best = next(r for r in rows if r["best"])
    assert best["versus_best"] == {}
    for row in rows:
        if row["best"]:
            continue
        assert set(row["versus_best"]) == set(row["protocols"])
        for protocol, d in row["versus_best"].items():
            assert d["metric"] == "macro_f1"
            # the report's macro-F1 counts the classes a protocol scores; the difference is of the same numbers
            assert d["difference"] == pytest.approx(row["protocols"][protocol]["macro_f1"] - best["protocols"][protocol]["macro_f1"], abs=1e-9)
            lo, hi = d["ci95"]
            assert lo <= d["difference"] <= hi and 0 <= d["a_better"] <= 1
    md = (flow_run["out"] / "report.md").read_text()
    assert "grouped by subject macro-F1 minus best (paired 95 % CI)" in md
    worst = min((r for r in rows if not r["best"]), key=lambda r: r["versus_best"]["grouped_by_subject"]["difference"])
    d = worst["versus_best"]["grouped_by_subject"]
    assert f"{d['difference']:+.3f} ({d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f})" in md
    assert "minus best" in (flow_run["out"] / "report.html").read_text()


def test_a_report_written_again_leaves_none_of_an_earlier_report_s_files_beside_it(flow_run, tmp_path):
    """A rerun without a protocol or without [recordings] score: the earlier run's confusion PNG, records CSV and
    recordings.csv would sit beside the new report.json looking current."""
    from ecgpipe.report import write_report

    report = json.loads((flow_run["out"] / "report.json").read_text())
    assert sorted(p.name for p in flow_run["out"].glob("confusion_*.png")) == sorted(f"confusion_{n}.png" for n in report["protocols"])
    for png in flow_run["out"].glob("confusion_*.png"):  # the earlier run's, with every protocol
        shutil.copy(png, tmp_path / png.name)
    del report["protocols"]["leave_one_database_out"]  # this run's: a protocol left out since
    kept = sorted(f"confusion_{name}.png" for name in report["protocols"])
    stale = ["confusion_leave_one_database_out.png", "records_grouped_by_subject.csv", "recordings.csv"]
    assert not report.get("recordings") and all((tmp_path / name).exists() for name in kept + stale[:1])
    for name in stale[1:]:
        (tmp_path / name).write_text("an earlier run's")
    (tmp_path / "notes.txt").write_text("the user's")
    write_report(report, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("confusion_*.png")) == kept
    assert not [name for name in stale if (tmp_path / name).exists()] and (tmp_path / "notes.txt").exists()
    assert not list(tmp_path.glob(".tmp-*")) and json.loads((tmp_path / "report.json").read_text())["protocols"]


def test_compare_cli_pairs_two_runs_of_the_same_windows(flow_run, tmp_path):
    out = flow_run["out"]
    proc = _cli("compare", str(out), str(out / "report.json"), "--boot", "200", "--json", str(tmp_path / "c.json"))
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "c.json").read_text())
    protocols = list(flow_run["report"]["protocols"])
    assert [s["protocol"] for s in result["scopes"]] == protocols
    for scope in result["scopes"]:  # a run against itself: no difference, in any metric or endpoint
        assert all(d["difference"] in (0, None) and d["ci95"] in ([0.0, 0.0], None) for d in scope["comparison"]["differences"])
    grouped = next(s for s in result["scopes"] if s["protocol"] == "grouped_by_subject")["comparison"]
    assert grouped["n_subjects"] == len(set(flow_run["report"]["protocols"]["grouped_by_subject"]["per_subject"]["subject"]))
    assert {d["metric"] for d in grouped["differences"]} >= {"accuracy", "balanced_accuracy", "macro_f1"}
    assert "| macro_f1 |" in proc.stdout and "no difference shown" in proc.stdout
    # another run's windows (one patient's windows of one class gone): refused, naming the patient
    report = json.loads((out / "report.json").read_text())
    pairs = report["protocols"]["grouped_by_subject"]["per_subject"]  # columns: drop the first (subject, class) pair
    dropped = {"subject": pairs["subject"][0], "class": pairs["classes"][pairs["class"][0]], "n": sum(pairs["called"][0])}
    for column in ("subject", "class", "called"):
        del pairs[column][0]
    other = tmp_path / "other" / "report.json"
    other.parent.mkdir()
    other.write_text(json.dumps(report))
    proc = _cli("compare", str(out), str(other.parent), "--protocol", "grouped_by_subject")
    assert proc.returncode == 2 and f"subject {dropped['subject']} has {dropped['n']} {dropped['class']} windows" in proc.stderr
    # the same counts per patient and class, but other windows (another seed's caps, say): the window-level results
    # are not paired, and with nothing else to pair the command says why
    report = json.loads((out / "report.json").read_text())
    assert len(report["windows_digest"]) == 64
    report["windows_digest"] = "0" * 64
    other.write_text(json.dumps(report))
    proc = _cli("compare", str(out), str(other.parent), "--protocol", "grouped_by_subject")
    assert proc.returncode == 2 and "grouped_by_subject, windows: the runs scored other windows" in proc.stderr
    proc = _cli("compare", str(out), str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "no report of a finished run here" in proc.stderr


def test_a_run_of_rhythm_only_classifiers_computes_no_cnn(flow_run, tmp_path):
    """A simple peer (RR statistics, gradient boosting) on the same windows: no spectrogram, no CNN feature, the same
    windows scored, `ecgpipe compare` pairs it with the CNN run, and status calls it done."""
    from ecgpipe.status import run_status
    from flows.ecg_pipeline import run_pipeline

    peer = load_config(flow_run["cfg_path"], {"name": "peer", "sweep": {"features": [], "classifiers": [
        {"kind": "hgb", "inputs": "rhythm", "class_weight": "balanced", "max_iter": 30, "min_samples_leaf": 3}]}})
    out = tmp_path / "peer"
    report = run_pipeline(peer, str(flow_run["data"]), str(out))
    store = zarr.open_group(report["store"], mode="r")
    for group in ("spectrograms", "features"):  # the store's layout has the groups; nothing was computed into them
        assert not list(store[group].array_keys()) and not list(store[group].group_keys())
    assert report["spectrograms_array"] is None and report["features_array"] is None
    assert report["feature_placement"].startswith("not computed")
    assert report["n_segments"] == flow_run["report"]["n_segments"] and report["classifier"].startswith("RR+irr+wave only")
    assert report["windows_digest"] == flow_run["report"]["windows_digest"]  # the same windows, another run
    assert set(report["protocols"]) == set(flow_run["report"]["protocols"])
    proc = _cli("compare", str(flow_run["out"]), str(out), "--protocol", "grouped_by_subject", "--boot", "200")
    assert proc.returncode == 0, proc.stderr
    status = run_status(peer, str(flow_run["data"]), str(out))["stages"]
    assert status["spectrograms"]["total"] == status["features"]["total"] == 0
    assert status["classify"]["rerun_computes"] == 0 and status["classify"]["done"] == 1


def test_a_failing_classifier_row_is_left_out_and_named_and_the_others_are_reported(flow_run, tmp_path):
    """One row of a sweep failing on its data (here every fold of the logistic regression's, by the test hook)
    stopped the whole run with a traceback and no report, and run.json counted no failure. Now the other rows are
    reported, the failed row is named in the report and counted, and a rerun computes that row alone; every row
    failing stops the run. A row failing for a reason a rerun may cure (an I/O error) ends the run as failed: going
    on without it would make another row the best, and its model the run's, in silence."""
    import json

    from ecgpipe.errors import StageFailed
    from flows.ecg_pipeline import run_pipeline

    cfg = load_config(flow_run["cfg_path"], {"name": "rows", "sweep": {"features": [], "classifiers": [
        {"kind": "hgb", "inputs": "rhythm", "class_weight": "balanced", "max_iter": 30, "min_samples_leaf": 3},
        {"kind": "logreg", "inputs": "rhythm"}]}})
    out = tmp_path / "rows"
    os.environ["ECGPIPE_INJECT_FAILURE"] = "classify:logreg:data"
    try:
        report = run_pipeline(cfg, str(flow_run["data"]), str(out))
        logreg = cfg.model_copy(update={"classifier": cfg.sweep.classifiers[1]}).classifier_label
        assert [f["row"] for f in report["failed_rows"]] == [f"{logreg} on the rhythm block"]
        assert "injected failure" in report["failed_rows"][0]["error"] and " fold " in report["failed_rows"][0]["error"]
        assert len(report["comparison"]) == 1 and report["classifier"].startswith("RR+irr+wave only")
        assert "1 classifier row(s) failed and are not in the comparison" in report["warning"]
        assert "## Classifier rows that failed" in (out / "report.md").read_text()
        assert (out / "model.skops").is_file()  # the model of the best row that did not fail
        stages = json.loads((out / "run.json").read_text())["stages"]
        assert stages["classify"]["failed"] == 1 and stages["classify"]["computed"] == 1
        os.environ["ECGPIPE_INJECT_FAILURE"] = "classify:logreg:data,classify:hgb:data"
        cfg_both = load_config(flow_run["cfg_path"], {"name": "rows", "sweep": {"features": [], "classifiers": [
            {"kind": "hgb", "inputs": "rhythm", "max_iter": 20}, {"kind": "logreg", "inputs": "rhythm", "C": 2.0}]}})
        with pytest.raises(StageFailed, match="classify: every classifier row failed: .*injected failure"):
            run_pipeline(cfg_both, str(flow_run["data"]), str(tmp_path / "both"))
        os.environ["ECGPIPE_INJECT_FAILURE"] = "classify:logreg"
        with pytest.raises(StageFailed, match=r"classify: \d+ unit\(s\) failed for a reason a rerun may cure.*OSError: injected"):
            run_pipeline(cfg, str(flow_run["data"]), str(tmp_path / "io"))
        assert not (tmp_path / "io" / "report.json").exists() and not (tmp_path / "io" / "model.skops").exists()
    finally:
        del os.environ["ECGPIPE_INJECT_FAILURE"]
    report = run_pipeline(cfg, str(flow_run["data"]), str(out))
    assert report["failed_rows"] == [] and len(report["comparison"]) == 2 and report["warning"] is None
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert stages["classify"]["computed"] == 1 and stages["classify"]["skipped"] == 1  # the failed row alone


def test_prefect_recorded_the_flow_and_its_tasks(flow_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(limit=50, sort=FlowRunSort.START_TIME_DESC)
        ours = [r for r in runs if r.name and r.state and r.state.is_completed()]
        assert ours, "no completed flow run recorded"
        tasks = []
        while batch := client.read_task_runs(limit=200, offset=len(tasks), sort=TaskRunSort.EXPECTED_START_TIME_DESC):
            tasks += batch  # the API pages at 200
    names = [t.name for t in tasks]
    n_chunks = -(-flow_run["report"]["n_segments"] // CHUNK)
    run_json = json.loads((flow_run["out"] / "run.json").read_text())
    # records are batched into tasks; a bad record fails alone inside its batch, which completes
    assert sum(n.startswith("segments batch ") for n in names) >= run_json["stages"]["segments"]["tasks"] >= 1
    assert sum(n.startswith("spectrograms chunk") for n in names) >= n_chunks
    assert sum(n.startswith("features chunk") for n in names) >= n_chunks
    # run.json counts every stage's tasks (the cold run computed every chunk and every fold of every row)
    stages = run_json["stages"]
    assert stages["spectrograms"]["tasks"] == stages["features"]["tasks"] == n_chunks
    n_folds = sum(sum(row["n_folds"].values()) for row in flow_run["report"]["comparison"])
    assert stages["classify"]["tasks"] == n_folds and sum(n.startswith("classify ") for n in names) >= n_folds
    assert not [t for t in tasks if t.state and t.state.is_failed() and t.name.startswith("segments batch ")]
    assert [f["unit"] for f in run_json["failed"]] == [f"mitdb/{BROKEN}"]


def _cli(*args, env_extra=None, timeout=600):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "ecgpipe.cli", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout
    )


def test_strict_mode_fails_on_the_bad_record(flow_run, tmp_path):
    proc = _cli("run", "--config", str(flow_run["cfg_path"]), "--data-dir", str(flow_run["data"]), "--out", str(tmp_path), "--strict")
    assert proc.returncode != 0
    assert f"mitdb/{BROKEN}" in proc.stdout + proc.stderr


def test_cli_rejects_a_misspelt_config_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL_TOML.replace("seed = 7", "seeed = 7"))
    proc = _cli("run", "--config", str(bad), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "sampling.seeed: unknown key" in proc.stderr


def test_status_cli_reports_done_and_failed_units(flow_run):
    proc = _cli("status", "--out", str(flow_run["out"]), "--json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    seg = status["stages"]["segments"]
    assert seg["done"] == 5 and seg["failed"] == 1 and seg["rerun_computes"] == 1 and seg["to_compute"] == [f"mitdb/{BROKEN}"]
    for stage in ("spectrograms", "features", "classify"):
        assert status["stages"][stage]["rerun_computes"] == 0 and status["stages"][stage]["done"] == status["stages"][stage]["total"]
    table = _cli("status", "--out", str(flow_run["out"]))
    assert "a rerun computes" in table.stdout and "segments" in table.stdout
    assert table.stdout.startswith(f"{flow_run['out']}: last run completed")


def _excerpt(physionet: Path, record: str, seconds: int, dst: Path) -> Path:
    """The first ``seconds`` of a real mitdb record (signal + reference annotations) written with wfdb."""
    src = str(physionet / "mitdb" / record)
    rec = wfdb.rdrecord(src, sampto=seconds * 360)
    ann = wfdb.rdann(src, "atr", sampto=seconds * 360)
    dst.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(record, fs=360, units=rec.units, sig_name=rec.sig_name, p_signal=rec.p_signal, fmt=["16", "16"], write_dir=str(dst))
    wfdb.wrann(record, "atr", ann.sample, ann.symbol, aux_note=ann.aux_note, write_dir=str(dst))
    return dst / record


def test_predict_cli_writes_episodes_csv_and_readable_annotations(flow_run, tmp_path):
    """The run's model on records it never saw: 2 minutes of 219 (AF, then ventricular bigeminy) and of 222 (normal)."""
    import csv

    model = flow_run["out"] / "model.skops"
    assert model.is_file()
    records = [_excerpt(flow_run["physionet"], r, 120, tmp_path / "new") for r in ("219", "222")]
    broken = _excerpt(flow_run["physionet"], "210", 30, tmp_path / "new")
    dat = broken.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[:1000])
    out = tmp_path / "pred"
    proc = _cli("predict", "--model", str(model), *map(str, records), str(broken) + ".hea", "--out", str(out), "--compare", "atr")
    assert proc.returncode == 1, proc.stderr  # one bad record: reported, the others still predicted
    assert f"{broken}: truncated signal file" in proc.stderr

    with open(out / "episodes.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["record", "start_s", "end_s", "duration_s", "class", "label"]
    label_of = {"normal": "(N", "afib": "(AFIB", "vt": "(VT", "vf": "(VF"}
    for record in records:
        mine = [r for r in rows if r["record"] == str(record)]
        assert mine, f"no episodes for {record}"
        # episodes tile the record from 0 s in 2-s windows: contiguous, class and label consistent
        assert float(mine[0]["start_s"]) == 0.0 and float(mine[-1]["end_s"]) == 120.0
        for a, b in zip(mine, mine[1:]):
            assert a["end_s"] == b["start_s"] and a["class"] != b["class"]
        assert all(r["label"] == label_of[r["class"]] for r in mine)
        ann = wfdb.rdann(str(out / record.name), "pred")
        assert ann.symbol == ["+"] * len(mine)
        assert [a.rstrip("\x00") for a in ann.aux_note] == [r["label"] for r in mine]
        assert ann.sample.tolist() == [round(float(r["start_s"]) * 360) for r in mine]
    with open(out / "records.csv") as fh:
        per_record = {Path(r["record"]).name: r for r in csv.DictReader(fh)}
    assert set(per_record) == {"219", "222", "210"} and float(per_record["222"]["duration_s"]) == 120.0
    assert "truncated signal file" in per_record["210"]["error"] and per_record["222"]["error"] == ""  # failed: named
    assert sum(int(per_record["222"][f"windows_{c}"]) for c in label_of) == 60  # 2-s windows over 120 s
    agreement = json.loads((out / "agreement.json").read_text())
    assert set(agreement) == {"219", "222"}
    for a in agreement.values():
        assert 0.0 <= a["per_second_agreement"] <= 1.0 and a["seconds_scored"] > 60
        assert a["episodes_recovered"] <= a["reference_episodes"]
    assert agreement["222"]["per_class"]["normal"]["seconds"] > 60


def test_predict_cli_refuses_a_bad_model_file(tmp_path):
    fake = tmp_path / "model.skops"
    fake.write_bytes(b"\x80\x04not a model")
    proc = _cli("predict", "--model", str(fake), "somewhere/100", "--out", str(tmp_path / "p"))
    assert proc.returncode == 2 and f"{fake}: not an ecgpipe model artifact" in proc.stderr


def test_comparison_rows_name_an_untrained_backbone_and_the_input_size():
    """A sweep row on random weights next to its pretrained twin (the 'backbone-init' lever) must read differently."""
    from ecgpipe.classify import summarize_protocol
    from ecgpipe.report_build import comparison_summary
    from ecgpipe.stages.classification import ComparisonRow
    from ecgpipe.stages.features import FeatureArray

    y = np.array([0, 0, 1, 1])
    result = summarize_protocol(y, np.array([0, 1, 1, 1]), np.array(["s1", "s1", "s2", "s2"]),
                                [(np.array([0, 2]), np.array([1, 3])), (np.array([1, 3]), np.array([0, 2]))], ["a", "b"])
    attrs = {"backbone": "efficientnet_lite0", "layer": "_avg_pooling", "weights": "w", "width": 1280}
    rows = []
    for weights, size in (("pretrained", 224), ("random", 224), ("pretrained", 128)):
        cfg = load_config("paper4", {"features": {"weights": weights, "image_size": size}})
        rows.append(ComparisonRow(cfg, FeatureArray(cfg, f"features/{weights}", [], attrs), "key", "unit", f"features/{weights}",
                                  "data", protocols={"stratified_10fold": result}))
    table = [entry.to_json() for entry in comparison_summary(rows, best=0)]
    # so must the rows of a sweep over input sizes (the default, 224, goes unsaid)
    assert [r["backbone"] for r in table] == ["efficientnet_lite0", "efficientnet_lite0 (random weights)", "efficientnet_lite0 @128 px"]
    assert [r["best"] for r in table] == [True, False, False]
    # the same results: each row's paired difference from the best row is 0
    assert all(r["versus_best"]["stratified_10fold"]["difference"] == 0 for r in table[1:])


def test_status_with_another_config_uses_the_saved_data_folder_and_creates_nothing(flow_run, tmp_path):
    """`ecgpipe status --out X --config Y` without --data-dir: the data folder saved with the run, nothing created,
    nothing downloaded, even from a folder without ./data."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("ECGPIPE_DATA_DIR", None)
    proc = subprocess.run([sys.executable, "-m", "ecgpipe.cli", "status", "--out", str(flow_run["out"]), "--config",
                           str(flow_run["cfg_path"]), "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    stages = json.loads(proc.stdout)["stages"]
    assert stages["segments"]["done"] == 5 and stages["classify"]["rerun_computes"] == 0
    assert list(tmp_path.iterdir()) == []  # no ./data/physionet, nothing else


def test_status_shows_a_run_in_progress(flow_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(flow_run["out"], out)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (out / ".ecgpipe.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid, "started": "10:00"}))
        proc = _cli("status", "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert f"a run is in progress (PID {holder.pid} on {socket.gethostname()}, started 10:00)" in proc.stdout
    finally:
        holder.kill()
        holder.wait()
    assert "in progress" not in _cli("status", "--out", str(out)).stdout  # its process is gone
