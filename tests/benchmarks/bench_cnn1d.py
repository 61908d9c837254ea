"""ecgpipe against the deep-learning peer a reviewer asks about next: a 1-D CNN trained end to end on the raw signal,
on the same records and the same folds as a run (and the simple gradient-boosting peer of ``bench_peer.py`` beside it).

    python tests/benchmarks/bench_cnn1d.py --run runs/cinc2017 --data-dir ../shared/data/physionet [--epochs 30]

Why this peer: the question a transfer-learning pipeline (spectrograms -> ImageNet CNN -> classical classifier) must
answer is whether a network trained on the ECG itself, the approach of most CinC 2017 entries and of Hannun et al.
(Nature Medicine 2019), would simply do better. The peer is a residual 1-D CNN in that family (a stem convolution,
eight residual blocks of two convolutions with batch normalisation and dropout 0.1, width doubling and length halving
every two blocks, global average pooling, one linear layer), written here from scratch with PyTorch, not from
ecgpipe's code:

* input: the record's first lead resampled to ``--fs`` (100 Hz; scipy's ``resample_poly``), less its median, scaled
  by the 99th percentile of its absolute deviation from it (R peaks near 1 whatever the gain) and clipped at 10 (an
  electrode pop must not set the scale);
* training: one random ``--crop-s`` (10 s, ecgpipe's window) crop of every training record per epoch (shorter
  records zero-padded at a random offset), its amplitude scaled by a random factor in [0.8, 1.25]; Adam with
  weight decay 1e-4 under a one-cycle schedule (warm-up to lr 1e-3 over the first tenth, cosine decay after),
  cross-entropy with balanced class weights (as ecgpipe's rows), batch 32, ``--epochs`` (30) epochs;
* model selection: a stratified tenth of the training records (not trained on) is scored after each epoch of the
  second half, and the epoch with the best F1_NAO there is kept: the test fold is never looked at;
* prediction: the mean class probability of crops every ``crop-s / 2`` seconds over the whole record.

Its size (``--width``, ``--epochs``) is set so that five folds train in about 45 minutes on two CPU cores; the
literature's ResNets are deeper and train longer on GPUs (``--device cuda``). A crop carries its whole record's
label, which for an intermittent rhythm in a long record is noisy (the tiled prediction softens it). The folds are
the run's (``OUT/records_<protocol>.csv``, as ``bench_peer.py``); ecgpipe's best row was chosen among the run's rows
on these same folds, so every row is printed, not only the best. One more row puts the two side by side: the mean of
the CNN's and ecgpipe's best row's class probabilities (``votes_*`` of the records CSV), equal weights, nothing tuned.
Prints one table of F1 per class and F1_NAO for
every method, the differences with 95 % paired bootstrap intervals over records, and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import wfdb
from scipy.signal import resample_poly
from sklearn.model_selection import train_test_split
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peer import (  # noqa: E402  (the same folds and scoring as the simple peer)
    f1_nao,
    paired_bootstrap,
    peer_features,
    peer_predictions,
    run_folds,
)


def load_signal(path: str, fs: float) -> np.ndarray:
    """The record's first lead at ``fs``, less its median, over the 99th percentile of its absolute deviation, clipped
    at 10 (float32)."""
    rec = wfdb.rdrecord(path, channels=[0])
    x = np.nan_to_num(rec.p_signal[:, 0].astype(np.float64))
    ratio = Fraction(fs / float(rec.fs)).limit_denominator(1000)
    if ratio != 1:
        x = resample_poly(x, ratio.numerator, ratio.denominator)
    x = x - np.median(x)
    scale = np.percentile(np.abs(x), 99) or 1.0
    return np.clip(x / scale, -10, 10).astype(np.float32)


def random_crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` consecutive samples at a random place; a shorter signal zero-padded at a random offset."""
    if len(x) >= n:
        start = int(rng.integers(0, len(x) - n + 1))
        return x[start:start + n]
    out = np.zeros(n, np.float32)
    start = int(rng.integers(0, n - len(x) + 1))
    out[start:start + len(x)] = x
    return out


def tiled_crops(x: np.ndarray, n: int) -> np.ndarray:
    """Crops of ``n`` samples every ``n // 2`` covering the whole signal (the last one ending at its end); a shorter
    signal is one crop, zero-padded at the end."""
    if len(x) <= n:
        out = np.zeros((1, n), np.float32)
        out[0, :len(x)] = x
        return out
    starts = list(range(0, len(x) - n + 1, n // 2))
    if starts[-1] != len(x) - n:
        starts.append(len(x) - n)
    return np.stack([x[s:s + n] for s in starts])


class Block(nn.Module):
    """Two convolutions with batch normalisation and a shortcut (strided and projected when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int = 9):
        super().__init__()
        pad = kernel // 2
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, kernel, stride, pad, bias=False), nn.BatchNorm1d(c_out), nn.ReLU(inplace=True),
            nn.Dropout(0.1), nn.Conv1d(c_out, c_out, kernel, 1, pad, bias=False), nn.BatchNorm1d(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm1d(c_out)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class ResNet1d(nn.Module):
    def __init__(self, n_classes: int, width: int = 16, blocks: int = 8):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(1, width, 15, 2, 7, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        c = width
        for b in range(blocks):
            c_out = width * 2 ** (b // 2)
            layers.append(Block(c, c_out, stride=2 if b % 2 == 1 else 1))
            c = c_out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, n_classes)

    def forward(self, x):  # x: (batch, samples)
        return self.head(self.features(x[:, None, :]).mean(dim=2))


def predict_proba(model: ResNet1d, signals: list[np.ndarray], n: int, device: str, batch: int = 64) -> np.ndarray:
    """Each record's mean class probability over its tiled crops."""
    model.eval()
    crops = [tiled_crops(x, n) for x in signals]
    owner = np.repeat(np.arange(len(crops)), [len(c) for c in crops])
    flat = np.concatenate(crops)
    probs = []
    with torch.no_grad():
        for i in range(0, len(flat), batch):
            probs.append(torch.softmax(model(torch.from_numpy(flat[i:i + batch]).to(device)), 1).cpu().numpy())
    probs = np.concatenate(probs)
    out = np.zeros((len(crops), probs.shape[1]))
    np.add.at(out, owner, probs)
    return out / np.bincount(owner)[:, None]


def validation_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) indices: a stratified tenth of the training records for choosing the epoch."""
    return train_test_split(np.arange(len(y)), test_size=0.1, stratify=y, random_state=seed)


def train_fold(signals: list[np.ndarray], y: np.ndarray, n_classes: int, args, seed: int) -> tuple[ResNet1d, dict]:
    """A model trained on ``signals`` / ``y``: the epoch kept is the one of the second half with the best F1_NAO on
    ``validation_split``'s tenth (early epochs of a one-cycle schedule do not win, and scoring them costs time)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = int(round(args.crop_s * args.fs))
    fit, val = validation_split(y, seed)
    model = ResNet1d(n_classes, args.width).to(args.device)
    weights = len(fit) / (n_classes * np.bincount(y[fit], minlength=n_classes))  # balanced, as ecgpipe's rows
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=args.device))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    steps = args.epochs * math.ceil(len(fit) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    best = {"f1": -1.0, "epoch": 0, "state": None}
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(fit)
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            crops = np.stack([random_crop(signals[j], n, rng) for j in idx])
            crops *= np.exp(rng.uniform(np.log(0.8), np.log(1.25), (len(idx), 1))).astype(np.float32)
            loss = loss_fn(model(torch.from_numpy(crops).to(args.device)), torch.from_numpy(y[idx]).to(args.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if epoch + 1 <= args.epochs // 2:
            continue
        f1 = f1_nao(y[val], predict_proba(model, [signals[j] for j in val], n, args.device).argmax(1),
                    list(range(n_classes)))[0]
        if f1 > best["f1"]:
            best = {"f1": f1, "epoch": epoch + 1, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    model.load_state_dict(best["state"])
    return model, {"validation_f1_nao": round(best["f1"], 4), "epoch_kept": best["epoch"]}


def cv_predict(signals: list[np.ndarray], y: np.ndarray, fold: np.ndarray, folds, n_classes: int, args
               ) -> tuple[np.ndarray, list[dict], ResNet1d | None]:
    """Each record of ``folds`` predicted by the model trained on the records of the other folds: class probabilities
    (NaN elsewhere); per fold what training kept, and the last model."""
    proba = np.full((len(y), n_classes), np.nan)
    per_fold, model = [], None
    n = int(round(args.crop_s * args.fs))
    for f in folds:
        test = fold == f
        started = time.perf_counter()
        model, info = train_fold([signals[i] for i in np.flatnonzero(~test)], y[~test], n_classes, args, seed=int(f))
        proba[test] = predict_proba(model, [signals[i] for i in np.flatnonzero(test)], n, args.device)
        per_fold.append({"fold": int(f), **info, "seconds": round(time.perf_counter() - started, 1),
                         "test_f1_nao": round(f1_nao(y[test], proba[test].argmax(1), list(range(n_classes)))[0], 4)})
        print(f"fold {f}: {per_fold[-1]}", flush=True)
    return proba, per_fold, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="output folder of an ecgpipe run on CSV-labelled data")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--protocol", default="grouped_by_subject")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--width", type=int, default=16, help="channels of the first blocks (doubling every two blocks)")
    ap.add_argument("--crop-s", type=float, default=10.0, help="seconds per crop (ecgpipe's windows: 10 s)")
    ap.add_argument("--fs", type=float, default=100.0, help="input rate, Hz (P and f waves lie below 15 Hz, a QRS's "
                    "energy mostly below 40 Hz)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--folds", type=int, default=0, help="train only the first N folds (a quick look; 0: all)")
    ap.add_argument("--no-rr-peer", action="store_true", help="leave out the gradient-boosting peer")
    ap.add_argument("--save-proba", default="", help="an .npz file for the CNN's out-of-fold class probabilities")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    decided = run_folds(run, args.protocol)  # the run's records, classes, folds and best row's classes
    report, classes, rows, y, best, fold = (decided.report, decided.classes, decided.rows, decided.y, decided.best,
                                            decided.fold)
    paths = [str(Path(args.data_dir) / r["record"]) for r in rows]
    labels = list(range(len(classes)))

    t = time.perf_counter()
    with ProcessPoolExecutor(args.threads) as pool:
        signals = list(pool.map(load_signal, paths, [args.fs] * len(paths), chunksize=64))
        X = None if args.no_rr_peer else np.array(list(pool.map(peer_features, paths, chunksize=32)))
    load_s = time.perf_counter() - t
    folds = np.unique(fold)[: args.folds or None]
    tested = np.isin(fold, folds)
    t = time.perf_counter()
    cnn_proba, per_fold, model = cv_predict(signals, y, fold, folds, len(classes), args)
    cnn = np.where(np.isnan(cnn_proba).any(1), -1, np.nan_to_num(cnn_proba).argmax(1))
    if args.save_proba:  # for later analyses without training again
        np.savez(args.save_proba, records=np.array([r["record"] for r in rows]), proba=cnn_proba, classes=classes)
    train_s = time.perf_counter() - t
    rr = np.full(len(y), -1) if X is None else peer_predictions(X, y, fold, folds)

    yt = y[tested]
    methods = [("1-D CNN trained end to end (this benchmark)", cnn[tested])]
    # the two side by side: the mean of their class probabilities, equal weights (nothing tuned on these folds)
    votes = np.array([[float(r[f"votes_{c}"]) for c in classes] for r in rows])
    methods.append(("mean of the 1-D CNN's and ecgpipe's best row's class probabilities (equal weights)",
                    ((cnn_proba + votes) / 2)[tested].argmax(1)))
    if X is not None:
        methods.append(("simple peer: gradient boosting on RR + signal statistics (bench_peer.py)", rr[tested]))
    methods.append((f"ecgpipe best row: {report['classifier']}", best[tested]))
    scores = {name: f1_nao(yt, pred, labels) for name, pred in methods}
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n{tested.sum()} records, {len(folds)} of {len(np.unique(fold))} folds of {args.protocol} (the run's own); "
          f"classes {classes}; 1-D CNN: {n_params} parameters, {args.epochs} epochs, {args.crop_s:g}-s crops at "
          f"{args.fs:g} Hz, {train_s:.0f} s of training on {args.device}\n")
    print(f"| method (same records, same folds) | F1_NAO | {' | '.join(f'F1 {c}' for c in classes)} |")
    print("|---|---:|" + "---:|" * len(classes))
    for name, (total, per) in scores.items():
        print(f"| {name} | {total:.3f} | {' | '.join(f'{v:.3f}' for v in per)} |")
    others = [(row["classifier"], row["protocols"][args.protocol]["record_macro_f1"]) for row in report["comparison"]
              if not row["best"] and "record_macro_f1" in row["protocols"].get(args.protocol, {})]
    if others and len(folds) == len(np.unique(fold)):  # the best row was chosen on these folds: the others too
        print("\necgpipe's other rows on the same folds (the best was chosen among them, on these folds):")
        for name, value in others:
            print(f"| ecgpipe row: {name} | {value:.3f} |")
    diffs = {}
    for name, pred in methods[:-1]:  # ecgpipe's best row against each of the others
        ci = paired_bootstrap(yt, best[tested], pred, labels)
        diffs[name] = {"difference": round(scores[methods[-1][0]][0] - scores[name][0], 4),
                       "ci95": [round(v, 4) for v in ci]}
        print(f"\necgpipe best row - {name}: {diffs[name]['difference']:+.3f} "
              f"(95 % paired bootstrap over records {ci[0]:+.3f} to {ci[1]:+.3f})")
    print(json.dumps({
        "bench": "cnn1d_peer", "run": str(run), "protocol": args.protocol, "records": int(tested.sum()),
        "folds": [int(f) for f in folds], "classes": classes,
        "f1_nao": {name: round(total, 4) for name, (total, _) in scores.items()},
        "f1_per_class": {name: dict(zip(classes, (round(v, 4) for v in per))) for name, (_, per) in scores.items()},
        "ecgpipe_other_rows": {name: round(v, 4) for name, v in others},
        "ecgpipe_minus": diffs, "cnn1d": {"parameters": n_params, "epochs": args.epochs, "width": args.width,
                                          "crop_s": args.crop_s, "fs": args.fs, "device": args.device,
                                          "threads": args.threads, "per_fold": per_fold},
        "load_s": round(load_s, 1), "train_s": round(train_s, 1)}))


if __name__ == "__main__":
    main()
