"""The ecgpipe Prefect flow: records -> segments -> spectrograms -> CNN features -> cross-validated report.

    record_segments      1 task / record   read + validate WFDB, resample, cut windows -> records/<db>/<rec>
          │
    segment table        flow process      stable per-class selection, stable rows      -> segments/*
          │
    spectrogram_chunk    1 task / chunk    STFT log power of chunk_size segments        -> spectrograms/<hash>/data
          │
    feature_chunk        1 task / chunk    224x224, ImageNet norm, backbone, pooled      -> features/<hash>/data
          │
    classify_fold        1 task / fold     both CV protocols, folds in parallel          -> report.json/.md/.png

Tasks run on a Dask cluster through prefect-dask's DaskTaskRunner and pass only store paths and chunk indices.

Incremental by construction: before each stage the flow computes every unit's content key (``ecgpipe/plan.py``) and
submits only units whose completion marker is missing, has another key, or whose stored data no longer matches the
marker's digest. A task writes its marker after its data. Arrays are created and resized here, in the flow process,
before the tasks that fill them start; each task writes only whole chunks it owns (Zarr loses data silently when two
writers share a chunk). Every run writes ``OUT/run.json`` with per-stage counts and the failed units.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field

import dask
import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

import ecgpipe
from ecgpipe import store as zs
from ecgpipe.classify import (
    design_matrix,
    fit_classifier,
    fit_predict,
    inner_groups,
    make_splits,
    record_level_summary,
    summarize_protocol,
)
from ecgpipe.config import ConfigError, PipelineConfig, config_from_dict
from ecgpipe.databases import subject_id
from ecgpipe.dataset import class_caps, record_windows, window_rhythm_features
from ecgpipe.keys import content_key
from ecgpipe.labels import check_record_label, read_record_labels
from ecgpipe.location import Location
from ecgpipe.markers import Markers
from ecgpipe.plan import (
    STAGES,
    RecordUnit,
    array_digest,
    assign_slots,
    chunk_is_done,
    classify_key,
    feature_array_name,
    feature_chunk_keys,
    feature_groups,
    record_unit,
    segment_uid,
    select_stable,
    spectrogram_array_name,
    spectrogram_chunk_keys,
    uid_order_key,
)
from ecgpipe.records import RecordError, read_record
from ecgpipe.report import RANDOM_WEIGHTS_WARNING, write_report
from ecgpipe.sources import database_dir, resolve_data_dir, selected_records
from ecgpipe.spectrogram import spectrogram_chunk, spectrogram_frequencies, spectrogram_shape

PERMANENT_ERRORS = (RecordError, ConfigError, ValueError, FileNotFoundError)


def _retry_transient(task, task_run, state) -> bool:
    """Retry only errors that may pass (I/O hiccups, a lost worker); bad input fails at once."""
    try:
        state.result()
    except PERMANENT_ERRORS:
        return False
    except Exception:
        return True
    return False


# The store's markers are the source of truth for what was computed; Prefect's own result cache is not used.
stage_task = task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_retry_transient)


def _config(config_json: str) -> PipelineConfig:
    return PipelineConfig.model_validate_json(config_json)


def _chunk_unit(i: int) -> str:
    return f"{i:06d}"


FAULT_ENV = "ECGPIPE_INJECT_FAILURE"


def _injected_fault(stage: str, chunk_index: int) -> None:
    """Test hook: ``ECGPIPE_INJECT_FAILURE=spectrograms:2,features:5`` makes those chunks fail like a flaky disk."""
    wanted = {tuple(item.split(":")) for item in os.environ.get(FAULT_ENV, "").split(",") if ":" in item}
    if (stage, str(chunk_index)) in wanted:
        raise OSError(f"injected failure ({FAULT_ENV}) in {stage} chunk {chunk_index}")


def _where() -> str:
    """Address of the Dask worker running this task (recorded in markers: provenance and placement checks)."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "flow-process"


# ---------------------------------------------------------------------------------------------------------- tasks
@stage_task(name="record-segments", task_run_name="segments {unit.database}/{unit.record}")
def record_segments(store: str, out_dir: str, unit: RecordUnit, config_json: str) -> dict:
    """Read and validate one record, cut its labelled windows, store them under records/<db>/<record>."""
    cfg = _config(config_json)
    settings = cfg.database(unit.database)
    if settings.labels_csv:
        check_record_label(os.path.join(unit.db_dir, unit.record), unit.label, settings.labels_csv,
                           set(cfg.label_to_class), set(cfg.segments.exclude_labels))
    rec = read_record(unit.db_dir, unit.database, unit.record, settings, nan_policy=cfg.segments.nan_policy,
                      record_label=unit.label if settings.labels_csv else None, n_leads=cfg.segments.n_leads)
    found = record_windows(rec, cfg)
    rhythm = window_rhythm_features(rec, found.starts, cfg) if cfg.rhythm.enabled else None
    summary = {
        "database": unit.database,
        "record": unit.record,
        "subject": subject_id(unit.database, unit.record, settings.same_subject),
        "lead": "+".join(rec.leads),
        "n_windows": int(len(found.starts)),
        "labels": sorted({ep.label for ep in rec.episodes}),
        "key": unit.key,
        "signal_key": unit.signal_key,
    }
    zs.write_record_windows(
        store,
        unit.database,
        unit.record,
        found.windows,
        found.starts,
        found.episode,
        attrs={
            "episodes": [[ep.label, ep.start, ep.end] for ep in rec.episodes],
            "class_index": found.class_index.tolist(),
            "fs": rec.fs,
            "path": rec.path,
            "n_nan": rec.n_nan,
            **summary,
        },
        rhythm=rhythm,
    )
    Markers(out_dir).write("segments", unit.name, unit.key, {"summary": summary, "digest": array_digest(found.windows), "worker": _where()})
    return summary


@stage_task(name="spectrogram-chunk", task_run_name="spectrograms chunk {chunk_index}")
def spectrogram_chunk_task(store: str, out_dir: str, spec_array: str, chunk_index: int, key: str, config_json: str) -> int:
    cfg = _config(config_json)
    _injected_fault("spectrograms", chunk_index)
    segments = zs.read_chunk(store, "segments/signal", chunk_index, cfg.run.chunk_size)
    spec = spectrogram_chunk(segments, cfg.segments.target_fs, cfg.spectrogram).astype(np.float16)
    zs.write_chunk(store, f"{spec_array}/data", chunk_index, spec)
    Markers(out_dir).write(spec_array, _chunk_unit(chunk_index), key, {"digest": array_digest(spec), "worker": _where()})
    return int(len(spec))


@stage_task(name="feature-width")
def feature_width_task(config_json: str) -> tuple[int, str, str]:
    from ecgpipe.features import get_extractor

    extractor = get_extractor(_config(config_json).features)
    return extractor.feature_width(), extractor.layer, extractor.weights_source


@stage_task(name="feature-chunk", task_run_name="features chunk {chunk_index}")
def feature_chunk_task(
    store: str, out_dir: str, spec_array: str, chunk_index: int, targets: list[tuple[str, str, str]], config_json: str
) -> int:
    """One chunk of spectrograms through the backbone ONCE, tapping the layer of every target (feature array, chunk
    key, layer): a sweep over layers of one backbone pays for one forward pass, not one per layer."""
    from ecgpipe.features import get_extractor

    cfg = _config(config_json)
    _injected_fault("features", chunk_index)
    spectrograms = zs.read_chunk(store, f"{spec_array}/data", chunk_index, cfg.run.chunk_size)
    first, *others = [layer for _, _, layer in targets]
    extractor = get_extractor(cfg.features.model_copy(update={"layer": first}), tuple(others))
    activations = extractor.extract(spectrograms)
    for feat_array, key, layer in targets:
        zs.write_chunk(store, f"{feat_array}/data", chunk_index, activations[layer])
        Markers(out_dir).write(feat_array, _chunk_unit(chunk_index), key,
                               {"digest": array_digest(activations[layer]), "worker": _where()})
    return int(len(spectrograms))


@dataclass
class ClassificationData:
    """Everything a classifier sees, in canonical order (database, record, start) whatever the table's row order:
    the folds depend on the segments, not on where an incremental run happened to put them."""

    cnn: np.ndarray
    rhythm: np.ndarray | None
    y: np.ndarray
    subjects: np.ndarray
    databases: np.ndarray
    uids: list[str]

    def matrix(self, classifier) -> np.ndarray:
        return design_matrix(self.cnn, self.rhythm, classifier)


def classification_data(store: str, feat_array: str | None) -> ClassificationData:
    y = zs.read_array(store, "segments/class_index").astype(np.int64)
    attrs = zs.read_attrs(store, "segments")
    order = sorted(range(len(y)), key=lambda i: uid_order_key(attrs["uids"][i]))
    uids = [attrs["uids"][i] for i in order]
    subjects = np.array([attrs["subjects"][u.rsplit("/", 1)[0]] for u in uids])
    databases = np.array([u.split("/", 1)[0] for u in uids])
    cnn = rhythm = None
    if feat_array is not None:
        cnn = zs.read_array(store, f"{feat_array}/data").astype(np.float64)[order]
        if not np.isfinite(cnn).all():
            raise ValueError(f"{store}/{feat_array}: features contain NaN or inf")
    if "rhythm_features" in zs.open_group(f"{store}/segments", mode="r"):
        rhythm = zs.read_array(store, "segments/rhythm_features").astype(np.float64)[order]
    return ClassificationData(cnn, rhythm, y[order], subjects, databases, uids)


@stage_task(name="classify-fold", task_run_name="classify {protocol} fold {fold}")
def classify_fold_task(store: str, feat_array: str | None, protocol: str, fold: int, config_json: str) -> tuple[list, list, dict]:
    """One outer fold of one protocol for one (extractor, classifier) row; ``config_json`` holds that row's settings."""
    cfg = _config(config_json)
    data = classification_data(store, feat_array)
    splits, _ = make_splits(protocol, data.y, data.subjects, cfg.cv, data.databases)
    train, test = splits[fold]
    n_cnn = None if data.cnn is None else data.cnn.shape[1]
    pred, chosen = fit_predict(
        data.matrix(cfg.classifier), data.y, train, test, cfg.classifier, n_cnn, inner_groups(protocol, data.subjects)
    )
    return test.tolist(), pred.tolist(), chosen


# ------------------------------------------------------------------------------------------------ run bookkeeping
class StageFailed(RuntimeError):
    pass


@dataclass
class RunLog:
    """Per-stage counts and failed units of one run, written to OUT/run.json whatever happens."""

    out: Location
    t0: float = field(default_factory=time.perf_counter)
    stages: dict = field(default_factory=lambda: {s: {"computed": 0, "skipped": 0, "failed": 0} for s in STAGES})
    failures: list = field(default_factory=list)
    stage_seconds: dict = field(default_factory=dict)

    def count(self, stage: str, computed: int = 0, skipped: int = 0) -> None:
        self.stages[stage]["computed"] += computed
        self.stages[stage]["skipped"] += skipped

    def fail(self, stage: str, unit: str, error: str) -> None:
        self.stages[stage]["failed"] += 1
        self.failures.append({"stage": stage, "unit": unit, "error": error})

    def write(self, status: str, error: str | None = None, **extra) -> dict:
        doc = {
            "status": status,
            "wall_s": round(time.perf_counter() - self.t0, 2),
            "stages": self.stages,
            "stage_seconds": {k: round(v, 2) for k, v in self.stage_seconds.items()},
            "failed": self.failures,
            **({"error": error} if error else {}),
            **extra,
        }
        self.out.write_text("run.json", json.dumps(doc, indent=2))
        return doc


def _wait_all(futures: list, stage: str, logger, strict: bool = False) -> tuple[list, list[tuple[int, Exception]]]:
    """Wait for a stage's futures, logging progress; returns (results in submission order, (index, error) failures).
    A failed task never stops the others: the rest of the stage keeps running."""
    order = {id(f): i for i, f in enumerate(futures)}
    results: list = [None] * len(futures)
    failures = []
    step = max(1, len(futures) // 10)
    for done, fut in enumerate(as_completed(futures), start=1):
        try:
            results[order[id(fut)]] = fut.result()
        except Exception as exc:
            if strict:
                raise
            failures.append((order[id(fut)], exc))
            logger.warning(f"{stage}: {exc}")
        if done % step == 0 or done == len(futures):
            logger.info(f"{stage}: {done}/{len(futures)} computed")
    return results, failures


def gpu_workers_in_cluster() -> int:
    """Number of workers of this flow run's Dask cluster that advertise a ``GPU`` resource."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    client = getattr(ctx.task_runner, "_client", None) if ctx else None
    if client is None:
        return 0
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return sum(1 for w in workers.values() if (w.get("resources") or {}).get("GPU", 0) > 0)


def feature_placement(n_gpu_workers: int):
    """Feature tasks go to GPU workers when the cluster has any; otherwise anywhere. Dask would wait forever for a
    resource no worker has, so the annotation is only added when a GPU worker exists."""
    if n_gpu_workers:
        return dask.annotate(resources={"GPU": 1})
    return contextlib.nullcontext()


def _error_text(exc: Exception) -> str:
    return getattr(exc, "problem", None) or f"{type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------------------------------- stages
def plan_records(cfg: PipelineConfig, data_dir: str | None) -> list[RecordUnit]:
    root = resolve_data_dir(data_dir)
    units = []
    for db in cfg.databases:
        folder = database_dir(cfg, db, root)
        csv_name = cfg.databases[db].labels_csv
        labels = read_record_labels(folder, csv_name) if csv_name else {}
        units += [record_unit(cfg, db, rec, str(folder), labels.get(rec)) for rec in selected_records(cfg, db, folder)]
    return units


def record_done(store: str, markers: Markers, unit: RecordUnit) -> dict | None:
    """The record's summary if its stored windows are complete and current, else None."""
    marker = markers.read("segments", unit.name)
    if marker is None or marker.get("key") != unit.key:
        return None
    try:
        windows = zs.open_array(f"{store}/records/{unit.database}/{unit.record}/windows", mode="r")[...]
    except Exception:
        return None
    return marker["summary"] if array_digest(windows) == marker.get("digest") else None


def plan_segment_table(store: str, records: list[dict], cfg: PipelineConfig) -> tuple[dict, dict]:
    """The segment table a run would write (selection and row order), read-only; and where each candidate sits."""
    uids, classes, where = [], [], []
    for info in records:
        group, attrs = zs.read_record_windows(store, info["database"], info["record"])
        starts = group["starts"][...]
        uids += [segment_uid(info["database"], info["record"], s) for s in starts]
        classes.append(np.asarray(attrs["class_index"], dtype=np.int16))
        where += [(info["database"], info["record"], row) for row in range(len(starts))]
    class_index = np.concatenate(classes) if classes else np.zeros(0, np.int16)
    counts = np.bincount(class_index, minlength=len(cfg.class_names))
    empty = [cfg.class_names[c] for c in range(len(cfg.class_names)) if counts[c] == 0]
    if empty:
        raise ValueError(
            f"class(es) {empty} have no segments: none of their labels ({[cfg.classes[c] for c in empty]}) occur in "
            f"an episode of {cfg.segments.length_s} s or more in the {len(records)} records read. "
            f"Check the class labels and databases in the config."
        )
    chosen = select_stable(uids, class_index, class_caps(cfg), cfg.sampling.seed)
    root = zs.open_root(store, mode="r")
    previous = root["segments"].attrs.get("uids") if "segments" in root and "uids" in root["segments"].attrs else None
    slots = assign_slots(previous, [uids[i] for i in chosen])
    record_keys = {f"{r['database']}/{r['record']}": r["key"] for r in records}
    # spectrograms depend on the windows alone, not on the rhythm block stored beside them
    signal_keys = {f"{r['database']}/{r['record']}": r["signal_key"] for r in records}
    subjects = {f"{r['database']}/{r['record']}": r["subject"] for r in records}
    table_key = content_key(slots, record_keys, cfg.run.chunk_size, cfg.classes)
    table = {
        "uids": slots,
        "record_keys": record_keys,
        "signal_keys": signal_keys,
        "subjects": subjects,
        "n_candidates": int(len(uids)),
        "key": table_key,
    }
    return table, {"uids": uids, "class_index": class_index, "where": where}


def update_segment_table(store: str, records: list[dict], cfg: PipelineConfig) -> tuple[dict, bool]:
    """Select the dataset from every record's windows and (re)write segments/* if it changed. Flow process only."""
    table, candidates = plan_segment_table(store, records, cfg)
    root = zs.open_root(store)
    if root["segments"].attrs.get("key") == table["key"] and "segments/signal" in root:
        return table, False
    uids, class_index, where = candidates["uids"], candidates["class_index"], candidates["where"]
    slots, record_keys, subjects = table["uids"], table["record_keys"], table["subjects"]
    position = {u: i for i, u in enumerate(uids)}
    n, shape, chunk = len(slots), cfg.window_shape, cfg.run.chunk_size
    signal = np.zeros((n, *shape), np.float32)
    start = np.zeros(n, np.int64)
    cls = np.zeros(n, np.int16)
    rhythm = np.zeros(n, np.int16)
    rhythm_features = np.zeros((n, len(cfg.rhythm_columns)), np.float32) if cfg.rhythm.enabled else None
    rhythm_labels: list[str] = []
    by_record: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for slot, uid in enumerate(slots):
        db, rec, row = where[position[uid]]
        by_record.setdefault((db, rec), []).append((slot, row))
        cls[slot] = class_index[position[uid]]
    for (db, rec), pairs in by_record.items():
        group, attrs = zs.read_record_windows(store, db, rec)
        slot_idx, rows = (np.array(x) for x in zip(*pairs))
        signal[slot_idx] = group["windows"][...][rows]
        start[slot_idx] = group["starts"][...][rows]
        if rhythm_features is not None:
            rhythm_features[slot_idx] = group["rhythm"][...][rows]
        for s, ep in zip(slot_idx, group["episode"][...][rows]):
            label = attrs["episodes"][ep][0]
            if label not in rhythm_labels:
                rhythm_labels.append(label)
            rhythm[s] = rhythm_labels.index(label)
    sources = sorted(record_keys)
    source = np.array([sources.index(u.rsplit("/", 1)[0]) for u in slots], dtype=np.int32)
    zs.create_array(store, "segments/signal", (n, *shape), (chunk, *shape), "float32")[...] = signal
    for name, data in [("class_index", cls), ("source", source), ("start", start), ("rhythm", rhythm)]:
        zs.create_array(store, f"segments/{name}", data.shape, (chunk,), data.dtype)[...] = data
    if rhythm_features is not None:
        zs.create_array(store, "segments/rhythm_features", rhythm_features.shape, (chunk, rhythm_features.shape[1]), "float32",
                        attrs={"columns": list(cfg.rhythm_columns), "context_s": cfg.rhythm.context_s})[...] = rhythm_features
    elif "segments/rhythm_features" in root:
        del root["segments/rhythm_features"]
    root["segments"].attrs.update(
        {
            **table,
            "class_names": cfg.class_names,
            "sources": [{"database": s.split("/")[0], "record": s.split("/")[1], "subject": subjects[s]} for s in sources],
            "rhythm_labels": rhythm_labels,
            "target_fs": cfg.segments.target_fs,
            "length": cfg.segment_length,
            "n_leads": cfg.segments.n_leads,
        }
    )
    return table, True


def ensure_rows(store: str, name: str, n: int, row_shape: tuple, chunk: int, dtype: str, attrs: dict) -> None:
    """Make array ``name`` hold n rows (create, or resize keeping the rows it has). Flow process only."""
    root = zs.open_root(store)
    if name in root:
        arr = root[name]
        if arr.shape[1:] == tuple(row_shape) and arr.chunks[0] == chunk and str(arr.dtype) == dtype:
            if arr.shape[0] != n:
                arr.resize((n, *row_shape))  # tasks open the array afresh after this, never a stale handle
            return
    zs.create_array(store, name, (n, *row_shape), (chunk, *row_shape), dtype, attrs=attrs)


def stored_chunk_done(store: str, markers: Markers, array: str, i: int, key: str, n_rows: int, chunk: int) -> bool:
    """Chunk i of ``array`` is complete and current: marker key matches and its stored rows match the marker's digest."""
    lo, hi = i * chunk, min((i + 1) * chunk, n_rows)
    return chunk_is_done(markers, array, _chunk_unit(i), key, lambda: zs.open_array(f"{store}/{array}/data", mode="r")[lo:hi])


def run_chunk_stage(stage, targets, n_rows, chunk, markers, store, submit, logger, log: RunLog, blocked=()) -> set[int]:
    """Submit the chunks of a stage that are not done; returns the chunk indices that failed (or were blocked).

    ``targets`` are (array, chunk keys) pairs filled by the same tasks (the layers of one backbone share a forward
    pass); ``submit(i, [(array, key), ...])`` gets the targets of chunk i that are missing or stale. Units are counted
    per (array, chunk)."""
    todo: dict[int, list[tuple[str, str]]] = {}
    failed: set[int] = set()
    n_chunks, skipped = len(targets[0][1]), 0
    for i in range(n_chunks):
        if i in blocked:
            failed.add(i)
            for array, _ in targets:
                log.fail(stage, f"{array}/{_chunk_unit(i)}", "upstream chunk failed")
            continue
        missing = [(array, keys[i]) for array, keys in targets
                   if not stored_chunk_done(store, markers, array, i, keys[i], n_rows, chunk)]
        skipped += len(targets) - len(missing)
        if missing:
            todo[i] = missing
    log.count(stage, skipped=skipped)
    n_units = sum(len(t) for t in todo.values())
    logger.info(f"{stage}: {n_units} of {len(targets) * n_chunks} chunks to compute ({skipped} up to date)")
    chunks = list(todo)
    _, failures = _wait_all([submit(i, todo[i]) for i in chunks], stage, logger)
    lost = 0
    for idx, exc in failures:
        i = chunks[idx]
        failed.add(i)
        lost += len(todo[i])
        for array, _ in todo[i]:
            log.fail(stage, f"{array}/{_chunk_unit(i)}", _error_text(exc))
    log.count(stage, computed=n_units - lost)
    return failed


def run_status(cfg: PipelineConfig, data_dir: str | None, out_dir: str) -> dict:
    """Per stage: units done / stale / failed / missing, and what a rerun would compute. Reads only; runs nothing."""
    out = Location(out_dir)
    store, markers = zs.store_path(out), Markers(out)
    last = json.loads(out.read_text("run.json") or "{}")
    failed_units = {f["unit"] for f in last.get("failed", [])}

    def tally(stage, units):  # units: (name shown, marker stage, marker unit, key, done?)
        counts = {"done": 0, "stale": 0, "failed": 0, "missing": 0}
        todo = []
        for shown, mstage, munit, key, done in units:
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
    units = plan_records(cfg, data_dir)
    summaries = {u.name: record_done(store, markers, u) for u in units}
    status["stages"]["segments"] = tally(
        "segments", [(f"{u.database}/{u.record}", "segments", u.name, u.key, summaries[u.name] is not None) for u in units]
    )
    records = [s for s in summaries.values() if s is not None]
    if not records or not out.exists("store.zarr"):
        status["note"] = "nothing computed yet"
        for stage in STAGES[1:]:
            status["stages"][stage] = {"done": 0, "stale": 0, "failed": 0, "missing": None, "total": None, "rerun_computes": "all"}
        return status
    if status["stages"]["segments"]["rerun_computes"]:
        status["note"] = "records will be (re)computed first; downstream counts are against the table of the records done now"
    table, _ = plan_segment_table(store, records, cfg)
    n, chunk = len(table["uids"]), cfg.run.chunk_size
    spec_array = spectrogram_array_name(cfg)
    spec_keys = spectrogram_chunk_keys(cfg, table["uids"], table["signal_keys"])

    def chunk_rows(array, keys):
        return [(f"{array}/{_chunk_unit(i)}", array, _chunk_unit(i), key, stored_chunk_done(store, markers, array, i, key, n, chunk))
                for i, key in enumerate(keys)]

    status["stages"]["spectrograms"] = tally("spectrograms", chunk_rows(spec_array, spec_keys))
    feature_units, extractors = [], []
    for features in cfg.feature_variants:
        vcfg = cfg.with_stage(features=features)
        array, keys = feature_array_name(vcfg), feature_chunk_keys(vcfg, spec_keys)
        feature_units += chunk_rows(array, keys)
        extractors.append({"cfg": vcfg, "array": array, "keys": keys})
    status["stages"]["features"] = tally("features", feature_units)
    rows = comparison_rows(cfg, extractors, table["key"])
    status["stages"]["classify"] = tally(
        "classify", [(r["unit"], "classify", r["unit"], r["key"], markers.is_done("classify", r["unit"], r["key"])) for r in rows]
    )
    return status


# ------------------------------------------------------------------------------------------------------- the flow
@flow(name="ecgpipe", log_prints=True)
def ecg_pipeline(config: dict, data_dir: str | None, out_dir: str, strict: bool | None = None) -> dict:
    out = Location(out_dir)
    log = RunLog(out)
    try:
        report = _pipeline(config, data_dir, out, strict, log)
    except BaseException as exc:
        log.write("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    log.write("completed", report=out.child("report.json"))
    return report


def _pipeline(config: dict, data_dir: str | None, out: Location, strict: bool | None, log: RunLog) -> dict:
    logger = get_run_logger()
    cfg = config_from_dict(config)
    strict = cfg.run.strict if strict is None else strict
    config_json = cfg.model_dump_json()
    store, markers, out_dir = zs.store_path(out), Markers(out), out.url
    retry = {"retries": cfg.run.retries, "retry_delay_seconds": list(cfg.run.retry_delay_s) or 0}
    record_task, spec_task, feat_task, fold_task = (
        t.with_options(**retry) for t in (record_segments, spectrogram_chunk_task, feature_chunk_task, classify_fold_task)
    )
    out.makedirs()
    out.write_text("config.json", json.dumps({"config": cfg.model_dump(mode="json"), "data_dir": data_dir}, indent=2))

    # 1. records -> segments
    t = time.perf_counter()
    units = plan_records(cfg, data_dir)
    zs.ensure_groups(store, "records", *[f"records/{db}" for db in cfg.databases], "segments", "spectrograms", "features")
    summaries = {u.name: record_done(store, markers, u) for u in units}
    todo = [u for u in units if summaries[u.name] is None]
    log.count("segments", skipped=len(units) - len(todo))
    logger.info(f"segments: {len(todo)} of {len(units)} records to compute")
    futures = [record_task.submit(store, out_dir, u, config_json) for u in todo]
    results, failures = _wait_all(futures, "segments", logger, strict)
    for u, r in zip(todo, results):
        summaries[u.name] = r
    log.count("segments", computed=len(todo) - len(failures))
    skipped_records = []
    for idx, exc in failures:
        u = todo[idx]
        log.fail("segments", f"{u.database}/{u.record}", _error_text(exc))
        skipped_records.append({"record": getattr(exc, "record_path", f"{u.database}/{u.record}"), "error": _error_text(exc)})
    records = [summaries[u.name] for u in units if summaries[u.name] is not None]
    if not records:
        raise StageFailed(f"every record failed; first error: {skipped_records[0] if skipped_records else 'none read'}")
    table, table_changed = update_segment_table(store, records, cfg)
    n, chunk = len(table["uids"]), cfg.run.chunk_size
    log.stage_seconds["segments"] = time.perf_counter() - t
    logger.info(f"segments: {n} selected of {table['n_candidates']} windows (table {'rewritten' if table_changed else 'unchanged'})")

    # 2. spectrograms
    t = time.perf_counter()
    spec_array = spectrogram_array_name(cfg)
    freqs = spectrogram_frequencies(cfg.segments.target_fs, cfg.spectrogram)
    spec_row = spectrogram_shape(cfg.window_shape, cfg.segments.target_fs, cfg.spectrogram)  # ([n_leads,] F, T)
    spec_attrs = {"frequencies_hz": freqs.tolist(), "settings": cfg.spectrogram.model_dump(mode="json")}
    ensure_rows(store, f"{spec_array}/data", n, spec_row, chunk, "float16", spec_attrs)
    spec_keys = spectrogram_chunk_keys(cfg, table["uids"], table["signal_keys"])
    spec_failed = run_chunk_stage(
        "spectrograms", [(spec_array, spec_keys)], n, chunk, markers, store,
        lambda i, todo: spec_task.submit(store, out_dir, spec_array, i, todo[0][1], config_json), logger, log,
    )
    log.stage_seconds["spectrograms"] = time.perf_counter() - t

    # 3. features: one array per extractor of the sweep, all from the same spectrograms; extractors that differ only
    #    in the layer share one forward pass per chunk
    t = time.perf_counter()
    n_gpu = gpu_workers_in_cluster()
    placement = f"{n_gpu} GPU worker(s) (resources GPU=1)" if n_gpu else "any worker (no GPU worker in the cluster)"
    variants = cfg.feature_variants
    extractors, feat_failed = [None] * len(variants), set()
    for group in feature_groups(variants):
        done, failed = extract_features([cfg.with_stage(features=variants[k]) for k in group], store, out_dir, spec_array,
                                        spec_keys, n, spec_failed, n_gpu, markers, feat_task, logger, log)
        for k, extractor in zip(group, done):
            extractors[k] = extractor
        feat_failed |= failed
    log.stage_seconds["features"] = time.perf_counter() - t
    if spec_failed or feat_failed:
        log.fail("classify", "classify", "features incomplete")
        raise StageFailed(
            f"{len(spec_failed)} spectrogram and {len(feat_failed - spec_failed)} feature chunk(s) failed "
            f"(see {out.child('run.json')}); run again to recompute only those"
        )

    # 4. classification: every (extractor, classifier) row, all folds as parallel tasks; then the best row's model
    t = time.perf_counter()
    rows = comparison_rows(cfg, extractors, table["key"])
    classify_rows(rows, store, markers, logger, log, fold_task)
    best = best_row(rows, cfg.selection_protocol)
    model_path = train_model(rows[best], store, out, markers, logger, log)
    log.stage_seconds["classify"] = time.perf_counter() - t

    report = build_report(cfg, store, records, skipped_records, table, spec_row, rows, best)
    report["model"] = model_path
    report["stage_seconds"] = {k: round(v, 2) for k, v in log.stage_seconds.items()}
    report["wall_s"] = round(time.perf_counter() - log.t0, 2)
    report["store"] = store
    report["spectrograms_array"] = f"{spec_array}/data"
    report["feature_placement"] = placement
    report["provenance"] = {
        "dataset_key": table["key"],
        "record_keys": table["record_keys"],
        "record_files_sha256": {f"{u.database}/{u.record}": u.files_sha256 for u in units},
    }
    logger.info(f"report: {write_report(report, out, example_spectrograms(store, f'{spec_array}/data', cfg))}")
    return report


def extract_features(vcfgs, store, out_dir, spec_array, spec_keys, n, spec_failed, n_gpu, markers, feat_task, logger, log):
    """The feature stage for extractors of one backbone that differ only in the layer: their arrays, chunk keys and
    attributes, and the chunk indices that failed. Each chunk task taps all their layers in one forward pass."""
    chunk, config_json = vcfgs[0].run.chunk_size, vcfgs[0].model_dump_json()
    root = zs.open_root(store)
    extractors = []
    for vcfg in vcfgs:
        feat_array, feat_keys = feature_array_name(vcfg), feature_chunk_keys(vcfg, spec_keys)
        logger.info(f"features: {vcfg.features.backbone} layer {vcfg.features.layer or '(pooled)'} -> {feat_array}")
        if f"{feat_array}/data" in root and "weights" in root[f"{feat_array}/data"].attrs:
            feat_attrs = dict(root[f"{feat_array}/data"].attrs)
        else:
            with feature_placement(n_gpu):
                width, layer, weights_source = feature_width_task.submit(vcfg.model_dump_json()).result()
            feat_attrs = {"backbone": vcfg.features.backbone, "layer": layer, "weights": weights_source, "width": width}
        ensure_rows(store, f"{feat_array}/data", n, (feat_attrs["width"],), chunk, "float32", feat_attrs)
        extractors.append({"cfg": vcfg, "array": feat_array, "keys": feat_keys, "attrs": feat_attrs})
    layer_of = {e["array"]: e["attrs"]["layer"] for e in extractors}
    targets = list({e["array"]: e["keys"] for e in extractors}.items())  # one target per array

    def submit_features(i: int, todo: list[tuple[str, str]]):
        with feature_placement(n_gpu):
            return feat_task.submit(store, out_dir, spec_array, i, [(a, key, layer_of[a]) for a, key in todo], config_json)

    failed = run_chunk_stage("features", targets, n, chunk, markers, store, submit_features, logger, log,
                             blocked=spec_failed)
    return extractors, failed


def comparison_rows(cfg: PipelineConfig, extractors: list[dict], table_key: str) -> list[dict]:
    """One row per (extractor, classifier); rhythm-only classifiers do not depend on the extractor: one row each."""
    rows = []
    for e, extractor in enumerate(extractors):
        for clf in cfg.classifiers:
            if clf.inputs == "rhythm" and e > 0:
                continue
            rcfg = extractor["cfg"].with_stage(classifier=clf)
            key = classify_key(rcfg, extractor["keys"] if clf.inputs != "rhythm" else [], table_key)
            rows.append({"cfg": rcfg, "extractor": extractor, "key": key,
                         "unit": f"{extractor['array'].replace('/', '__')}__{key[:16]}",
                         # the CNN feature array the classifier reads (none for RR features alone)
                         "features": extractor["array"] if clf.inputs != "rhythm" else None})
    return rows


def classify_rows(rows: list[dict], store: str, markers: Markers, logger, log: RunLog, fold_task=classify_fold_task) -> None:
    """Fill ``row["protocols"]`` of every row: from its marker when current, else by running its folds."""
    pending = []
    for row in rows:
        marker = markers.read("classify", row["unit"])
        if marker and marker.get("key") == row["key"]:
            row["protocols"] = marker["protocols"]
            log.count("classify", skipped=1)
        else:
            pending.append(row)
    logger.info(f"classify: {len(pending)} of {len(rows)} (extractor, classifier) rows to evaluate")
    if not pending:
        return
    data = classification_data(store, None)
    jobs, splits_of = [], {}
    for r, row in enumerate(pending):
        for protocol in row["cfg"].cv.protocols:
            splits_of[(r, protocol)] = make_splits(protocol, data.y, data.subjects, row["cfg"].cv, data.databases)
            jobs += [(r, protocol, f) for f in range(len(splits_of[(r, protocol)][0]))]
    futures = [
        fold_task.submit(store, pending[r]["features"], p, f, pending[r]["cfg"].model_dump_json()) for r, p, f in jobs
    ]
    results, _ = _wait_all(futures, "classify", logger, strict=True)
    for r, row in enumerate(pending):
        row["protocols"] = {}
        for protocol in row["cfg"].cv.protocols:
            splits, note = splits_of[(r, protocol)]
            y_pred, chosen = np.full_like(data.y, -1), [None] * len(splits)
            for (jr, jp, jf), (test, pred, params) in zip(jobs, results):
                if (jr, jp) == (r, protocol):
                    y_pred[np.asarray(test, dtype=np.int64)] = pred
                    chosen[jf] = params
            row["protocols"][protocol] = summary = summarize_protocol(
                data.y, y_pred, data.subjects, splits, row["cfg"].class_names, note, chosen
            )
            per_record = [db for db, s in row["cfg"].databases.items() if s.labels_csv]
            if per_record:  # databases labelled per record: also score each record's majority vote
                rows_of = np.isin(data.databases, per_record)
                records = np.array([u.rsplit("/", 1)[0] for u in data.uids])
                summary["per_record"] = record_level_summary(data.y[rows_of], y_pred[rows_of], records[rows_of], row["cfg"].class_names)
        markers.write("classify", row["unit"], row["key"], {"protocols": row["protocols"]})
        log.count("classify", computed=1)


def best_row(rows: list[dict], protocol: str) -> int:
    """Index of the row with the highest macro-F1 under ``protocol`` (ties: the earlier row)."""
    scores = [row["protocols"][protocol]["macro_f1"] for row in rows]
    return int(np.argmax(scores))


@stage_task(name="train-model")
def train_model_task(store: str, feat_array: str | None, config_json: str, weights_source: str, path: str) -> str:
    """Fit the chosen row's classifier on every segment and save it as a model artifact (``ecgpipe.model``)."""
    from ecgpipe.model import save_model

    cfg = _config(config_json)
    data = classification_data(store, feat_array)
    n_cnn = None if data.cnn is None else data.cnn.shape[1]
    groups = None if cfg.selection_protocol == "stratified_10fold" else data.subjects
    model, chosen = fit_classifier(data.matrix(cfg.classifier), data.y, cfg.classifier, n_cnn, groups)
    training = {"n_segments": int(len(data.y)), "subjects": sorted(set(data.subjects.tolist())), "chosen": chosen}
    save_model(path, model, cfg, weights_source=weights_source, n_cnn=n_cnn, training=training)
    return path


def train_model(row: dict, store: str, out: Location, markers: Markers, logger, log: RunLog) -> str | None:
    """The run's model artifact OUT/model.skops: the best row's classifier refitted on all segments."""
    if not out.local_root:
        logger.warning("model: the output folder is not local; no model artifact written")
        return None
    path = os.path.join(out.local_root, "model.skops")
    key = content_key("model", row["key"])
    marker = markers.read("model", "model")
    if marker and marker.get("key") == key and os.path.isfile(path):
        return path
    train_model_task.submit(store, row["features"], row["cfg"].model_dump_json(), row["extractor"]["attrs"]["weights"], path).result()
    markers.write("model", "model", key, {"row": row["cfg"].classifier_label})
    logger.info(f"model: {row['cfg'].classifier_label} on {row['extractor']['array']} -> {path}")
    return path


def example_spectrograms(store: str, spec_data: str, cfg: PipelineConfig, per_class: int = 3) -> str:
    """The report's figure of a few stored spectrograms per class (the first rows of each class)."""
    from ecgpipe.report_html import example_spectrograms_figure

    y = zs.read_array(store, "segments/class_index")
    spec = zs.open_array(f"{store}/{spec_data}", mode="r")
    freqs = np.asarray(spec.attrs["frequencies_hz"])
    rows = {c: np.flatnonzero(y == i)[:per_class] for i, c in enumerate(cfg.class_names)}
    # with two leads a row is (n_leads, F, T): the figure shows the first lead
    examples = {c: spec.get_orthogonal_selection((r,))[:, 0] if spec.ndim == 4 else spec.get_orthogonal_selection((r,))
                for c, r in rows.items()}
    return example_spectrograms_figure(examples, freqs, cfg.segments.length_s)


def comparison_summary(rows: list[dict], best: int) -> list[dict]:
    """The comparison table: per row its extractor, classifier and headline metrics of every protocol."""
    keys = ("accuracy", "balanced_accuracy", "macro_f1", "accuracy_fold_std", "balanced_accuracy_fold_std", "macro_f1_fold_std")
    table = []
    for i, row in enumerate(rows):
        attrs, clf = row["extractor"]["attrs"], row["cfg"].classifier
        # an untrained backbone next to its pretrained twin (a sweep measuring what transfer buys) must not look alike
        untrained = " (random weights)" if row["cfg"].features.weights == "random" else ""
        table.append(
            {
                "backbone": attrs["backbone"] + untrained if clf.inputs != "rhythm" else "-",
                "layer": attrs["layer"] if clf.inputs != "rhythm" else "-",
                "classifier": row["cfg"].classifier_label,
                "features_array": f"{row['extractor']['array']}/data",
                "best": i == best,
                "protocols": {p: {k: m[k] for k in keys} for p, m in row["protocols"].items()},
                "n_folds": {p: m["n_folds"] for p, m in row["protocols"].items()},
                # the inner CV's choice per outer fold (tuned classifiers only)
                "chosen": {p: [f["chosen"] for f in m["folds"] if f.get("chosen")] for p, m in row["protocols"].items()
                           if any(f.get("chosen") for f in m["folds"])},
            }
        )
    return table


def features_description(cfg: PipelineConfig, feat_attrs: dict) -> str:
    """What the best row's classifier sees, in words (a rhythm-only row uses no CNN at all)."""
    cnn = f"{feat_attrs['backbone']} layer {feat_attrs['layer']} ({feat_attrs['width']} values, weights: {feat_attrs['weights']})"
    rr = cfg.rhythm_description
    return {"cnn": f"Features: {cnn}", "rhythm": f"Features: {rr} (no CNN)", "cnn+rhythm": f"Features: {cnn} + {rr}"}[cfg.classifier.inputs]


def build_report(cfg, store, records, skipped, table, spec_shape, rows: list[dict], best: int) -> dict:
    feat_attrs, best_cfg = rows[best]["extractor"]["attrs"], rows[best]["cfg"]
    y = zs.read_array(store, "segments/class_index")
    rec_of = [u.rsplit("/", 1)[0] for u in table["uids"]]
    subjects = np.array([table["subjects"][r] for r in rec_of])
    dbs = np.array([r.split("/")[0] for r in rec_of])
    report: dict = {}
    if best_cfg.features.weights == "random":  # the detailed sections are the best row's
        report["warning"] = RANDOM_WEIGHTS_WARNING
    seen = {label for r in records for label in r["labels"]}
    report.update(
        {
            "config_name": cfg.name,
            "code_version": ecgpipe.__version__,
            "n_segments": int(len(y)),
            "n_candidates": table["n_candidates"],
            "class_counts": {c: int((y == i).sum()) for i, c in enumerate(cfg.class_names)},
            "class_counts_by_database": {
                c: {db: int(((y == i) & (dbs == db)).sum()) for db in cfg.databases} for i, c in enumerate(cfg.class_names)
            },
            "subjects_per_class": {c: int(len(set(subjects[y == i]))) for i, c in enumerate(cfg.class_names)},
            "n_subjects": int(len(set(subjects))),
            "n_records_used": int(len(set(rec_of))),
            "databases": list(cfg.databases),
            "spectrogram_shape": list(spec_shape),
            "backbone": feat_attrs["backbone"],
            "layer": feat_attrs["layer"],
            "feature_width": int(feat_attrs["width"]),
            "weights": feat_attrs["weights"],
            "features_array": f"{rows[best]['extractor']['array']}/data",
            "classifier": best_cfg.classifier_label,
            "features_description": features_description(best_cfg, feat_attrs),
            # the rhythm block in words, for the comparison table's rhythm-only rows
            "rhythm_description": cfg.rhythm_description if cfg.rhythm.enabled else None,
            "selected_by": f"highest macro-F1 under {cfg.selection_protocol} among {len(rows)} rows",
            "protocols": rows[best]["protocols"],
            "comparison": comparison_summary(rows, best),
            "skipped_records": skipped,
            "unmatched_labels": sorted(set(cfg.label_to_class) - seen),
            "config": cfg.model_dump(mode="json"),
        }
    )
    return report


# --------------------------------------------------------------------------------------------- running the flow
@contextlib.contextmanager
def prefect_api():
    """Make sure every process of the run talks to ONE Prefect API.

    Without a configured server, Prefect starts a temporary one per process; with Dask worker processes that means one
    server each, all on one SQLite file (slow, and flaky). So start one here and export its URL before the cluster's
    workers are spawned (they inherit the environment).
    """
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Prefect's own temporary server (as it would start itself); it stops at interpreter exit, after Prefect has
    # flushed its log and event queues to it.
    server = SubprocessASGIServer()
    server.start(timeout=int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        os.environ.pop("PREFECT_API_URL", None)


class StoreUnreachable(RuntimeError):
    pass


def _read_token(folder: str, name: str) -> str:
    try:
        return Location(folder).read_text(name) or "<FileNotFoundError: no token>"
    except Exception as exc:
        return f"<{type(exc).__name__}: {exc}>"


def check_store_reachable(scheduler: str, *folders: str | None) -> None:
    """Fail early, with the workers named, when a worker of an existing cluster cannot see a folder of the run.

    Tasks exchange paths, not arrays, so every worker must see the output folder (and the data) at the same path.
    A token is written into each folder here and read back by every worker.
    """
    import uuid

    from distributed import Client

    problems = []
    with Client(scheduler, timeout=60) as client:
        for folder in folders:
            if not folder:
                continue
            location = Location(folder)
            location.makedirs()
            name, token = f".ecgpipe-reachable-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
            location.write_text(name, token)
            try:
                seen = client.run(_read_token, location.url, name)
            finally:
                location.delete(name)
            problems += [f"{worker} cannot see {location.url} ({got if got.startswith('<') else 'different content'})"
                         for worker, got in seen.items() if got != token]
    if problems:
        raise StoreUnreachable(
            "workers of the cluster at " + scheduler + " do not share this run's folders: " + "; ".join(problems)
            + ". Mount the data and output folders at the same path on every worker (shared file system)."
        )


def task_runner(cfg: PipelineConfig, out_dir: str, scheduler: str | None = None):
    from prefect_dask import DaskTaskRunner

    if scheduler:
        return DaskTaskRunner(address=scheduler)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": cfg.run.n_workers,
            "threads_per_worker": cfg.run.threads_per_worker,
            "processes": True,
            "dashboard_address": ":0",  # None still binds 8787
            # Dask's spill/scratch space: inside a local output folder, else the machine's temporary folder
            "local_directory": os.path.join(Location(out_dir).local_root or tempfile.gettempdir(), ".dask"),
        },
    )


def run_pipeline(
    cfg: PipelineConfig,
    data_dir: str | None,
    out_dir: str,
    scheduler: str | None = None,
    strict: bool | None = None,
) -> dict:
    """Run the flow on a local Dask cluster (or ``scheduler``) with one Prefect API; returns the report."""
    Location(out_dir).makedirs()
    import distributed  # noqa: F401  (its import sets up its loggers; quieten them afterwards)

    logging.getLogger("distributed").setLevel(logging.WARNING)  # cluster start/stop chatter hides the progress lines
    if scheduler:
        check_store_reachable(scheduler, out_dir, data_dir)
    with prefect_api():
        runner = task_runner(cfg, out_dir, scheduler)
        return ecg_pipeline.with_options(task_runner=runner)(
            config=cfg.model_dump(mode="json"), data_dir=str(data_dir) if data_dir else None, out_dir=str(out_dir), strict=strict
        )
