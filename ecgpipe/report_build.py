"""The report of a run, assembled from its stages' results: what ``report.json`` holds, and the example figure.
Rendering it (Markdown, HTML, confusion PNGs) is ``ecgpipe.report``."""

from __future__ import annotations

import hashlib

import numpy as np

import ecgpipe
from ecgpipe import store as zs
from ecgpipe.compare import NotPaired, compare_confusions, paired_comparison, record_confusions
from ecgpipe.config import FeatureSettings, PipelineConfig
from ecgpipe.environment import software_versions
from ecgpipe.report_tables import RANDOM_WEIGHTS_WARNING
from ecgpipe.results import ComparisonEntry, MetricDifference, Report
from ecgpipe.stages.classification import ComparisonRow, selects_by_records
from ecgpipe.stages.segments import RecordSummary
from ecgpipe.stages.table import SegmentTable
from ecgpipe.store import Layout

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "accuracy_fold_std", "balanced_accuracy_fold_std", "macro_f1_fold_std")


def example_spectrograms(store: str, spec_array: str, cfg: PipelineConfig, per_class: int = 3) -> str:
    """The report's figure of a few stored spectrograms per class (the first rows of each class)."""
    from ecgpipe.report_html import example_spectrograms_figure

    y = zs.read_array(store, Layout.segment("class_index"))
    spec = zs.open_array(f"{store}/{Layout.data(spec_array)}", mode="r")
    freqs = np.asarray(spec.attrs["frequencies_hz"])
    rows = {c: np.flatnonzero(y == i)[:per_class] for i, c in enumerate(cfg.class_names)}
    # with two leads a row is (n_leads, F, T): the figure shows the first lead
    examples = {c: spec.get_orthogonal_selection((r,))[:, 0] if spec.ndim == 4 else spec.get_orthogonal_selection((r,))
                for c, r in rows.items()}
    return example_spectrograms_figure(examples, freqs, cfg.segments.length_s)


def comparison_summary(rows: list[ComparisonRow], best: int) -> list[ComparisonEntry]:
    """The comparison table: per row its extractor, classifier and headline metrics of every protocol."""
    table = []
    for i, row in enumerate(rows):
        attrs, clf = row.extractor.attrs, row.cfg.classifier
        # an untrained backbone next to its pretrained twin (a sweep measuring what transfer buys) must not look alike
        untrained = " (random weights)" if row.cfg.features.weights == "random" else ""
        # and rows of a sweep over input sizes must say which is which
        size = row.cfg.features.image_size
        sized = f" @{size} px" if size != FeatureSettings.model_fields["image_size"].default else ""
        table.append(ComparisonEntry(
            backbone=attrs["backbone"] + sized + untrained if clf.inputs != "rhythm" else "-",
            layer=attrs["layer"] if clf.inputs != "rhythm" else "-",
            classifier=row.label,
            features_array=row.extractor.data,
            best=i == best,
            protocols={p: {**{k: getattr(m, k) for k in HEADLINE}, **record_headline(m)} for p, m in row.protocols.items()},
            n_folds={p: m.n_folds for p, m in row.protocols.items()},
            # the inner CV's choice per outer fold (tuned classifiers only)
            chosen={p: [f.chosen for f in m.folds if f.chosen] for p, m in row.protocols.items() if any(f.chosen for f in m.folds)},
            versus_best={} if i == best else versus(row, rows[best]),
        ))
    return table


def versus(row: ComparisonRow, best: ComparisonRow) -> dict[str, MetricDifference]:
    """Per protocol, ``row``'s macro-F1 minus the best row's with its paired interval over subjects: is the best row's
    lead more than chance? On the metric the best row was chosen by: record-level macro-F1 for datasets labelled per
    record (every row, window- or record-level, gives each record one class), else window macro-F1, where protocols
    on which the two were not scored on the same rows (a record-level classifier beside window-level ones) are left
    out."""
    out = {}
    by_records = selects_by_records(row.cfg)
    for protocol, result in row.protocols.items():
        other = best.protocols.get(protocol)
        names = list(result.per_class)  # the class names the results were scored with (in class order)
        labels = (row.label, best.label)
        try:
            if by_records and other is not None and result.per_record and other.per_record:
                comparison = compare_confusions(record_confusions(result.per_record, names), record_confusions(other.per_record, names), names,
                                                labels=labels, n_boot=1000, level="record")
            elif other is None or other.level != result.level:
                continue
            else:
                comparison = paired_comparison(result, other, names, labels=labels, n_boot=1000)
        except NotPaired:
            continue
        out[protocol] = comparison.metric("macro_f1")
    return out


def record_headline(result) -> dict[str, float]:
    """Record-level accuracy and macro-F1 of a protocol result, when it has them (CSV-labelled datasets)."""
    r = result.per_record
    if r is None or r.macro_f1 is None:
        return {}
    return {"record_accuracy": r.accuracy, "record_macro_f1": r.macro_f1}


def features_description(cfg: PipelineConfig, feat_attrs: dict) -> str:
    """What the best row's classifier sees, in words (a rhythm-only row uses no CNN at all)."""
    cnn = f"{feat_attrs['backbone']} layer {feat_attrs['layer']} ({feat_attrs['width']} values, weights: {feat_attrs['weights']})"
    rr = cfg.rhythm_description
    return {"cnn": f"Features: {cnn}", "rhythm": f"Features: {rr} (no CNN)", "cnn+rhythm": f"Features: {cnn} + {rr}"}[cfg.classifier.inputs]


# Why a classifier may call everything one class, by kind: what to look at first
_ONE_CLASS_HINTS = {
    "hgb": "too few training rows for its settings? (min_samples_leaf: more records or a smaller value)",
    "svc": "classes of very different sizes? (classifier.class_weight = \"balanced\"; sampling.per_class)",
}


def one_class_warning(protocols: dict, class_names: list[str], kind: str = "svc") -> str:
    """A warning when a protocol's out-of-fold predictions are all one class while the truth holds several: nothing
    was learnt, which a user reading only the accuracy may miss (e.g. gradient boosting's ``min_samples_leaf`` above
    the number of training rows per class, so its trees never split; an SVM on a 10:1 class imbalance). Folds that
    trained on one class only (a pilot's few patients) are named too: their protocol's numbers say little."""
    collapsed, lone = [], []
    for name, result in protocols.items():
        cm = np.asarray(result.confusion_matrix)
        called = np.flatnonzero(cm.sum(axis=0))
        if len(called) == 1 and np.count_nonzero(cm.sum(axis=1)) > 1:
            collapsed.append(f"{name} (every {result.level} called {class_names[called[0]]})")
        if "train on one class only" in (getattr(result, "note", "") or ""):
            lone.append(name)
    parts = []
    if collapsed:
        parts.append("WARNING: the classifier predicted one class for everything under " + ", ".join(collapsed)
                     + ": nothing was learnt. " + _ONE_CLASS_HINTS.get(kind, _ONE_CLASS_HINTS["svc"]).capitalize())
    if lone:
        parts.append("WARNING: under " + ", ".join(lone) + " some folds trained on one class only (too few subjects "
                     "per class; the report's notes name them): those numbers say little")
    return " ".join(parts)


def record_accounting(records: list[RecordSummary], skipped: list[dict], n_planned: int, n_absent: int = 0,
                      n_unlisted: int = 0, max_records: int | None = None) -> dict[str, int]:
    """Every record of the run, once: used (with windows), without windows by reason, failed (named in the report),
    and absent (listed by a labels CSV, no file in the folder; ``n_planned`` includes them). Beside them, not in the
    run: records whose files the labels CSV does not list (``unlisted``), and ``max_records`` of a pilot's sample."""
    without = [r for r in records if not r.n_windows]
    reason = lambda r: (r.no_window_reason or "").split(" ", 1)[0]  # noqa: E731
    counts = {
        "records": n_planned,
        "used": sum(1 for r in records if r.n_windows),
        "windows": int(sum(r.n_windows for r in records)),
        "excluded_label": sum(1 for r in without if reason(r) == "label(s)"),
        "too_short": sum(1 for r in without if reason(r) == "shorter"),
        "no_window_of_a_class": sum(1 for r in without if reason(r) == "no"),
        "failed": len(skipped),
        "absent": n_absent,
        "unlisted": n_unlisted,
    }
    return counts | ({"max_records_per_database": max_records} if max_records else {})


def capped_pca_warning(rows: list[ComparisonRow]) -> str:
    """Rows whose PCA kept fewer components than asked in some fold (fewer training rows than ``pca``): their numbers
    are not those of the configured classifier."""
    capped = []
    for row in rows:
        kept = [f.chosen["pca_components"] for m in row.protocols.values() for f in m.folds if "pca_components" in f.chosen]
        if kept:
            capped.append(f"{row.label} ({min(kept)} of {row.cfg.classifier.pca} in {len(kept)} fold(s))")
    if not capped:
        return ""
    return ("PCA kept fewer components than asked, the folds having fewer training rows: " + "; ".join(capped)
            + ". More records (or a smaller classifier.pca) give the configured classifier.")


def rowwise_calibration_warning(rows: list[ComparisonRow]) -> str:
    """Rows whose probability calibration, under a grouped protocol, learnt from row-wise folds in some fold (its
    classes' patients too few to split): their probabilities saw known patients' decision values."""
    fell_back = [f"{row.label} ({protocol}: {n} of {len(m.folds)} folds)" for row in rows for protocol, m in row.protocols.items()
                 if (n := sum(f.chosen.get("calibration_folds") == "rows" for f in m.folds))]
    if not fell_back:
        return ""
    return ("Probability calibration learnt from row-wise folds, its classes' patients too few to split by patient: "
            + "; ".join(fell_back) + ". Those folds' probabilities (and the record rule built on them) lean optimistic.")


def failed_rows_warning(failed_rows) -> str:
    if not failed_rows:
        return ""
    return (f"{len(failed_rows)} classifier row(s) failed and are not in the comparison: "
            + "; ".join(f"{f['row']} ({f['error']})" for f in failed_rows[:3]) + (" ..." if len(failed_rows) > 3 else "")
            + ". A rerun computes only these rows.")


def windows_digest(table: SegmentTable, y: np.ndarray) -> str:
    """sha256 of which windows were scored and their classes, whatever their row order: (record, start, class) of
    every window, records by name. Two runs' window-level results pair (``ecgpipe compare``) only when theirs agree:
    equal counts per patient and class are not the same windows (another seed's class caps, another stride)."""
    names = np.asarray(table.sources)
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(names, kind="stable")] = np.arange(len(names))
    windows = np.stack([rank[table.source], np.asarray(table.start, dtype=np.int64), np.asarray(y, dtype=np.int64)], axis=1)
    windows = windows[np.lexsort(windows.T[::-1])]
    digest = hashlib.sha256("\n".join(sorted(names.tolist())).encode())
    digest.update(windows.astype("<i8").tobytes())
    return digest.hexdigest()


def build_report(cfg: PipelineConfig, store: str, records: list[RecordSummary], skipped: list[dict],
                 segment_table: SegmentTable, spec_shape, rows: list[ComparisonRow], best: int,
                 absent: list[str], accounting: dict[str, int], failed_rows: list[dict] = (), unlisted: list[str] = ()) -> Report:
    """The run's report from its stages' outputs; ``accounting`` is :func:`record_accounting` of the records, made by
    the flow as soon as they are read (a run that fails later still records it in run.json); ``failed_rows``: the
    classifier rows left out of the comparison because a fold failed, with the error."""
    feat_attrs, best_cfg = rows[best].extractor.attrs, rows[best].cfg
    y = zs.read_array(store, Layout.segment("class_index"))
    t = segment_table
    subjects = np.array([t.subjects[name] for name in t.sources])[t.source]
    dbs = np.array([name.split("/", 1)[0] for name in t.sources])[t.source]
    seen = {label for r in records for label in r.labels}
    return Report.model_validate(
        {
            # the detailed sections are the best row's
            "warning": " ".join(w for w in [RANDOM_WEIGHTS_WARNING if best_cfg.features.weights == "random" else "",
                                            one_class_warning(rows[best].protocols, cfg.class_names, best_cfg.classifier.kind),
                                            capped_pca_warning(rows), rowwise_calibration_warning(rows), failed_rows_warning(failed_rows)] if w) or None,
            "failed_rows": list(failed_rows),
            "config_name": cfg.name,
            "code_version": ecgpipe.__version__,
            "software": software_versions(),
            "n_segments": int(len(y)),
            "windows_digest": windows_digest(t, y),
            "n_candidates": segment_table.n_candidates,
            "class_counts": {c: int((y == i).sum()) for i, c in enumerate(cfg.class_names)},
            "class_counts_by_database": {
                c: {db: int(((y == i) & (dbs == db)).sum()) for db in cfg.databases} for i, c in enumerate(cfg.class_names)
            },
            "subjects_per_class": {c: int(len(set(subjects[y == i]))) for i, c in enumerate(cfg.class_names)},
            "n_subjects": int(len(set(subjects))),
            # datasets labelled per record (PhysioNet publishes no patient ids for CinC 2017): one subject per record
            "subject_word": cfg.subject_word,
            "n_records_used": int(len(np.unique(t.source))),
            "databases": list(cfg.databases),
            "spectrogram_shape": list(spec_shape),
            "backbone": feat_attrs["backbone"],
            "layer": feat_attrs["layer"],
            "feature_width": int(feat_attrs["width"]),
            "weights": feat_attrs["weights"],
            "features_array": rows[best].extractor.data,
            "classifier": best_cfg.classifier_label,
            "features_description": features_description(best_cfg, feat_attrs),
            # the rhythm block in words, for the comparison table's rhythm-only rows
            "rhythm_description": cfg.rhythm_description if cfg.rhythm.enabled else None,
            "selected_by": (f"highest {'record-level ' if selects_by_records(cfg) else ''}macro-F1 under "
                            f"{cfg.selection_protocol} among {len(rows)} rows"),
            "protocols": rows[best].protocols,
            "comparison": comparison_summary(rows, best),
            "skipped_records": skipped,
            "records_without_windows": [{"record": r.name, "reason": r.no_window_reason} for r in records if not r.n_windows],
            "records_with_flat_leads": [{"record": r.name, "flat": r.flat_windows, "windows": r.n_windows}
                                        for r in records if r.flat_windows],
            "records_read_with_warnings": [{"record": r.name, "warning": w} for r in records for w in r.read_warnings],
            "record_accounting": accounting,
            "absent_records": list(absent),
            "unlisted_records": list(unlisted),
            "unmatched_labels": sorted(set(cfg.label_to_class) - seen),
            "config": cfg.model_dump(mode="json"),
        }
    )
