"""Which parts of the rhythm block carry CinC 2017's classes? Record-level levers, measured by cross-validation.

    python tests/benchmarks/bench_record_features.py --data-dir ../shared/data/physionet [--max-records N] [--seeds 0 1]

Every labelled record (N, A, O; ``~`` left out, as the cinc2017 preset does) becomes one row: ecgpipe's own rhythm
block functions (``ecgpipe.rhythm``, ``ecgpipe.beats``, ``ecgpipe.beat_detail``, ``ecgpipe.waveform``) over the whole record, which is what the
preset computes with its 60-s context. Gradient-boosted trees (the preset's ``kind = "hgb"`` settings, balanced) are
scored by stratified 5-fold CV over records for each block set, with a few CV seeds, on F1_NAO (the challenge's mean
of the N, A and O F1). No CNN: this isolates what the beat-level, beat-detail and waveform features add to the RR statistics.
Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import wfdb
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ecgpipe.beat_detail import BEAT_DETAIL_FEATURES, beat_detail_features  # noqa: E402
from ecgpipe.beats import BEAT_FEATURES, beat_features  # noqa: E402
from ecgpipe.classify import build_classifier  # noqa: E402
from ecgpipe.config import ClassifierSettings  # noqa: E402
from ecgpipe.rhythm import IRREGULARITY_FEATURES, RHYTHM_FEATURES, beat_times, irregularity_features, rr_features  # noqa: E402
from ecgpipe.waveform import WAVEFORM_FEATURES, bandpass, waveform_features  # noqa: E402

BLOCKS = {"RR": len(RHYTHM_FEATURES), "irr": len(IRREGULARITY_FEATURES), "beat": len(BEAT_FEATURES),
          "detail": len(BEAT_DETAIL_FEATURES), "wave": len(WAVEFORM_FEATURES)}
LEVERS = ["RR", "RR+irr", "RR+irr+beat", "RR+irr+wave", "RR+irr+beat+wave", "RR+irr+beat+detail", "RR+irr+beat+detail+wave"]


def record_row(path: str) -> np.ndarray:
    rec = wfdb.rdrecord(path)
    x, fs = np.nan_to_num(rec.p_signal[:, 0].astype(np.float64)), float(rec.fs)
    beats, length, start = beat_times(x, fs), len(x) / fs, np.array([0.0])
    filtered = bandpass(x, fs)
    return np.hstack([rr_features(beats, start, length, length)[0], irregularity_features(beats, start, length, length)[0],
                      beat_features(x, filtered, fs, beats, start, length, length)[0],
                      beat_detail_features(filtered, fs, beats, start, length, length)[0],
                      waveform_features(filtered, fs, start, length, length)[0]])


def columns(lever: str) -> np.ndarray:
    offsets = np.cumsum([0, *BLOCKS.values()])
    spans = dict(zip(BLOCKS, zip(offsets[:-1], offsets[1:])))
    return np.concatenate([np.arange(*spans[b]) for b in lever.split("+")])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--max-records", type=int, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    folder = Path(args.data_dir) / "cinc2017"
    labels = dict(line.split(",") for line in (folder / "REFERENCE-v3.csv").read_text().split())
    names = [n for n in (folder / "RECORDS").read_text().split() if labels[n] in "NAO"][: args.max_records]
    y = np.array(["NAO".index(labels[n]) for n in names])
    t = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        X = np.array(list(pool.map(record_row, [str(folder / n) for n in names], chunksize=32)))
    feature_s = time.perf_counter() - t
    hgb = ClassifierSettings(kind="hgb", inputs="rhythm", class_weight="balanced")
    results = {}
    print(f"{len(y)} records (N {np.sum(y == 0)}, A {np.sum(y == 1)}, O {np.sum(y == 2)}); features {feature_s:.0f} s\n")
    print("| rhythm block | columns | F1_NAO (mean over seeds) | F1 N | F1 A | F1 O |\n|---|---:|---:|---:|---:|---:|")
    for lever in LEVERS:
        cols, per_seed = columns(lever), []
        for seed in args.seeds:
            pred = np.zeros_like(y)
            for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y):
                pred[test] = build_classifier(hgb).fit(X[train][:, cols], y[train]).predict(X[test][:, cols])
            per_seed.append(f1_score(y, pred, labels=[0, 1, 2], average=None))
        per_class = np.mean(per_seed, axis=0)
        results[lever] = {"f1_nao": round(float(per_class.mean()), 4), "per_seed": [round(float(s.mean()), 4) for s in per_seed],
                          "f1": dict(zip("NAO", np.round(per_class, 4).tolist()))}
        print(f"| {lever} | {len(cols)} | {per_class.mean():.3f} ({', '.join(f'{s.mean():.3f}' for s in per_seed)}) | "
              + " | ".join(f"{v:.3f}" for v in per_class) + " |")
    print(json.dumps({"bench": "record_features", "records": int(len(y)), "seeds": args.seeds, "feature_s": round(feature_s, 1),
                      "levers": results}))


if __name__ == "__main__":
    main()
