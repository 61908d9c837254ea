"""The 1-D CNN peer of ``tests/benchmarks/bench_cnn1d.py``: its input on real CinC 2017 records, its crops, the
epoch it keeps, and folds that never train on the records they test (the peer's numbers in the README rest on these)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))
import bench_cnn1d as peer  # noqa: E402


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"crop_s": 5.0, "fs": 100.0, "width": 4, "epochs": 4, "batch": 16, "device": "cpu", **kw})


def test_input_is_the_first_lead_resampled_with_its_peaks_kept(cinc):
    names = (cinc / "RECORDS").read_text().split()[::199][:30]
    for name in names:
        raw = wfdb.rdrecord(str(cinc / name), channels=[0]).p_signal[:, 0]
        x = peer.load_signal(str(cinc / name), 100.0)
        assert x.dtype == np.float32 and len(x) == -(-len(raw) // 3)  # 300 Hz -> 100 Hz, the whole record
        assert np.corrcoef(x, resample_poly(np.nan_to_num(raw), 1, 3))[0, 1] > 0.99, name
        assert np.mean(np.abs(x) >= 10) < 0.005, name  # R peaks are not clipped (only an electrode pop may be)
        assert 0.5 < np.percentile(np.abs(x), 99) <= 1.0 + 1e-6


def test_crops_cover_the_record_and_pad_short_ones():
    x = np.arange(2700, dtype=np.float32)
    tiles = peer.tiled_crops(x, 1000)
    assert [int(t[0]) for t in tiles] == [0, 500, 1000, 1500, 1700]  # the last one ends at the signal's end
    assert tiles[-1, -1] == 2699
    assert [int(t[0]) for t in peer.tiled_crops(x[:2500], 1000)] == [0, 500, 1000, 1500]
    short = peer.tiled_crops(x[:300], 1000)
    assert short.shape == (1, 1000) and short[0, :300].tolist() == x[:300].tolist() and not short[0, 300:].any()
    rng = np.random.default_rng(0)
    long_starts, short_offsets = set(), set()
    for _ in range(20):
        crop = peer.random_crop(x, 1000, rng)
        assert crop.shape == (1000,) and np.all(np.diff(crop) == 1)  # consecutive samples of the record
        long_starts.add(int(crop[0]))
        padded = peer.random_crop(x[1:301], 1000, rng)  # 1..300: no zero inside the record
        assert padded.shape == (1000,) and np.count_nonzero(padded) == 300
        short_offsets.add(int(np.flatnonzero(padded)[0]))
    assert len(long_starts) > 5 and len(short_offsets) > 5  # wherever they start


def test_training_keeps_the_best_validated_epoch(monkeypatch):
    """Validation F1 falls over the epochs scored (3 and 4 of 4): the weights returned are epoch 3's, not the last."""
    rng = np.random.default_rng(0)
    signals = [rng.normal(size=700).astype(np.float32) for _ in range(40)]
    y = np.repeat([0, 1], 20)
    scores = iter([0.9, 0.1])
    seen = []
    real_predict = peer.predict_proba

    def predict_and_snapshot(model, *a, **kw):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_predict(model, *a, **kw)

    monkeypatch.setattr(peer, "f1_nao", lambda *a, **kw: (next(scores), []))
    monkeypatch.setattr(peer, "predict_proba", predict_and_snapshot)
    model, info = peer.train_fold(signals, y, 2, _args(), seed=3)
    assert info == {"validation_f1_nao": 0.9, "epoch_kept": 3} and len(seen) == 2  # epochs 1-2 not scored
    kept = model.state_dict()
    assert all(torch.equal(kept[k], seen[0][k]) for k in kept)
    assert not all(torch.equal(kept[k], seen[1][k]) for k in kept)
    fit, val = peer.validation_split(y, 3)
    assert len(val) == 4 and not set(fit) & set(val) and sorted([*fit, *val]) == list(range(40))


def test_folds_never_train_on_the_records_they_test(monkeypatch):
    signals = [np.full(10, i, np.float32) for i in range(30)]  # each signal says which record it is
    y = np.arange(30) % 3
    fold = np.arange(30) % 5
    trained_on = {}

    def fake_train(sigs, labels, n_classes, args, seed):
        trained_on[seed] = sorted(int(s[0]) for s in sigs)
        assert [int(s[0]) % 3 for s in sigs] == labels.tolist()  # labels go with their signals
        return "model", {"validation_f1_nao": 0.0, "epoch_kept": 1}

    def fake_predict(model, sigs, n, device):  # predicts each record's own class: aligned rows score 1
        out = np.zeros((len(sigs), 3))
        out[np.arange(len(sigs)), [int(s[0]) % 3 for s in sigs]] = 1
        return out

    monkeypatch.setattr(peer, "train_fold", fake_train)
    monkeypatch.setattr(peer, "predict_proba", fake_predict)
    proba, per_fold, _ = peer.cv_predict(signals, y, fold, [0, 2], 3, _args())
    assert trained_on == {0: [i for i in range(30) if i % 5 != 0], 2: [i for i in range(30) if i % 5 != 2]}
    tested = np.isin(fold, [0, 2])
    assert proba[tested].argmax(1).tolist() == y[tested].tolist() and np.isnan(proba[~tested]).all()
    assert [f["test_f1_nao"] for f in per_fold] == [1.0, 1.0]


@pytest.mark.system
def test_a_few_epochs_on_real_records_run_end_to_end(cinc):
    labels = dict(line.split(",") for line in (cinc / "REFERENCE-v3.csv").read_text().split())
    names = [n for n, label in labels.items() if label in ("N", "A", "O")][:60]
    classes = ["N", "A", "O"]
    signals = [peer.load_signal(str(cinc / n), 100.0) for n in names]
    y = np.array([classes.index(labels[n]) for n in names])
    model, info = peer.train_fold(signals, y, len(classes), _args(epochs=2), seed=1)
    _, val = peer.validation_split(y, 1)
    proba = peer.predict_proba(model, [signals[i] for i in val], 500, "cpu")
    assert proba.shape == (len(val), 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert info["epoch_kept"] == 2  # the second half of two epochs is the second
    assert peer.f1_nao(y[val], proba.argmax(1), [0, 1, 2])[0] == pytest.approx(info["validation_f1_nao"], abs=1e-4)
