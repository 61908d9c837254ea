"""What planning a run spends keying its records: hashing every input file against digests kept beside the results.

    python tests/benchmarks/bench_input_digests.py --data-dir ../shared/data/physionet [--config cinc2017 paper4]

For each config, plans its records (``segments.plan_records``: labels, subjects, headers, content keys) with every
input file hashed (``keys.file_digest``, as every run did before 0.7.0, twice: preflight and the flow's plan) and with
the digests kept in an output folder by an earlier plan (``input_digests.InputDigests``: a file is read only when its
stamp changed), alternating, in one process. Both must give the same keys. Before every pass the input files are
evicted from the page cache (``posix_fadvise(DONTNEED)``, no root needed) so that hashing reads them from disk, as
a rerun a day later or on a network file system does; ``--warm`` leaves them cached, which favours hashing. Prints a
table and, last, one JSON line per config.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ecgpipe.config import load_config  # noqa: E402
from ecgpipe.input_digests import InputDigests  # noqa: E402
from ecgpipe.keys import file_digest, record_files  # noqa: E402
from ecgpipe.stages.segments import plan_records  # noqa: E402


def evict(units) -> None:
    """Drop the records' files from the page cache (clean pages only: nothing is written)."""
    for u in units:
        for p in record_files(u.db_dir, u.record, "atr"):
            if p.is_file():
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def corpus_bytes(units) -> int:
    return sum(p.stat().st_size for u in units for p in record_files(u.db_dir, u.record, "atr") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/physionet")
    ap.add_argument("--config", nargs="+", default=["cinc2017", "paper4"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warm", action="store_true", help="leave the input files in the page cache")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = []
    for name in args.config:
        cfg = load_config(name)
        with tempfile.TemporaryDirectory() as out:
            first = InputDigests(out)
            units = plan_records(cfg, args.data_dir, download=False, digest_of=first)
            first.save()
            times: dict[str, list[float]] = {"hash": [], "kept": []}
            for _ in range(args.repeats):
                for mode in ("hash", "kept"):
                    digests = InputDigests(out) if mode == "kept" else file_digest
                    if not args.warm:
                        evict(units)
                    t = time.perf_counter()
                    planned = plan_records(cfg, args.data_dir, download=False, digest_of=digests)
                    times[mode].append(time.perf_counter() - t)
                    if [u.key for u in planned] != [u.key for u in units]:
                        sys.exit(f"{name}: the keys differ with {mode}")
                    if mode == "kept" and digests.hashed:
                        sys.exit(f"{name}: {digests.hashed} records read again with nothing changed")
        best = {mode: min(ts) for mode, ts in times.items()}
        size = corpus_bytes(units)
        print(f"{name}: {len(units)} records, {size / 1e6:.0f} MB of input files")
        for mode in ("hash", "kept"):
            print(f"  {mode:5s} {best[mode]:8.2f} s (best of {args.repeats})")
        lines.append(json.dumps({"bench": "input_digests", "config": name, "commit": commit, "records": len(units), "page_cache": "warm" if args.warm else "evicted",
                                 "input_mb": round(size / 1e6, 1), "plan_hash_s": round(best["hash"], 3),
                                 "plan_kept_s": round(best["kept"], 3), "ratio": round(best["kept"] / best["hash"], 3)}))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
