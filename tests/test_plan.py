"""Stable selection and stable rows: what keeps an incremental rerun's recomputation small."""

import numpy as np

from ecgpipe.config import load_config
from ecgpipe.stages.features import chunk_keys as feature_chunk_keys
from ecgpipe.stages.spectrograms import chunk_keys as spectrogram_chunk_keys
from ecgpipe.stages.table import assign_slots, segment_uid, select_stable


def _uids(record, n):
    return [segment_uid("db", record, 500 * i) for i in range(n)]


def test_select_stable_caps_and_is_seeded():
    uids = _uids("a", 100) + _uids("b", 10) + _uids("c", 50)
    cls = np.array([0] * 100 + [1] * 10 + [2] * 50)
    a = select_stable(uids, cls, {0: 20, 1: 20, 2: None}, seed=3)
    assert np.bincount(cls[a]).tolist() == [20, 10, 50]
    assert np.array_equal(a, select_stable(uids, cls, {0: 20, 1: 20, 2: None}, seed=3))
    assert not np.array_equal(a, select_stable(uids, cls, {0: 20, 1: 20, 2: None}, seed=4))


def test_adding_a_record_displaces_only_what_it_outranks():
    old = _uids("a", 60)
    new = old + _uids("b", 60)
    cap = {0: 40}
    before = {old[i] for i in select_stable(old, np.zeros(60, int), cap, 0)}
    after = {new[i] for i in select_stable(new, np.zeros(120, int), cap, 0)}
    added = {u for u in after if u.startswith("db/b/")}
    assert len(after) == 40 and after - before == added
    assert len(before - after) == len(added)  # each newcomer displaced exactly one old segment


def test_assign_slots_keeps_rows_in_place():
    prev = [f"x/{i:03d}/0" for i in range(10)]
    assert assign_slots(None, list(reversed(prev))) == prev  # canonical order on a cold run
    same = assign_slots(prev, prev)
    assert same == prev
    changed = assign_slots(prev, prev[:3] + prev[4:] + ["y/000/0"])
    assert changed[:3] == prev[:3] and changed[3] == "y/000/0" and changed[4:] == prev[4:]
    grown = assign_slots(prev, prev + ["y/000/0", "y/001/0"])
    assert grown[:10] == prev and grown[10:] == ["y/000/0", "y/001/0"]
    shrunk = assign_slots(prev, [u for u in prev if u not in (prev[2], prev[5])])
    assert len(shrunk) == 8 and set(shrunk) == set(prev) - {prev[2], prev[5]}
    assert [i for i, (a, b) in enumerate(zip(prev, shrunk)) if a != b] == [2, 5]  # holes filled from the tail


def test_chunk_keys_change_only_where_inputs_or_settings_change():
    cfg = load_config("paper4", {"run": {"chunk_size": 4}})
    uids = [f"mitdb/{r}/{i:010d}" for r in ("100", "101") for i in range(6)]
    rk = {"mitdb/100": "k100", "mitdb/101": "k101"}
    keys = spectrogram_chunk_keys(cfg, uids, rk)
    assert len(keys) == 3 and len(set(keys)) == 3
    fixed = spectrogram_chunk_keys(cfg, uids, {**rk, "mitdb/101": "k101-fixed"})
    assert [a == b for a, b in zip(keys, fixed)] == [True, False, False]  # chunk 0 holds only record 100
    stft = spectrogram_chunk_keys(load_config("paper4", {"run": {"chunk_size": 4}, "spectrogram": {"nfft": 512}}), uids, rk)
    assert not set(stft) & set(keys)
    other_clf = load_config("paper4", {"run": {"chunk_size": 4}, "classifier": {"C": 1.0}})
    assert spectrogram_chunk_keys(other_clf, uids, rk) == keys
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
    assert len(base.files_sha256) == 64
