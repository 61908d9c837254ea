"""``ecgpipe status``: per stage, how many units are done, stale, failed or missing, and what a rerun would compute.

It walks the same :class:`ecgpipe.plan.RunPlan` as a run, never creates a folder and never downloads. It writes
one thing: into an earlier run's folder, the input digests it computed (``_keep_digests``).
"""

from __future__ import annotations

import json
from pathlib import Path

from ecgpipe.config import PipelineConfig
from ecgpipe.errors import PipelineError, UnreadableFile
from ecgpipe.input_digests import CACHE
from ecgpipe.location import Location
from ecgpipe.lock import RunLock
from ecgpipe.plan import OPTIONAL_STAGES, STAGES, RunPlan, chunk_unit
from ecgpipe.stages import classification, recording_grid, recording_scores, segments, table


def last_run(out: Location) -> dict:
    """The last run's ``run.json`` ({} when there is none); a corrupt one is an error naming it."""
    where = out.child("run.json")
    fix = "delete it to see the status without the last run's failures (the next `ecgpipe run` writes a new one)"
    try:
        last = json.loads(out.read_text("run.json") or "{}")
    except ValueError as err:  # not JSON, or not text at all (UnicodeDecodeError)
        raise UnreadableFile(f"{where}: the last run's record is not valid JSON ({err}); {fix}") from None
    if not isinstance(last, dict) or not isinstance(last.get("failed", []), list):
        raise UnreadableFile(f"{where}: not a run record (a JSON object with a 'failed' list); {fix}")
    return last


def _waiting(rerun_computes: str) -> dict:
    """A stage that cannot be counted before the stages it is planned from are done."""
    return {"done": 0, "stale": 0, "failed": 0, "missing": None, "total": None, "rerun_computes": rerun_computes}


def _marker_units(out: Location, stage: str) -> list[str]:
    """The units of ``stage`` that have a marker, whatever its key (listed here, not in ``Location`` or ``Markers``:
    the stages import those, and a change to them would recompute every stage of every run)."""
    try:
        names = out.fs.ls(f"{out.root}/markers/{stage}", detail=False)
    except FileNotFoundError:
        return []
    return sorted(n.rsplit("/", 1)[-1][:-len(".json")] for n in names if n.endswith(".json"))


def _earlier_units(out: Location, markers, stage: str, rows: list, done: set[str] = frozenset()) -> dict[str, str]:
    """Per row (by unit): the marker an earlier run wrote for it under another key, else the row's own unit. A row's
    marker is named by its key, so a row whose settings or code changed has no marker of its own; an earlier marker
    of the same extractor (the unit's prefix) makes it stale rather than missing when the extractor has this one row,
    or, in a sweep, when that marker has the row's label (the code changed, not the settings the label names).
    Rows in ``done`` are their own unit: earlier markers are read only for the others (each holds every record's
    out-of-fold predictions, megabytes at 10^4 records, and they pile up over code changes)."""
    earlier = {row.unit: row.unit for row in rows}
    todo = [row for row in rows if row.unit not in done]
    units = _marker_units(out, stage) if todo else []
    for row in todo:
        prefix = row.unit.rsplit("__", 1)[0] + "__"
        alone = sum(r.unit.startswith(prefix) for r in rows) == 1
        for unit in units:
            if unit == row.unit or not unit.startswith(prefix):
                continue
            marker = markers.read(stage, unit) or {}
            label = marker.get("label") or (marker.get("result") or {}).get("classifier")
            if alone or label == row.label:
                earlier[row.unit] = unit
                break
    return earlier


def _keep_digests(plan: RunPlan) -> str | None:
    """Write the input digests this status computed into an earlier run's folder: the run after it then reads only
    the records changed since (before 0.20.0 a status before a rerun read every new or changed record, and the run
    read them again: twice over the corpus for a first look at new data). Not into a folder no run has used (status
    creates nothing there), nor while a run holds it (``InputDigests.save_unless_a_run_holds``: no lock is taken).
    Returns what to tell (None when nothing was written)."""
    new = plan.inputs.new
    if not plan.inputs.save_unless_a_run_holds():
        return None
    return f"the input digests of the {new} record(s) read here are kept ({plan.out.child(CACHE)}): the next run reads only records changed since"


def run_status(cfg: PipelineConfig, data_dir: str | Path | None, out_dir: str) -> dict:
    """Per stage: units done / stale / failed / missing, and what a rerun would compute. Runs nothing, and writes
    only the input digests it computed, into an earlier run's folder (``_keep_digests``)."""
    out = Location(out_dir)
    last = last_run(out)
    plan = RunPlan.create(cfg, data_dir, out, download=False)
    markers = plan.markers
    failed_units = {f["unit"] for f in last.get("failed", [])}

    def tally(units):  # units: (name shown, marker stage, marker unit, done?)
        counts = {"done": 0, "stale": 0, "failed": 0, "missing": 0}
        todo = []
        for shown, mstage, munit, done in units:
            if done:
                counts["done"] += 1
                continue
            todo.append(shown)
            if shown in failed_units:
                counts["failed"] += 1
            elif markers.read(mstage, munit) is not None:
                counts["stale"] += 1
            else:
                counts["missing"] += 1
        return {**counts, "total": len(units), "rerun_computes": len(todo), "to_compute": todo[:50]}

    status: dict = {"out": out.url, "last_run": {k: last.get(k) for k in ("status", "wall_s")}, "stages": {}}
    lock = RunLock(out.local_root) if out.local_root else None
    holder = lock.holder() if lock is not None else None  # read once: the run may end while status looks
    if holder is not None:
        # a lock left behind (its process gone) means the run was killed, not stopped
        status["running" if lock.holder_running(holder) else "unfinished"] = holder
    if plan.inputs.new and out.exists(CACHE.split("/")[0]):
        status["input_digests_kept"] = _keep_digests(plan)
    summaries = plan.record_summaries()
    status["stages"][segments.STAGE] = tally(
        [(u.shown, segments.STAGE, u.name, summaries[u.name] is not None) for u in plan.records])
    # downstream is planned from the records whose windows are current (a stale rhythm block changes no window)
    records = [s for s in plan.windows_summaries(known=summaries).values() if s is not None]
    if not records or not out.exists("store.zarr"):
        stale = status["stages"][segments.STAGE]["stale"]  # records computed before, under other settings or code
        status["note"] = (f"every record done earlier is stale ({stale} of {len(plan.records)}: the settings or the code "
                          "changed): a rerun recomputes everything" if stale and out.exists("store.zarr")
                          else "nothing computed yet")
        for stage in [s for s in STAGES[1:] if cfg.recordings.score or s not in OPTIONAL_STAGES]:
            status["stages"][stage] = _waiting("all")
        return status
    if len(records) < len(plan.records):
        status["note"] = "records will be (re)computed first; downstream counts are against the table of the records done now"
    try:
        segment_table = plan.table(records)
    except PipelineError as err:  # e.g. a class no record has: the records done are still worth showing
        if len(records) < len(plan.records):  # records still to read (a run under way, or one stopped early) may hold it
            status["note"] = (f"the records read so far ({len(records)} of {len(plan.records)}) do not yet give every "
                              f"class: the rest are read first, then the rest is planned ({err})")
            waiting = "after the records"
        else:
            status["note"], waiting = f"nothing after the records can be planned: {err}", "after the fix"
        for stage in [s for s in STAGES[1:] if cfg.recordings.score or s not in OPTIONAL_STAGES]:
            status["stages"][stage] = _waiting(waiting)
        return status
    status["stages"][table.STAGE] = tally([(table.UNIT, table.STAGE, table.UNIT, plan.table_done(segment_table))])
    n = len(segment_table)

    def chunk_rows(array, keys):
        return [(f"{array}/{chunk_unit(i)}", array, chunk_unit(i), plan.chunk_done(array, i, key, n)) for i, key in enumerate(keys)]

    spec_keys = plan.spectrogram_keys(segment_table)
    extractors = plan.feature_arrays(spec_keys)
    if plan.needs_cnn:
        status["stages"]["spectrograms"] = tally(chunk_rows(plan.spectrogram_array, spec_keys))
        status["stages"]["features"] = tally([u for e in extractors for u in chunk_rows(e.array, e.keys)])
    else:  # every classifier reads the rhythm block only: nothing to compute, nothing missing
        status["stages"]["spectrograms"] = status["stages"]["features"] = tally([])
    rows = plan.rows(extractors, segment_table.key)
    stored = {r.unit: plan.row_done(r) for r in rows}
    earlier = _earlier_units(out, markers, classification.STAGE, rows, {u for u, p in stored.items() if p is not None})
    status["stages"]["classify"] = tally([(r.unit, "classify", earlier[r.unit], stored[r.unit] is not None) for r in rows])
    if cfg.recordings.score:  # planned from the best row: known when there is one row, or once every row is scored
        if len(rows) > 1 and any(v is None for v in stored.values()):
            for stage in (recording_grid.STAGE, recording_scores.STAGE):
                status["stages"][stage] = _waiting("after classify")
            return status
        for r in rows:
            r.protocols = stored[r.unit]
        best = rows[0] if len(rows) == 1 else rows[classification.best_row(rows, cfg.selection_protocol)]
        grids = plan.recording_grids(best, records)
        done = plan.grids_done(grids)
        status["stages"][recording_grid.STAGE] = tally([(g.shown, recording_grid.STAGE, g.name, done[g.name]) for g in grids])
        scored = plan.recording_scores_done(best, grids) is not None
        earlier = _earlier_units(out, markers, recording_scores.STAGE, [best], {best.unit} if scored else set())
        status["stages"][recording_scores.STAGE] = tally([(best.unit, recording_scores.STAGE, earlier[best.unit], scored)])
    return status
