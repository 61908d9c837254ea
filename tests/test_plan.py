"""Stable selection and stable rows: what keeps an incremental rerun's recomputation small."""

import numpy as np
import pytest

from ecgpipe.config import load_config
from ecgpipe.stages.features import chunk_keys as feature_chunk_keys
from ecgpipe.stages.spectrograms import chunk_keys as spectrogram_chunk_keys
from ecgpipe.stages.table import SegmentTable, assign_slots, segment_keys, select_stable, selection_priority


def _priority(record, n, seed):
    return selection_priority(f"db/{record}", 500 * np.arange(n), seed)


def test_select_stable_caps_and_is_seeded():
    prio = lambda seed: np.concatenate([_priority("a", 100, seed), _priority("b", 10, seed), _priority("c", 50, seed)])  # noqa: E731
    cls = np.array([0] * 100 + [1] * 10 + [2] * 50)
    a = select_stable(prio(3), cls, {0: 20, 1: 20, 2: None})
    assert np.bincount(cls[a]).tolist() == [20, 10, 50]
    assert np.array_equal(a, select_stable(prio(3), cls, {0: 20, 1: 20, 2: None}))
    assert not np.array_equal(a, select_stable(prio(4), cls, {0: 20, 1: 20, 2: None}))


def test_selection_priority_depends_only_on_the_window_itself():
    starts = 500 * np.arange(8)
    whole = selection_priority("db/a", starts, 0)
    assert np.array_equal(whole[3:], selection_priority("db/a", starts[3:], 0))  # not on the other windows
    assert not np.array_equal(whole, selection_priority("db/b", starts, 0))
    assert whole.dtype == np.uint64 and len(set(whole.tolist())) == 8


def test_adding_a_record_displaces_only_what_it_outranks():
    old = _priority("a", 60, 0)
    new = np.concatenate([old, _priority("b", 60, 0)])
    cap = {0: 40}
    before = set(select_stable(old, np.zeros(60, int), cap).tolist())
    after = set(select_stable(new, np.zeros(120, int), cap).tolist())
    added = {i for i in after if i >= 60}
    assert len(after) == 40 and after - before == added
    assert len(before - after) == len(added)  # each newcomer displaced exactly one old segment


def test_assign_slots_keeps_rows_in_place():
    prev = segment_keys(np.arange(10), np.zeros(10, int))
    y0, y1 = segment_keys(np.array([20, 21]), np.zeros(2, int))
    assert assign_slots(None, prev[::-1]).tolist() == prev.tolist()  # canonical order on a cold run
    assert assign_slots(prev, prev).tolist() == prev.tolist()
    changed = assign_slots(prev, np.r_[prev[:3], prev[4:], y0])
    assert changed[:3].tolist() == prev[:3].tolist() and changed[3] == y0 and changed[4:].tolist() == prev[4:].tolist()
    grown = assign_slots(prev, np.r_[prev, y0, y1])
    assert grown[:10].tolist() == prev.tolist() and grown[10:].tolist() == [y0, y1]
    shrunk = assign_slots(prev, np.delete(prev, [2, 5]))
    assert len(shrunk) == 8 and set(shrunk.tolist()) == set(prev.tolist()) - {prev[2], prev[5]}
    assert np.flatnonzero(prev[:8] != shrunk).tolist() == [2, 5]  # holes filled from the tail
    assert shrunk[2] == prev[9] and shrunk[5] == prev[8]  # the last row into the first hole
    gone = assign_slots(np.r_[prev[:4], -1, prev[5:]], prev)  # a row whose record left the run: a hole
    assert gone[4] == prev[4] and sorted(gone.tolist()) == prev.tolist()


def _table(sources, source, start, signal_keys):
    return SegmentTable(sources, np.asarray(source, np.int32), np.asarray(start, np.int64), {}, signal_keys, {}, 0, "")


def test_chunk_keys_change_only_where_inputs_or_settings_change():
    cfg = load_config("paper4", {"run": {"chunk_size": 4}})
    sources, rk = ["mitdb/100", "mitdb/101"], {"mitdb/100": "k100", "mitdb/101": "k101"}
    source, start = np.repeat([0, 1], 6), np.tile(np.arange(6), 2)
    keys = spectrogram_chunk_keys(cfg, _table(sources, source, start, rk))
    assert len(keys) == 3 and len(set(keys)) == 3
    fixed = spectrogram_chunk_keys(cfg, _table(sources, source, start, {**rk, "mitdb/101": "k101-fixed"}))
    assert [a == b for a, b in zip(keys, fixed)] == [True, False, False]  # chunk 0 holds only record 100
    # a record added before them shifts every record index, not the chunks' keys (they name records, not indices)
    added = _table(["mitdb/0", *sources], source + 1, start, {**rk, "mitdb/0": "k0"})
    assert spectrogram_chunk_keys(cfg, added) == keys
    moved = _table(sources, source, np.r_[start[:11], 7], rk)
    assert [a == b for a, b in zip(keys, spectrogram_chunk_keys(cfg, moved))] == [True, True, False]
    stft = spectrogram_chunk_keys(load_config("paper4", {"run": {"chunk_size": 4}, "spectrogram": {"nfft": 512}}),
                                  _table(sources, source, start, rk))
    assert not set(stft) & set(keys)
    other_clf = load_config("paper4", {"run": {"chunk_size": 4}, "classifier": {"C": 1.0}})
    assert spectrogram_chunk_keys(other_clf, _table(sources, source, start, rk)) == keys
    assert feature_chunk_keys(other_clf, keys) == feature_chunk_keys(cfg, keys)
    other_layer = load_config("paper4", {"run": {"chunk_size": 4}, "features": {"layer": "_blocks.15"}})
    assert not set(feature_chunk_keys(other_layer, keys)) & set(feature_chunk_keys(cfg, keys))
    assert feature_chunk_keys(load_config("paper4", {"run": {"chunk_size": 4}, "features": {"batch_size": 8}}), keys) == feature_chunk_keys(cfg, keys)


def test_record_key_ignores_which_other_records_a_run_uses(physionet):
    from ecgpipe.config import load_config
    from ecgpipe.stages.segments import record_unit

    db_dir = str(physionet / "mitdb")
    base = record_unit(load_config("paper4"), "mitdb", "100", db_dir)
    subset = record_unit(load_config("paper4", {"databases": {"mitdb": {"records": ["100", "101"]}}}), "mitdb", "100", db_dir)
    other_lead = record_unit(load_config("paper4", {"databases": {"mitdb": {"lead": ["V5"]}}}), "mitdb", "100", db_dir)
    assert base.key == subset.key  # leaving record 219 out of a run reuses every other record's segments
    assert base.key != other_lead.key
    # the same classes in another order: every stored class index means another class, so nothing is reused
    cfg = load_config("paper4")
    swapped = dict(reversed(list(cfg.classes.items())))
    reordered = load_config("paper4").model_copy(update={"classes": swapped})
    assert reordered.class_names == list(reversed(cfg.class_names))
    assert record_unit(reordered, "mitdb", "100", db_dir).key != base.key
    assert len(base.files_sha256) == 64


def test_tasks_get_the_config_without_its_record_lists(physionet, tmp_path):
    """A config listing 100 000 records went whole (1 MB of JSON) with every task's arguments; tasks now get it
    without the lists, and a record computed from that config is the record computed from the whole one."""
    from ecgpipe.config import PipelineConfig
    from ecgpipe.orchestration.tasks import task_config_json
    from ecgpipe.stages.segments import compute_record, record_unit

    names = [f"R{i:06d}" for i in range(100_000)]
    listed = load_config("paper4", {"databases": {"mitdb": {"records": names}, "vfdb": {"records": ["418"]}}})
    sent = task_config_json(listed)
    assert len(listed.model_dump_json()) > 1_000_000 and len(sent) < 20_000
    stripped = PipelineConfig.model_validate_json(sent)
    assert [db.records for db in stripped.databases.values()] == [[], []]
    without_lists = {"databases": {"__all__": {"records"}}}
    assert stripped.model_dump(exclude=without_lists) == listed.model_dump(exclude=without_lists)  # all else kept

    cfg = load_config("paper4", {"databases": {"mitdb": {"records": ["100", "101"]}}})
    unit = record_unit(cfg, "mitdb", "100", str(physionet / "mitdb"))
    whole = compute_record(str(tmp_path / "a.zarr"), unit, cfg)
    as_a_task = compute_record(str(tmp_path / "b.zarr"), unit, PipelineConfig.model_validate_json(task_config_json(cfg)))
    assert as_a_task[1] == whole[1] and as_a_task[0].to_json() == whole[0].to_json() and whole[0].n_windows > 0


def test_planning_the_table_holds_no_python_object_per_window(tmp_path):
    """The flow process plans the table from the records' summaries: what it keeps grows by a few bytes per window
    (arrays), not by a Python object per window (a string id was ~100 bytes, measured 0.019 MiB per record)."""
    import tracemalloc

    import zarr

    from ecgpipe.stages.segments import RecordSummary
    from ecgpipe.stages.table import plan_table

    cfg = load_config("paper4", {"sampling": {"max_per_class": None}})
    store = str(tmp_path / "store.zarr")
    zarr.open_group(store, mode="w")
    n_classes = len(cfg.class_names)

    def retained(windows_per_record: int, n_records: int = 40) -> int:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        summaries = [RecordSummary("db", f"r{i:04d}", f"db:{i}", "ECG", windows_per_record, ["(N"], f"k{i}", f"s{i}",
                                   starts=np.arange(windows_per_record) * 3600,
                                   class_index=np.arange(windows_per_record) % n_classes)
                     for i in range(n_records)]
        segment_table = plan_table(store, summaries, cfg)
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        assert len(segment_table) == n_records * windows_per_record and len(segment_table.sources) == n_records
        return used

    per_window = (retained(2000) - retained(10)) / (40 * 1990)
    assert per_window < 40, f"{per_window:.0f} bytes kept per window"


def test_status_calls_a_rekeyed_row_stale_by_its_earlier_marker(tmp_path):
    """A classifier row's marker is named by its key: a row whose settings or code changed finds its earlier marker
    by its extractor, when it is the extractor's only row, or in a sweep by its label (the code changed)."""
    from types import SimpleNamespace

    from ecgpipe.location import Location
    from ecgpipe.markers import Markers
    from ecgpipe.status import _earlier_units

    out = Location(tmp_path)
    markers = Markers(out)
    markers.write("classify", "features__aa__0000000000000001", "k1", {"label": "SVC", "protocols": {}})
    markers.write("classify", "features__aa__0000000000000002", "k2", {"label": "logistic", "protocols": {}})
    markers.write("classify", "features__bb__0000000000000003", "k3", {"protocols": {}})  # no label: older
    row = lambda unit, label: SimpleNamespace(unit=unit, label=label)  # noqa: E731
    svc, logistic, lonely, other = (row("features__aa__00000000000000f1", "SVC"), row("features__aa__0000000000000002", "logistic"),
                                    row("features__bb__00000000000000f3", "SVC"), row("features__aa__00000000000000f4", "HGB"))
    earlier = _earlier_units(out, markers, "classify", [svc, logistic, other])
    assert earlier[svc.unit] == "features__aa__0000000000000001"  # same extractor and label, another key: stale
    assert earlier[logistic.unit] == logistic.unit  # its own marker
    assert earlier[other.unit] == other.unit  # a new row of the sweep: no earlier marker, missing
    assert _earlier_units(out, markers, "classify", [lonely])[lonely.unit] == "features__bb__0000000000000003"
    relabelled = row("features__aa__00000000000000f6", "SVC C=1")  # its extractor's only row, settings changed
    assert _earlier_units(out, markers, "classify", [relabelled])[relabelled.unit].endswith("0001")
    two = [lonely, row("features__bb__00000000000000f5", "HGB")]  # an unlabelled marker of a sweep: whose it was is unknown
    assert set(_earlier_units(out, markers, "classify", two).items()) == {(r.unit, r.unit) for r in two}
    assert _earlier_units(Location(tmp_path / "none"), markers, "classify", [svc])[svc.unit] == svc.unit
    # a row that is done is its own unit, and no earlier marker is read for it (each holds every record's predictions)
    read = []
    markers.read = lambda stage, unit: read.append(unit) or {"label": "SVC"}
    assert _earlier_units(out, markers, "classify", [svc, logistic], {svc.unit, logistic.unit}) == {svc.unit: svc.unit,
                                                                                                   logistic.unit: logistic.unit}
    assert read == []
    assert _earlier_units(out, markers, "classify", [svc, logistic], {logistic.unit})[svc.unit].endswith("0001") and read


def test_records_a_labels_csv_lists_without_files_are_absent_and_none_present_is_an_error(tmp_path):
    import pytest

    from ecgpipe.plan import without_files
    from ecgpipe.sources import DataSourceError

    cfg = load_config("cinc2017")
    (tmp_path / "A00001.hea").write_text("A00001 1 300 3000\n")
    (tmp_path / "A00002.mat").write_bytes(b"")  # a signal without its header: present, it fails by name when read
    names = ["A00001", "A00002", "A00003", "A00004"]
    assert without_files(cfg, "cinc2017", tmp_path, names) == ["A00003", "A00004"]
    with pytest.raises(DataSourceError, match="none of the 2 records REFERENCE-v3.csv lists.*is --data-dir the folder above"):
        without_files(cfg, "cinc2017", tmp_path, ["A00003", "A00004"])
    (tmp_path / "g1").mkdir()  # the records are in a subfolder, the CSV names them bare: said, with the name to use
    (tmp_path / "g1" / "A00004.hea").write_text("A00004 1 300 3000\n")
    with pytest.raises(DataSourceError, match=r"g1/A00004 is there: a labels CSV names a record in a subfolder by its "
                                              r"path from the folder \(g1/A00004,<label>\)"):
        without_files(cfg, "cinc2017", tmp_path, ["A00003", "A00004"])
    (tmp_path / "RECORDS").write_text("\n".join(names) + "\n")  # the database's own index: a missing record fails
    assert without_files(cfg, "cinc2017", tmp_path, names) == []


def test_records_that_all_failed_are_summarised_by_kind_of_error():
    """"every record failed; first error: {'record': ..., 'error': ...}" showed one record's error (a RECORDS comment
    line's) as a Python dict and hid the error every real record had."""
    from ecgpipe.orchestration.steps import failure_kinds

    skipped = [{"record": "/d/mine/# my records", "error": "header file /d/mine/# my records.hea not found"},
               *({"record": f"/d/mine/{r}", "error": f"no lead matching ['II'] (the record has ['MLII', 'V{r[-1]}'])"}
                 for r in ("201", "203", "205"))]
    text = failure_kinds(skipped)
    assert text.startswith("3 x no lead matching ['II'] (the record has ['MLII', 'V1']) (e.g. /d/mine/201)")
    assert "1 x header file <record>.hea not found (e.g. /d/mine/# my records)" in text and "{" not in text
    many = [{"record": f"/d/r{i}", "error": f"problem {chr(97 + i)}"} for i in range(5)]
    assert failure_kinds(many).endswith("2 other kind(s) of error, in run.json")


def test_a_pilot_run_takes_a_seeded_sample_of_each_database_in_its_order(physionet):
    """`ecgpipe run --max-records N` (run.max_records): N records of each database, the same ones at every run of the
    same seed, in RECORDS order, each database's sample its own; the full run later reuses their work (keys per record)."""
    from ecgpipe.cli import _overrides, build_parser
    from ecgpipe.records import list_records
    from ecgpipe.sources import selected_records

    args = build_parser().parse_args(["run", "--out", "x", "--max-records", "5", "--workers", "1"])
    assert _overrides(args) == {"run": {"n_workers": 1, "max_records": 5}}
    assert _overrides(build_parser().parse_args(["run", "--out", "x"])) == {}
    cfg = load_config("paper4", _overrides(args))
    mitdb, vfdb = list_records(physionet / "mitdb"), list_records(physionet / "vfdb")
    pilot = selected_records(cfg, "mitdb", physionet / "mitdb")
    assert len(pilot) == 5 and pilot == [r for r in mitdb if r in pilot] and pilot != mitdb[:5]
    assert selected_records(cfg, "mitdb", physionet / "mitdb") == pilot  # seeded: the same sample every time
    other = load_config("paper4", {"run": {"max_records": 5}, "sampling": {"seed": 1}})
    assert selected_records(other, "mitdb", physionet / "mitdb") != pilot
    assert len(selected_records(cfg, "vfdb", physionet / "vfdb")) == 5 and set(selected_records(cfg, "vfdb", physionet / "vfdb")) <= set(vfdb)
    assert selected_records(load_config("paper4", {"run": {"max_records": 100}}), "vfdb", physionet / "vfdb") == vfdb


def test_record_files_a_labels_csv_does_not_list_are_named_not_lost(cinc, tmp_path):
    """A labels-CSV database folder without RECORDS (the CSV is the list): a record whose files lie there, in a
    subfolder too, but whose row was forgotten is not in the run and is named (report.json unlisted_records, the
    report's records line, a warning); a RECORDS file or databases.<db>.records says which records count instead.
    A pilot's sample says so in the same line."""
    import shutil

    from ecgpipe.plan import RunPlan, unlisted_files
    from ecgpipe.report_build import record_accounting
    from ecgpipe.report_tables import accounting_line

    folder = tmp_path / "data" / "cinc2017"
    (folder / "site2").mkdir(parents=True)
    for name, where in [("A00002", folder), ("A00004", folder), ("A00005", folder), ("A00006", folder / "site2")]:
        for f in cinc.glob(f"{name}.*"):
            shutil.copy(f, where / f.name)
    (folder / "REFERENCE-v3.csv").write_text("A00002,N\nA00004,A\nA09999,N\n")  # A09999: no file (absent)
    cfg = load_config("cinc2017")
    assert unlisted_files(cfg, "cinc2017", folder) == ["cinc2017/A00005", "cinc2017/site2/A00006"]
    plan = RunPlan.create(cfg, tmp_path / "data", tmp_path / "out", download=False)
    assert [u.record for u in plan.records] == ["A00002", "A00004"] and plan.absent == ["cinc2017/A09999"]
    assert plan.unlisted == ["cinc2017/A00005", "cinc2017/site2/A00006"]
    assert plan.notes()[1].startswith("2 record(s) with files in the folder have no row in the labels CSV and are not used")
    assert len(plan.notes()) == 2  # no name of the two lists is the other's in another case
    (folder / "REFERENCE-v3.csv").write_text("A00002,N\nA00004,A\nA09999,N\na00005,O\n")  # A00005 written a00005
    mismatched = RunPlan.create(cfg, tmp_path / "data", tmp_path / "out", download=False)
    assert "cinc2017/a00005" in mismatched.absent and "cinc2017/A00005" in mismatched.unlisted
    assert mismatched.notes()[2].startswith("1 of them are the same record written in another case in the labels CSV "
                                            "and in the file names (e.g. cinc2017/a00005 ~ cinc2017/A00005)")
    listed = load_config("cinc2017", {"databases": {"cinc2017": {"records": ["A00002"]}}})
    assert unlisted_files(listed, "cinc2017", folder) == []
    (folder / "RECORDS").write_text("A00002\nA00004\n")
    assert unlisted_files(cfg, "cinc2017", folder) == []

    counts = record_accounting([], [], 3, n_absent=1, n_unlisted=2, max_records=5)
    assert counts["unlisted"] == 2 and counts["max_records_per_database"] == 5
    line = accounting_line(counts)
    assert "Not in the run: 2 record(s) with files in the folder but no row in the labels CSV" in line
    assert "A pilot: at most 5 records of each database (run.max_records), a seeded sample of any that has more." in line
    assert "pilot" not in accounting_line(record_accounting([], [], 3)) and "Not in the run" not in accounting_line(
        record_accounting([], [], 3))


def test_a_run_plans_its_records_once_the_preflight_s_units_go_to_its_plan(cinc, tmp_path):
    """Planning reads every record's header (and looks up its digest): the preflight's units are handed to the same
    run's plan, not planned again; a plan of another folder or other settings (or ``status``) plans afresh."""
    import shutil

    from ecgpipe.orchestration.preflight import preflight
    from ecgpipe.plan import _PREFLIGHT_UNITS, RunPlan, _handoff

    folder = tmp_path / "data" / "cinc2017"
    folder.mkdir(parents=True)
    for name in ("A00002", "A00004"):
        for f in cinc.glob(f"{name}.*"):
            shutil.copy(f, folder / f.name)
    (folder / "REFERENCE-v3.csv").write_text("A00002,N\nA00004,A\n")
    cfg = load_config("cinc2017")
    units = preflight(cfg, tmp_path / "data", out_dir=str(tmp_path / "out"))
    assert RunPlan.create(cfg, str(tmp_path / "data"), tmp_path / "out", download=False).records[0] is units[0]
    assert _handoff(cfg, tmp_path / "data", tmp_path / "out") not in _PREFLIGHT_UNITS  # taken: a next run plans again
    again = RunPlan.create(cfg, str(tmp_path / "data"), tmp_path / "out", download=False)
    assert [u.record for u in again.records] == ["A00002", "A00004"] and again.records[0] is not units[0]
    preflight(cfg, tmp_path / "data", out_dir=str(tmp_path / "out"))
    other = load_config("cinc2017", {"run": {"max_records": 1}})  # other settings: their own plan
    assert len(RunPlan.create(other, tmp_path / "data", tmp_path / "out", download=False).records) == 1
    _PREFLIGHT_UNITS.pop(_handoff(cfg, tmp_path / "data", tmp_path / "out"))  # the first settings' units, never taken
    # a run that stops after its preflight (here: its output folder cannot be made) keeps none of them
    from flows.ecg_pipeline import run_pipeline

    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        run_pipeline(cfg, str(tmp_path / "data"), str(tmp_path / "file" / "out"))
    assert _handoff(cfg, str(tmp_path / "data"), str(tmp_path / "file" / "out")) not in _PREFLIGHT_UNITS


def test_records_failing_alike_stop_the_run_whatever_their_names():
    """The fail-fast stop groups errors by kind with each record's own path taken out: records named by letters
    (ptbdb's s0010_re, s0014lre) failing the same way are one kind, as digit names always were; two kinds go on."""
    from ecgpipe.config import load_config
    from ecgpipe.errors import PipelineError
    from ecgpipe.orchestration.steps import fail_fast

    cfg = load_config("paper4", {"run": {"fail_fast_after": 3}})
    names = ["/data/ptbdb/patient001/s0010_re", "/data/ptbdb/patient001/s0014lre", "/data/ptbdb/patient002/s0015lre"]
    alike = [(n, f"annotation file {n}.atr not found") for n in names]
    with pytest.raises(PipelineError, match=r"the first 3 records all failed with the same error, e\.g\. /data/ptbdb/patient001/s0010_re: annotation"):
        fail_fast(cfg, alike, 3, 100)
    fail_fast(cfg, alike[:2] + [(names[2], "no channel named 'MLII' (it has I, II, III)")], 3, 100)  # two kinds: bad records
    fail_fast(cfg, alike, 3, 3)  # every record tried anyway: nothing to stop


def test_a_kept_fold_is_used_only_by_the_row_of_its_key(tmp_path):
    """A fold kept by a stopped run is reused only by a row of the same key (its settings, code, features and table):
    after any change the fold is computed again."""
    from ecgpipe.markers import Markers
    from ecgpipe.plan import kept_fold, write_fold
    from ecgpipe.stages.classification import FoldResult

    markers = Markers(str(tmp_path))
    write_fold(markers, "row", "key-a", "grouped_by_subject", 2, FoldResult([3, 5], [1, 0], {"C": np.float64(1.0)}))
    kept = kept_fold(markers, "row", "key-a", "grouped_by_subject", 2)
    assert kept == FoldResult([3, 5], [1, 0], {"C": 1.0}) and kept != FoldResult([3, 5], [1, 1], {"C": 1.0})
    assert kept.test.dtype == np.int64 and kept.predicted.tolist() == [1, 0]  # arrays again, as a fresh fold's
    proba = np.array([[0.125, 0.875], [0.333333, 0.666667]])
    write_fold(markers, "row", "key-a", "grouped_by_subject", 3, FoldResult([1, 2], [1, 1], {}, proba))
    kept = kept_fold(markers, "row", "key-a", "grouped_by_subject", 3)
    assert kept.probabilities.dtype == np.float64 and np.array_equal(kept.probabilities, proba)  # as computed
    assert kept_fold(markers, "row", "key-b", "grouped_by_subject", 2) is None  # settings or code changed
    assert kept_fold(markers, "row", "key-a", "grouped_by_subject", 1) is None
    assert kept_fold(markers, "row", "key-a", "stratified_10fold", 2) is None
