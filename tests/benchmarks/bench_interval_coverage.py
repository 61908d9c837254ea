"""How often the reports' 95 % intervals of an endpoint's sensitivity hold the true rate, by the number of patients
that hold its positives.

    python tests/benchmarks/bench_interval_coverage.py [--sims 200] [--boot 500]

An endpoint's sensitivity rests on the few patients who have its rhythm (paper4: AF in 10 patients, VF in 9), each
with their own rate; the report resamples subjects with replacement and takes the percentiles
(``ecgpipe.endpoints.endpoint_result``). With a handful of clusters a percentile bootstrap is known to be too narrow.
This simulates patients like paper4's: K positive patients with 33-318 windows each and a per-patient sensitivity
drawn from a Beta distribution (most near 1, a few poor), 57 negative patients with 2 % false calls; the true rate
is the Beta's mean. For each K it prints the share of simulations whose interval holds the true rate (nominal 0.95)
and the mean width, for the report's percentile interval and, as a candidate, the bias-corrected and accelerated
(BCa) interval over the same draws (jackknife over subjects for the acceleration) and a cluster ratio interval
(linearised variance over the positive patients, Student's t on K - 1 degrees of freedom). Prints a table and, last, one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm, t

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ecgpipe.config import EndpointSettings  # noqa: E402
from ecgpipe.endpoints import endpoint_result  # noqa: E402

CASES = ((5, 4.0, 0.7), (10, 4.0, 0.7), (10, 20.0, 0.4), (20, 4.0, 0.7), (40, 4.0, 0.7))  # K, Beta(a, b)
NAMES = ["normal", "afib"]


def simulated(rng, k: int, a: float, b: float):
    y, pred, groups = [], [], []
    for i in range(k):
        n, p = int(rng.integers(33, 319)), rng.beta(a, b)
        y += [1] * n
        pred += (rng.random(n) < p).astype(int).tolist()
        groups += [f"p{i}"] * n
    for i in range(57):
        n = int(rng.integers(30, 200))
        y += [0] * n
        pred += (rng.random(n) < 0.02).astype(int).tolist()
        groups += [f"n{i}"] * n
    return np.array(y), np.array(pred), np.array(groups)


def bca_sensitivity(y, pred, groups, n_boot: int, seed: int) -> list[float]:
    """BCa interval of the pooled sensitivity, resampling the patients who hold positives (the negatives do not
    enter a sensitivity)."""
    pos = y == 1
    subjects, of = np.unique(groups[pos], return_inverse=True)
    hits = np.bincount(of, weights=pred[pos] == 1, minlength=len(subjects))
    n = np.bincount(of, minlength=len(subjects)).astype(float)
    estimate = hits.sum() / n.sum()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(subjects), (n_boot, len(subjects)))
    draws = hits[picks].sum(1) / n[picks].sum(1)
    z0 = norm.ppf(np.clip((draws < estimate).mean() + 0.5 * (draws == estimate).mean(), 1e-6, 1 - 1e-6))
    jack = np.array([(hits.sum() - hits[i]) / (n.sum() - n[i]) for i in range(len(subjects))])
    d = jack.mean() - jack
    accel = (d**3).sum() / (6 * ((d**2).sum()) ** 1.5) if (d**2).sum() > 0 else 0.0
    z = norm.ppf([0.025, 0.975])
    q = norm.cdf(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    return [float(np.quantile(draws, q[0])), float(np.quantile(draws, q[1]))]


def cluster_t_sensitivity(y, pred, groups) -> list[float]:
    """The pooled sensitivity as a ratio over patients: its linearised variance over the K patients who hold
    positives, with Student's t on K - 1 degrees of freedom (as cluster-randomised trials do), clipped to [0, 1]."""
    pos = y == 1
    subjects, of = np.unique(groups[pos], return_inverse=True)
    hits = np.bincount(of, weights=pred[pos] == 1, minlength=len(subjects))
    n = np.bincount(of, minlength=len(subjects)).astype(float)
    k, ratio = len(subjects), hits.sum() / n.sum()
    se = np.sqrt(k / (k - 1) * ((hits - ratio * n) ** 2).sum()) / n.sum()
    half = t.ppf(0.975, k - 1) * se
    return [max(0.0, ratio - half), min(1.0, ratio + half)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sims", type=int, default=200)
    ap.add_argument("--boot", type=int, default=500)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    endpoint = EndpointSettings(classes=["afib"])
    rows = []
    print("| positive patients | per-patient sensitivity | true rate | percentile (report): coverage, mean width | BCa | "
          "cluster ratio, t on K - 1 |")
    print("|---:|---|---:|---:|---:|---:|")
    for k, a, b in CASES:
        true = a / (a + b)
        held = {"percentile": [], "bca": [], "cluster_t": []}
        width = {"percentile": [], "bca": [], "cluster_t": []}
        for s in range(args.sims):
            y, pred, groups = simulated(rng, k, a, b)
            for method, (lo, hi) in (("percentile", endpoint_result(y, pred, groups, NAMES, endpoint, n_boot=args.boot,
                                                                     seed=s).ci95["sensitivity"]),
                                     ("bca", bca_sensitivity(y, pred, groups, args.boot, s)),
                                     ("cluster_t", cluster_t_sensitivity(y, pred, groups))):
                held[method].append(lo <= true <= hi)
                width[method].append(hi - lo)
        row = {"positive_subjects": k, "beta": [a, b], "true": round(true, 4),
               **{m: {"coverage": round(float(np.mean(held[m])), 3), "width": round(float(np.mean(width[m])), 4)} for m in held}}
        rows.append(row)
        print(f"| {k} | Beta({a:g}, {b:g}) | {true:.3f} | {row['percentile']['coverage']:.3f}, {row['percentile']['width']:.3f} "
              f"| {row['bca']['coverage']:.3f}, {row['bca']['width']:.3f} "
              f"| {row['cluster_t']['coverage']:.3f}, {row['cluster_t']['width']:.3f} |", flush=True)
    print(json.dumps({"benchmark": "interval_coverage", "sims": args.sims, "boot": args.boot, "rows": rows,
                      "wall_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
