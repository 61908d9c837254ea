"""What each accuracy lever buys on the paper4 data, under the paper's protocol and grouped by subject.

    python tests/benchmarks/bench_levers.py --data-dir ../shared/data/physionet --out runs/levers [--only sweep]

Every lever is a real `ecgpipe run` (the CLI in a subprocess) into OUT/<lever>/; levers that change the segments or
the spectrograms are runs of their own, levers that change the layer, the classifier or add RR-interval features are
rows of one sweep run (they share the segment and spectrogram stages). Prints one Markdown table (also written to
OUT/levers.md) and, last, one JSON line. Reruns reuse everything already computed (incremental runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _run import run_in_subprocess  # noqa: E402

from ecgpipe.config import load_config  # noqa: E402

# a smaller sweep for the levers that need runs of their own: the baseline row and the best kind of row
SHORT_SWEEP = {
    "features": [{}],
    "classifiers": [
        {"kind": "svc", "C": 10.0, "pca": 128},
        {"kind": "svc", "inputs": "cnn+rhythm", "rhythm_weight": 0.5, "pca": 128, "tune": True, "C_grid": [1.0, 10.0, 100.0]},
    ],
}

# the short sweep plus the fused row with the rhythm block at weight 0.7 (for levers that add rhythm columns)
WEIGHTS_SWEEP = {**SHORT_SWEEP, "classifiers": [*SHORT_SWEEP["classifiers"], {**SHORT_SWEEP["classifiers"][1], "rhythm_weight": 0.7}]}

LEVERS = {
    # name: (what changes, config overrides of the paper4-sweep preset)
    "sweep": ("2-s windows, 0-50 Hz STFT 64/56; layers x classifiers x RR features", {}),
    "window-5s": ("5-s windows (fewer, longer segments)", {"segments": {"length_s": 5.0, "stride_s": 5.0}, "sweep": SHORT_SWEEP}),
    "spectrogram-0-25hz": (
        "0-25 Hz, 0.512-s STFT window (nperseg 128, hop 16, nfft 512): finer frequency detail where ECG energy is",
        {"spectrogram": {"nperseg": 128, "noverlap": 112, "nfft": 512, "fmax": 25.0}, "sweep": SHORT_SWEEP},
    ),
    "two-leads": (
        "both leads of every record as image channels (red: MLII or lead 0, green: the other lead, blue: their mean)",
        {"segments": {"n_leads": 2}, "sweep": SHORT_SWEEP},
    ),
    "waveform": (
        "waveform descriptors of ventricular arrhythmias (ecgpipe/waveform.py) join the RR features in the rhythm block",
        {"rhythm": {"waveform": True}, "sweep": SHORT_SWEEP},
    ),
    "two-leads-waveform": (
        "both leads as image channels, and waveform descriptors with the RR features (rhythm block weight 0.5 and 0.7)",
        {"segments": {"n_leads": 2}, "rhythm": {"waveform": True}, "sweep": WEIGHTS_SWEEP},
    ),
    "window-5s-two-leads-waveform": (
        "5-s windows, both leads as image channels, waveform descriptors with the RR features (the paper-protocol push)",
        {"segments": {"length_s": 5.0, "stride_s": 5.0, "n_leads": 2}, "rhythm": {"waveform": True}, "sweep": WEIGHTS_SWEEP},
    ),
    "irregularity": (
        "RR-irregularity features (ecgpipe/rhythm.py IRREGULARITY_FEATURES: AF's patternless irregularity vs ectopy's "
        "motifs) join the RR features",
        {"rhythm": {"irregularity": True},
         "sweep": {**SHORT_SWEEP, "classifiers": [*SHORT_SWEEP["classifiers"], {"kind": "svc", "inputs": "rhythm", "C": 10.0}]}},
    ),
    "backbone-init": (
        "the same backbone with untrained (seeded random) weights next to its ImageNet weights: what transfer buys",
        {"sweep": {**SHORT_SWEEP, "features": [{}, {"weights": "random"}]}},
    ),
    "linear-power": ("spectrogram scaling 'linear' instead of log", {"spectrogram": {"scaling": "linear"}, "sweep": SHORT_SWEEP}),
}


def run_lever(name: str, overrides: dict, data_dir: str, out: Path) -> tuple[dict, float]:
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config("paper4-sweep", overrides)
    wall = run_in_subprocess(cfg, data_dir, out / name, out / f"{name}.json", out / f"{name}.log")
    return json.loads((out / name / "report.json").read_text()), wall


def table(results: dict) -> str:
    lines = [
        "| lever | backbone | layer | classifier | paper protocol acc | paper macro-F1 | grouped acc | grouped macro-F1 | LODO macro-F1 | segments |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (report, _) in results.items():
        for row in report["comparison"]:
            p = row["protocols"]
            s, g, lodo = p.get("stratified_10fold"), p.get("grouped_by_subject"), p.get("leave_one_database_out")
            cells = [
                name, row["backbone"], str(row["layer"]), row["classifier"],
                f"{s['accuracy']:.3f}" if s else "-", f"{s['macro_f1']:.3f}" if s else "-",
                f"{g['accuracy']:.3f}" if g else "-", f"{g['macro_f1']:.3f}" if g else "-",
                f"{lodo['macro_f1']:.3f}" if lodo else "-", str(report["n_segments"]),
            ]
            lines.append("| " + " | ".join(f"**{c}**" if row["best"] else c for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/physionet")
    ap.add_argument("--out", default="runs/levers")
    ap.add_argument("--only", nargs="*", default=None, help=f"some of: {', '.join(LEVERS)}")
    args = ap.parse_args()
    out = Path(args.out)
    results = {}
    for name, (what, overrides) in LEVERS.items():
        if args.only and name not in args.only:
            continue
        print(f"{name}: {what} ...", flush=True)
        results[name] = run_lever(name, overrides, args.data_dir, out)
        print(f"  {results[name][1]:.0f} s", flush=True)
    text = table(results)
    (out / "levers.md").write_text(text + "\n")
    print(text)
    summary = {name: {"wall_s": round(wall, 1), "rows": report["comparison"]} for name, (report, wall) in results.items()}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
