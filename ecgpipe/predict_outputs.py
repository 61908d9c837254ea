"""Where ``ecgpipe predict`` writes, and what it never writes over: a record's own files, reference annotations
beside a record, and files of an ``--out`` folder that no earlier prediction wrote (a study's own records.csv)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

from ecgpipe.environment import numeric_differences
from ecgpipe.errors import EcgpipeError
from ecgpipe.location import write_file
from ecgpipe.predict import record_stem


class UnsafeOutput(EcgpipeError):
    """An output would overwrite one of the user's input files."""


# extensions of a record's own files: never written by predict
RECORD_EXTENSIONS = {"hea", "dat", "mat", "edf"}
# what predict writes into --out beside the annotations; model.json says the folder is an earlier prediction's
AGREEMENT_PARTIAL = "agreement.partial.jsonl"  # each record's agreement as it is done, until agreement.json is written
OUTPUT_NAMES = "outputs.csv"  # each record (as given) and its annotation file: what a resumed prediction matches
SUMMARY_FILES = ("episodes.csv", "records.csv", "endpoints.csv", "agreement.json", AGREEMENT_PARTIAL, OUTPUT_NAMES, "model.json")
WRITTEN_BY = "ecgpipe predict"


def check_out_folder(out: Path, annotations: list[Path]) -> None:
    """Refuse to write over files of ``out`` that no earlier ``ecgpipe predict`` wrote: a study's own records.csv
    (``--out`` given as the records' folder) is an input, whatever its name. An earlier prediction's folder (its
    model.json) is written over, as a rerun expects."""
    if earlier_prediction(out):
        return
    for target in [out / name for name in SUMMARY_FILES] + annotations:
        if target.exists():
            raise UnsafeOutput(f"{target}: refusing to write over a file that ecgpipe predict did not write (--out "
                               f"{out} holds no earlier prediction's model.json): choose a new or empty --out folder")


def earlier_prediction(out: Path) -> bool:
    """Whether ``out`` holds the model.json of an earlier ``ecgpipe predict`` (those before 0.8.0 have no
    ``written_by``: a model path, its sha256 and whether it was signed)."""
    try:
        doc = json.loads((out / "model.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and (doc.get("written_by") == WRITTEN_BY or {"model", "sha256", "signed"} == set(doc))


def check_output_is_safe(record: str, target: Path, reserved_extensions: set[str]) -> None:
    """Refuse an annotation output that is an input: a record file's extension, an existing file in the record's own
    folder, or a reference annotation's extension (``atr``) written into that folder."""
    extension = target.suffix.lstrip(".")
    same_folder = target.parent.resolve() == Path(record).parent.resolve()
    if extension in RECORD_EXTENSIONS:  # whether or not this record has such a file, another may (a .dat beside a .mat)
        raise UnsafeOutput(f"--extension {extension}: the extension of a record's own files ({', '.join(sorted(RECORD_EXTENSIONS))}); "
                           "predictions are never written under it (choose another --extension)")
    if same_folder and (target.exists() or extension in reserved_extensions):
        what = "an existing file" if target.exists() else f"the reference annotations' extension ({extension})"
        raise UnsafeOutput(f"{target}: refusing to write predictions over {what} in the folder of record {record}, "
                           f"an input (choose another --out folder or --extension)")


def annotation_name(path: str) -> str:
    """A record's name as WFDB can write an annotation file under it (``wfdb.wrann`` refuses other characters)."""
    return re.sub(r"[^-\w]", "_", os.path.basename(record_stem(path)))


def output_names(paths: list[str]) -> dict[str, str]:
    """The output name of each record (``<record>`` when its name is unique among ``paths``, else
    ``<its folder>/<record>``, numbered if even that repeats), so no two records share an output file. A name WFDB
    cannot write (an EDF file's "Patient 01 2024.01.05") has '_' for each character other than letters, digits, '_'
    and '-'."""
    names = {p: annotation_name(p) for p in paths}
    repeated = {n for n, k in Counter(names.values()).items() if k > 1}  # counted once: 300 000 records are common
    for p in paths:
        if names[p] in repeated:
            names[p] = f"{os.path.basename(os.path.dirname(os.path.abspath(p)))}/{annotation_name(p)}"
    live = Counter(names.values())  # how many records hold each name now, kept up to date as names change
    taken: dict[str, int] = {}
    for p in paths:
        n = names[p]
        taken[n] = taken.get(n, 0) + 1
        if live[n] > 1:
            names[p] = f"{taken[n]}-{n}"
            live[n] -= 1
            live[names[p]] += 1
    return names


def write_model_note(out: Path, model, options: dict | None = None) -> None:
    """``out/model.json`` (``out`` made if need be): the model a prediction used (its path, digest, signature), the
    options it ran with (what ``--resume`` must match), and that predict wrote here."""
    out.mkdir(parents=True, exist_ok=True)
    doc = {"model": model.path, "sha256": model.digest, "signed": model.signed, "written_by": WRITTEN_BY,
           # the numeric libraries that differ from the model's training (ecgpipe.environment): outputs may move
           "software_differences": numeric_differences(getattr(model, "environment", None))}
    write_file(out / "model.json", json.dumps({**doc, "options": options} if options is not None else doc, indent=2))
