"""`ecgpipe predict` on subjects the model never saw: train without them, predict their records, compare with the
reference rhythm annotations (per second and per episode).

    python tests/benchmarks/bench_predict.py --from-run runs/levers/sweep --holdout mitdb/219 vfdb/418 --out runs/heldout

The training run is the best row of an earlier sweep run (``--from-run``; its report names the row) on the same
config with the held-out records removed from the databases, and every other record of their patients
(the config's subject rule: ``--holdout mitdb/201`` leaves 202 out too). The earlier run's folder is copied first, so the
incremental machinery recomputes only what the removal changes. Prints the agreement and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _run import run_in_subprocess  # noqa: E402

from ecgpipe.config import config_from_dict, merge_overrides  # noqa: E402
from ecgpipe.databases import subject_id  # noqa: E402
from ecgpipe.records import list_records  # noqa: E402


def best_row_overrides(report: dict) -> dict:
    """Config overrides that keep only the best row of a sweep run (its extractor and its classifier)."""
    cfg = config_from_dict(report["config"])
    best = next(r for r in report["comparison"] if r["best"])
    for features, override in zip(cfg.feature_variants, cfg.sweep.features or [{}]):
        for clf in cfg.classifiers:
            layer_ok = best["layer"] == "-" or (features.layer or best["layer"]) == best["layer"]
            # rows are labelled with what their rhythm block holds ("+RR+irr+wave(w=0.7) ...")
            if clf.describe(cfg.rhythm_block) == best["classifier"] and layer_ok:
                return {"sweep": {"features": [override], "classifiers": [clf.model_dump(mode="json")]}}
    raise SystemExit(f"best row {best['classifier']!r} not found in the run's config")


def patients_held_out(cfg, holdout: list[str], data_dir: Path) -> tuple[dict[str, list[str]], set[str]]:
    """The records each database keeps for training and every record held out (``<db>/<record>``): each given record
    and every other record of its patient, by the database's subject rule and known facts (mitdb 202 is 201's
    patient): a held-out patient is new, not only a held-out record."""
    kept: dict[str, list[str]] = {}
    held: set[str] = set()
    for item in holdout:
        db, rec = item.split("/")
        settings = cfg.database(db)
        records = kept.get(db) or settings.records or list_records(data_dir / db)
        rule = (settings.same_subject, settings.subject, settings.subject_pattern)
        patient = [r for r in records if subject_id(db, r, *rule) == subject_id(db, rec, *rule)]
        held |= {f"{db}/{r}" for r in patient}
        kept[db] = [r for r in records if r not in patient]
    return kept, held


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from-run", required=True, help="output folder of a sweep run (report.json)")
    ap.add_argument("--holdout", nargs="+", required=True, help="records to leave out, as <db>/<record>")
    ap.add_argument("--data-dir", default="../shared/data/physionet")
    ap.add_argument("--out", default="runs/heldout")
    args = ap.parse_args()
    src, out = Path(args.from_run), Path(args.out)
    report = json.loads((src / "report.json").read_text())
    overrides = best_row_overrides(report)
    kept, held = patients_held_out(config_from_dict(report["config"]), args.holdout, Path(args.data_dir))
    overrides["databases"] = {db: {"records": records} for db, records in kept.items()}
    train = out / "train"
    if not train.exists():
        shutil.copytree(src, train, ignore=shutil.ignore_patterns(".dask"))
    cfg = config_from_dict(merge_overrides(report["config"], overrides))
    train_s = run_in_subprocess(cfg, args.data_dir, train, out / "heldout.json", out / "train.log")
    trained = json.loads((train / "report.json").read_text())
    leaked = held & set(trained["provenance"]["record_keys"])
    if leaked:
        raise SystemExit(f"records of held-out patients {sorted(leaked)} were used in training")
    records = [str(Path(args.data_dir) / h) for h in args.holdout]
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ecgpipe.cli", "predict", "--model", str(train / "model.skops"), *records,
         "--out", str(out / "predict"), "--compare", "atr"],
        capture_output=True, text=True,
    )
    predict_s = time.perf_counter() - t
    print(proc.stdout + proc.stderr)
    agreement = json.loads((out / "predict" / "agreement.json").read_text())
    print(f"model: {trained['classifier']} on {trained['backbone']} / {trained['layer']}; trained on "
          f"{trained['n_segments']} segments of {trained['n_subjects']} subjects in {train_s:.0f} s; predict {predict_s:.0f} s")
    print("| record | seconds scored | per-second agreement | per class (seconds: agreement) | reference episodes recovered |")
    print("|---|---:|---:|---|---:|")
    for rec, a in agreement.items():
        per_class = ", ".join(f"{c} ({m['seconds']} s): {m['agreement']:.3f}" for c, m in a["per_class"].items())
        print(f"| {rec} | {a['seconds_scored']} | {a['per_second_agreement']:.3f} | {per_class} | "
              f"{a['episodes_recovered']}/{a['reference_episodes']} |")
    print(json.dumps({"train_s": round(train_s, 1), "predict_s": round(predict_s, 1), "agreement": agreement}))


if __name__ == "__main__":
    main()
