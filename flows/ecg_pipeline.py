"""The ecgpipe Prefect flow: records -> segments -> spectrograms -> CNN features -> cross-validated report.

    records (1 task / record)          read + validate WFDB, resample, cut windows  -> store records/<db>/<rec>
        |
    assemble_segments (flow process)   per-class caps, seeded                        -> store segments/*
        |
    spectrogram_chunk (1 task / chunk) STFT log power of chunk_size segments        -> store spectrograms/<hash>
        |
    feature_chunk (1 task / chunk)     224x224, ImageNet norm, backbone, pooled      -> store features/<hash>
        |
    classify_and_report                both CV protocols                            -> report.json/.md/.png

Tasks run on a Dask cluster through prefect-dask's DaskTaskRunner and pass only store paths and chunk indices. Every
array is created here, in the flow process, before the tasks that fill it start; each task writes only whole chunks it
owns (Zarr loses data silently when two writers share a chunk).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

import ecgpipe
from ecgpipe import store as zs
from ecgpipe.classify import evaluate_protocol
from ecgpipe.config import ConfigError, PipelineConfig, config_from_dict
from ecgpipe.databases import subject_id
from ecgpipe.dataset import record_windows, select_segments
from ecgpipe.records import RecordError, read_record
from ecgpipe.report import RANDOM_WEIGHTS_WARNING, write_report
from ecgpipe.sources import database_dir, resolve_data_dir, selected_records
from ecgpipe.spectrogram import spectrogram_chunk, spectrogram_frequencies

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


# The store's contents are the source of truth for what was computed; Prefect's own result cache is not used.
stage_task = task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_retry_transient)


def _config(config_json: str) -> PipelineConfig:
    return PipelineConfig.model_validate_json(config_json)


# ---------------------------------------------------------------------------------------------------------- tasks
@stage_task(name="record-segments", task_run_name="segments {database}/{record}")
def record_segments(store: str, db_dir: str, database: str, record: str, config_json: str) -> dict:
    """Read and validate one record, cut its labelled windows and store them under records/<db>/<record>."""
    cfg = _config(config_json)
    settings = cfg.database(database)
    rec = read_record(db_dir, database, record, settings, nan_policy=cfg.segments.nan_policy)
    found = record_windows(rec, cfg)
    subject = subject_id(database, record, settings.same_subject)
    zs.write_record_windows(
        store,
        database,
        record,
        found.windows,
        found.starts,
        found.episode,
        attrs={
            "episodes": [[ep.label, ep.start, ep.end] for ep in rec.episodes],
            "class_index": found.class_index.tolist(),
            "lead": rec.lead,
            "fs": rec.fs,
            "subject": subject,
            "path": rec.path,
            "n_nan": rec.n_nan,
        },
    )
    return {
        "database": database,
        "record": record,
        "subject": subject,
        "lead": rec.lead,
        "n_windows": int(len(found.starts)),
        "labels": sorted({ep.label for ep in rec.episodes}),
    }


@stage_task(name="spectrogram-chunk", task_run_name="spectrograms chunk {chunk_index}")
def spectrogram_chunk_task(store: str, spec_array: str, chunk_index: int, config_json: str) -> int:
    cfg = _config(config_json)
    segments = zs.read_chunk(store, "segments/signal", chunk_index, cfg.run.chunk_size)
    spec = spectrogram_chunk(segments, cfg.segments.target_fs, cfg.spectrogram)
    zs.write_chunk(store, spec_array, chunk_index, spec)
    return int(len(spec))


@stage_task(name="feature-width")
def feature_width_task(config_json: str) -> tuple[int, str, str]:
    from ecgpipe.features import get_extractor

    extractor = get_extractor(_config(config_json).features)
    return extractor.feature_width(), extractor.layer, extractor.weights_source


@stage_task(name="feature-chunk", task_run_name="features chunk {chunk_index}")
def feature_chunk_task(store: str, spec_array: str, feat_array: str, chunk_index: int, config_json: str) -> int:
    from ecgpipe.features import get_extractor

    cfg = _config(config_json)
    spectrograms = zs.read_chunk(store, spec_array, chunk_index, cfg.run.chunk_size)
    features = get_extractor(cfg.features)(spectrograms)
    zs.write_chunk(store, feat_array, chunk_index, features)
    return int(len(features))


@stage_task(name="classify")
def classify_task(store: str, feat_array: str, config_json: str) -> dict:
    cfg = _config(config_json)
    X = zs.read_array(store, feat_array).astype(np.float64)
    y = zs.read_array(store, "segments/class_index").astype(np.int64)
    source = zs.read_array(store, "segments/source")
    sources = zs.read_attrs(store, "segments")["sources"]
    subjects = np.array([sources[i]["subject"] for i in source])
    if not np.isfinite(X).all():
        raise ValueError(f"{store}/{feat_array}: features contain NaN or inf")
    return {
        protocol: evaluate_protocol(X, y, subjects, cfg.class_names, protocol, cfg.classifier, cfg.cv)
        for protocol in cfg.cv.protocols
    }


# ------------------------------------------------------------------------------------------------- flow helpers
def assemble_segments(store: str, records: list[dict], cfg: PipelineConfig) -> dict:
    """Pool every record's windows, apply the per-class caps and write the dataset table (flow process only)."""
    class_parts, row_parts, rec_parts = [], [], []
    for i, info in enumerate(records):
        group, attrs = zs.read_record_windows(store, info["database"], info["record"])
        ci = np.asarray(attrs["class_index"], dtype=np.int16)
        class_parts.append(ci)
        row_parts.append(np.arange(len(ci)))
        rec_parts.append(np.full(len(ci), i))
    class_index = np.concatenate(class_parts) if class_parts else np.zeros(0, np.int16)
    rows = np.concatenate(row_parts) if row_parts else np.zeros(0, np.int64)
    rec_of = np.concatenate(rec_parts) if rec_parts else np.zeros(0, np.int64)

    counts = np.bincount(class_index, minlength=len(cfg.class_names)) if len(class_index) else np.zeros(len(cfg.class_names), int)
    empty = [cfg.class_names[c] for c in range(len(cfg.class_names)) if counts[c] == 0]
    if empty:
        raise ValueError(
            f"class(es) {empty} have no segments: none of their labels "
            f"({[cfg.classes[c] for c in empty]}) occur in an episode of {cfg.segments.length_s} s or more in the "
            f"{len(records)} records read. Check the class labels and databases in the config."
        )
    chosen = select_segments(class_index, cfg)
    n, length = len(chosen), cfg.segment_length
    signal = np.zeros((n, length), np.float32)
    start = np.zeros(n, np.int64)
    rhythm_labels: list[str] = []
    rhythm = np.zeros(n, np.int16)
    for i, info in enumerate(records):
        mine = np.flatnonzero(rec_of[chosen] == i)
        if not len(mine):
            continue
        group, attrs = zs.read_record_windows(store, info["database"], info["record"])
        r = rows[chosen[mine]]
        signal[mine] = group["windows"][...][r]
        start[mine] = group["starts"][...][r]
        episode = group["episode"][...][r]
        for j, ep in zip(mine, episode):
            label = attrs["episodes"][ep][0]
            if label not in rhythm_labels:
                rhythm_labels.append(label)
            rhythm[j] = rhythm_labels.index(label)

    chunk = cfg.run.chunk_size
    sources = [{k: r[k] for k in ("database", "record", "subject", "lead")} for r in records]
    zs.create_array(store, "segments/signal", (n, length), (chunk, length), "float32")[...] = signal
    for name, data in [
        ("class_index", class_index[chosen]),
        ("source", rec_of[chosen].astype(np.int32)),
        ("start", start),
        ("rhythm", rhythm),
    ]:
        zs.create_array(store, f"segments/{name}", data.shape, (chunk,), data.dtype)[...] = data
    zs.open_root(store)["segments"].attrs.update(
        {
            "class_names": cfg.class_names,
            "sources": sources,
            "rhythm_labels": rhythm_labels,
            "target_fs": cfg.segments.target_fs,
            "length": length,
        }
    )
    return {"n_segments": n, "n_candidates": int(len(class_index)), "candidates_per_class": counts.tolist()}


def _wait_all(futures: list, stage: str, logger, strict: bool) -> tuple[list, list[tuple[int, Exception]]]:
    """Wait for a stage's futures, logging progress; returns (results in submission order, (index, error) failures)."""
    order = {id(f): i for i, f in enumerate(futures)}
    results: list = [None] * len(futures)
    failures = []
    done = 0
    step = max(1, len(futures) // 10)
    for fut in as_completed(futures):
        done += 1
        try:
            results[order[id(fut)]] = fut.result()
        except Exception as exc:
            if strict:
                raise
            failures.append((order[id(fut)], exc))
            logger.warning(f"{stage}: {exc}")
        if done % step == 0 or done == len(futures):
            logger.info(f"{stage}: {done}/{len(futures)} done")
    return results, failures


# ------------------------------------------------------------------------------------------------------- the flow
@flow(name="ecgpipe", log_prints=True)
def ecg_pipeline(config: dict, data_dir: str | None, out_dir: str, strict: bool | None = None) -> dict:
    logger = get_run_logger()
    t0 = time.perf_counter()
    cfg = config_from_dict(config)
    strict = cfg.run.strict if strict is None else strict
    config_json = cfg.model_dump_json()
    out = Path(out_dir).resolve()
    store = zs.store_path(out)
    stage_s: dict[str, float] = {}

    # 1. records -> segments
    t = time.perf_counter()
    root = resolve_data_dir(data_dir)
    folders = {db: database_dir(cfg, db, root) for db in cfg.databases}
    work = [(db, rec) for db in cfg.databases for rec in selected_records(cfg, db, folders[db])]
    zs.ensure_groups(store, "records", *[f"records/{db}" for db in cfg.databases], "segments", "spectrograms", "features")
    logger.info(f"segments: {len(work)} records from {', '.join(f'{db} ({folders[db]})' for db in folders)}")
    futures = [record_segments.submit(store, str(folders[db]), db, rec, config_json) for db, rec in work]
    results, failures = _wait_all(futures, "segments", logger, strict)
    records = [r for r in results if r is not None]
    skipped = [
        {
            "record": getattr(exc, "record_path", "/".join(work[i])),
            "error": getattr(exc, "problem", f"{type(exc).__name__}: {exc}"),
        }
        for i, exc in sorted(failures, key=lambda f: f[0])
    ]
    if not records:
        raise RuntimeError(f"every record failed; first error: {skipped[0] if skipped else 'none read'}")
    dataset = assemble_segments(store, records, cfg)
    stage_s["segments"] = time.perf_counter() - t
    logger.info(f"segments: {dataset['n_segments']} selected of {dataset['n_candidates']} windows")

    # 2. spectrograms
    t = time.perf_counter()
    n, chunk = dataset["n_segments"], cfg.run.chunk_size
    chunks = list(range(zs.n_chunks(n, chunk)))
    spec_array = f"spectrograms/{cfg.section_hash('databases', 'classes', 'segments', 'sampling', 'spectrogram')}/data"
    n_freq = len(spectrogram_frequencies(cfg.segments.target_fs, cfg.spectrogram))
    n_time = spectrogram_chunk(np.zeros((1, cfg.segment_length)), cfg.segments.target_fs, cfg.spectrogram).shape[2]
    zs.create_array(
        store,
        spec_array,
        (n, n_freq, n_time),
        (chunk, n_freq, n_time),
        "float16",
        attrs={
            "frequencies_hz": spectrogram_frequencies(cfg.segments.target_fs, cfg.spectrogram).tolist(),
            "settings": cfg.spectrogram.model_dump(mode="json"),
        },
    )
    futures = [spectrogram_chunk_task.submit(store, spec_array, c, config_json) for c in chunks]
    _wait_all(futures, "spectrograms", logger, strict=True)
    stage_s["spectrograms"] = time.perf_counter() - t

    # 3. features
    t = time.perf_counter()
    width, layer, weights_source = feature_width_task.submit(config_json).result()
    feat_hash = cfg.section_hash("databases", "classes", "segments", "sampling", "spectrogram", "features")
    feat_array = f"features/{feat_hash}/data"
    zs.create_array(
        store,
        feat_array,
        (n, width),
        (chunk, width),
        "float32",
        attrs={"backbone": cfg.features.backbone, "layer": layer, "weights": weights_source},
    )
    futures = [feature_chunk_task.submit(store, spec_array, feat_array, c, config_json) for c in chunks]
    _wait_all(futures, "features", logger, strict=True)
    stage_s["features"] = time.perf_counter() - t

    # 4. classification and report
    t = time.perf_counter()
    protocols = classify_task.submit(store, feat_array, config_json).result()
    stage_s["classify"] = time.perf_counter() - t
    report = build_report(cfg, store, records, skipped, dataset, (n_freq, n_time), width, layer, weights_source, protocols)
    report["stage_seconds"] = {k: round(v, 2) for k, v in stage_s.items()}
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    report["store"] = store
    report["features_array"] = feat_array
    report_path = write_report(report, out)
    logger.info(f"report: {report_path}")
    return report


def build_report(cfg, store, records, skipped, dataset, spec_shape, width, layer, weights_source, protocols) -> dict:
    y = zs.read_array(store, "segments/class_index")
    source = zs.read_array(store, "segments/source")
    subjects = np.array([records[i]["subject"] for i in source])
    dbs = np.array([records[i]["database"] for i in source])
    report: dict = {}
    if cfg.features.weights == "random":
        report["warning"] = RANDOM_WEIGHTS_WARNING
    configured = set(cfg.label_to_class)
    seen = {label for r in records for label in r["labels"]}
    report.update(
        {
            "config_name": cfg.name,
            "code_version": ecgpipe.__version__,
            "n_segments": int(len(y)),
            "n_candidates": dataset["n_candidates"],
            "class_counts": {c: int((y == i).sum()) for i, c in enumerate(cfg.class_names)},
            "class_counts_by_database": {
                c: {db: int(((y == i) & (dbs == db)).sum()) for db in cfg.databases} for i, c in enumerate(cfg.class_names)
            },
            "subjects_per_class": {c: int(len(set(subjects[y == i]))) for i, c in enumerate(cfg.class_names)},
            "n_subjects": int(len(set(subjects))),
            "n_records_used": int(len(set(source.tolist()))),
            "databases": list(cfg.databases),
            "spectrogram_shape": list(spec_shape),
            "backbone": cfg.features.backbone,
            "layer": layer,
            "feature_width": int(width),
            "weights": weights_source,
            "classifier": f"StandardScaler + SVC(kernel={cfg.classifier.kernel}, C={cfg.classifier.C}, gamma={cfg.classifier.gamma})",
            "protocols": protocols,
            "skipped_records": skipped,
            "unmatched_labels": sorted(configured - seen),
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

    # The server is Prefect's own temporary one (same as it would start itself); it stops at interpreter exit, after
    # Prefect has flushed its log and event queues to it.
    server = SubprocessASGIServer()
    server.start(timeout=int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")))
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        os.environ.pop("PREFECT_API_URL", None)


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
            "local_directory": str(Path(out_dir).resolve() / ".dask"),
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
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    import distributed  # noqa: F401  (its import sets up its loggers; quieten them afterwards)

    logging.getLogger("distributed").setLevel(logging.WARNING)  # cluster start/stop chatter hides the progress lines
    with prefect_api():
        runner = task_runner(cfg, out_dir, scheduler)
        return ecg_pipeline.with_options(task_runner=runner)(
            config=cfg.model_dump(mode="json"), data_dir=str(data_dir) if data_dir else None, out_dir=str(out_dir), strict=strict
        )
