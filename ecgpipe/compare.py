"""Is one classifier better than another on the same windows, or is the gain chance? A paired comparison over subjects.

Two rows of a sweep, or the best rows of two runs of the same segments (``ecgpipe compare RUN_A RUN_B``), were each
scored on every window out of fold. Their macro-F1 differ by 0.01: is that a gain? Patients differ far more than
classifiers do, and both classifiers met the same patients, so the honest interval is *paired*: each bootstrap draw
resamples subjects with replacement (as the report's intervals do) and scores both classifiers on the drawn subjects,
so that what the two share (an easy or a hard patient) cancels in the difference. A difference whose 95 % interval
holds 0 is not a gain, whatever the point estimates say.

The unit of work is a protocol's per-subject outcome (``ProtocolResult.per_subject``: for each subject and annotated
class, what its windows were called), which every report stores: summed over drawn subjects it is that draw's
confusion matrix. Both results must hold the same subjects with the same windows of each class (the same segments
table); otherwise the comparison is refused, naming the first subject that differs. Two models' ``ecgpipe evaluate``
outputs on the same external records of a CSV-labelled dataset compare the same way, each record its own unit. Runs
that scored the endpoints over whole recordings (``[recordings] score``) also compare each endpoint as ``ecgpipe
predict`` calls it: per subject, its recordings' windows called positive or negative against their annotation.

The maths (``confusion_metrics``, ``compare_confusions``) are pure numpy; ``read_report`` and ``compare_runs`` read
the runs' JSON files. No Prefect, no Dask, no Zarr.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecgpipe.classifier_settings import EndpointSettings
from ecgpipe.endpoints import percentile_interval
from ecgpipe.errors import EcgpipeError, UnreadableFile
from ecgpipe.location import Location
from ecgpipe.results import (
    MetricDifference,
    PairedComparison,
    ProtocolResult,
    RecordLevel,
    RunComparison,
    ScopeComparison,
)
from ecgpipe.status import last_run


class NotPaired(EcgpipeError, ValueError):
    """Two results that were not scored on the same windows of the same subjects cannot be compared pairwise."""


@dataclass(frozen=True)
class SubjectConfusions:
    """Per subject, its windows' confusion matrix (annotated class x predicted class), subjects sorted."""

    subjects: list[str]
    counts: np.ndarray  # (n_subjects, n_classes, n_classes)

    def support(self) -> dict[tuple[str, int], int]:
        """(subject, class index) -> windows, for the classes the subject has."""
        per_class = self.counts.sum(axis=2)
        return {(s, c): int(per_class[i, c]) for i, s in enumerate(self.subjects) for c in np.flatnonzero(per_class[i])}


def subject_confusions(result: ProtocolResult, class_names: list[str]) -> SubjectConfusions:
    """A protocol result's per-subject confusion matrices, from its ``per_subject`` outcomes."""
    outcomes = result.per_subject
    index = np.array([class_names.index(c) for c in outcomes.classes], dtype=np.int64)  # its classes -> class_names
    subjects, row = np.unique(outcomes.subject.astype(str), return_inverse=True)
    counts = np.zeros((len(subjects), len(class_names), len(class_names)), dtype=np.int64)
    if len(outcomes):
        counts[row.ravel()[:, None], index[outcomes.class_index][:, None], index[None, :]] += outcomes.called
    return SubjectConfusions(subjects.tolist(), counts)


def confusion_metrics(cm: np.ndarray, class_names: list[str], endpoints: dict[str, EndpointSettings]) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, macro-F1 and each endpoint's sensitivity and specificity of confusion matrices
    ``cm`` (..., k, k), over the classes that have windows in each matrix (as the report's intervals count them).
    NaN where a metric is undefined (an endpoint without positives in a draw)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp, support, predicted = np.diagonal(cm, axis1=-2, axis2=-1), cm.sum(-1), cm.sum(-2)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, tp / support, 0.0)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
        n_present = present.sum(-1)
        out = {
            "accuracy": tp.sum(-1) / cm.sum((-2, -1)),
            "balanced_accuracy": recall.sum(-1) / n_present,
            "macro_f1": np.where(present, f1, 0.0).sum(-1) / n_present,
        }
        for name, endpoint in endpoints.items():
            positive = np.isin(class_names, endpoint.classes)
            called_positive = cm[..., positive].sum(-1)  # per annotated class: windows called one of the positives
            tp_e, pos = called_positive[..., positive].sum(-1), support[..., positive].sum(-1)
            fp_e, neg = called_positive[..., ~positive].sum(-1), support[..., ~positive].sum(-1)
            out[f"{name} sensitivity"] = np.where(pos > 0, tp_e / pos, np.nan)
            out[f"{name} specificity"] = np.where(neg > 0, (neg - fp_e) / neg, np.nan)
    return out


def check_paired(a: SubjectConfusions, b: SubjectConfusions, class_names: list[str], labels: tuple[str, str],
                 unit: str = "windows") -> None:
    """Refuse two results that were not scored on the same windows: other subjects, or other windows per class."""
    support_a, support_b = a.support(), b.support()
    if support_a == support_b:
        return
    for key in sorted(set(support_a) | set(support_b)):
        na, nb = support_a.get(key, 0), support_b.get(key, 0)
        if na != nb:
            subject, c = key
            raise NotPaired(f"{labels[0]} and {labels[1]} were not scored on the same windows: subject {subject} has "
                            f"{na} {class_names[c]} {unit} in {labels[0]} and {nb} in {labels[1]}. A paired comparison "
                            "needs the same segments (same data, classes, segment and selection settings) or, for "
                            "evaluations, the same records with the same labels")


def one_answer_per_subject(outcomes: list[tuple[str, str, str, str]], class_names: list[str]) -> SubjectConfusions:
    """(subject, record, label, answer) outcomes as confusion matrices per subject (its records' answers summed),
    subjects sorted: the unit of the bootstrap, as the report's per-record intervals count them (a file from before
    0.4.0 names no subject: its records are their own)."""
    index = {name: i for i, name in enumerate(class_names)}
    subjects = sorted({subject or record for subject, record, _, _ in outcomes})
    row = {s: i for i, s in enumerate(subjects)}
    counts = np.zeros((len(subjects), len(class_names), len(class_names)), dtype=np.int64)
    for subject, record, label, answer in outcomes:
        counts[row[subject or record], index[label], index[answer]] += 1
    return SubjectConfusions(subjects, counts)


def record_confusions(records: RecordLevel, class_names: list[str]) -> SubjectConfusions:
    """Per record, its one outcome (label x the class its windows voted for) of a CSV-labelled dataset's record-level
    result."""
    outcomes = records.records
    if outcomes is None:
        return one_answer_per_subject([], class_names)
    return one_answer_per_subject(list(zip(outcomes.subject.tolist(), outcomes.record.tolist(), outcomes.labels(),
                                           outcomes.answers())), class_names)


def recording_confusions(records: list[dict], endpoint: str) -> SubjectConfusions:
    """Per subject, one endpoint's calls over its whole recordings as a two-class confusion matrix (annotated negative
    / positive x called negative / positive), from a report's ``recordings.records``; records without a call for the
    endpoint (their fold had no detector for it) are left out."""
    per_subject: dict[str, np.ndarray] = {}
    for record in records:
        tally = (record.get("endpoints") or {}).get(endpoint)
        if tally is None:
            continue
        pos, neg = tally["positive_windows"], tally["negative_windows"]
        # reports before 2026-12-04 stored the rates alone: a 4-decimal rate of a record's < 5000 windows gives the
        # count exactly
        tp = tally.get("true_positives", round((tally["sensitivity"] or 0.0) * pos))
        tn = tally.get("true_negatives", round((tally["specificity"] or 0.0) * neg))
        cm = per_subject.setdefault(record["subject"], np.zeros((2, 2), dtype=np.int64))
        cm += np.array([[tn, neg - tn], [pos - tp, tp]], dtype=np.int64)
    subjects = sorted(per_subject)
    return SubjectConfusions(subjects, np.stack([per_subject[s] for s in subjects]) if subjects
                             else np.zeros((0, 2, 2), dtype=np.int64))


def recording_comparison(records_a: list[dict], records_b: list[dict], endpoint: str, labels: tuple[str, str] = ("A", "B"),
                         n_boot: int = 2000, seed: int = 0) -> PairedComparison:
    """One endpoint of two runs over the same whole recordings, as predict calls it: balanced accuracy, sensitivity
    and specificity of the windows, paired over subjects."""
    names = ["negative", endpoint]
    both = compare_confusions(recording_confusions(records_a, endpoint), recording_confusions(records_b, endpoint), names,
                              {endpoint: EndpointSettings(classes=[endpoint])}, labels, n_boot, seed)
    kept = [d.model_copy(update={"metric": f"{endpoint} balanced accuracy"}) if d.metric == "balanced_accuracy" else d
            for d in both.differences if d.metric.startswith(f"{endpoint} ") or d.metric == "balanced_accuracy"]
    return both.model_copy(update={"differences": kept})


def paired_comparison(a: ProtocolResult, b: ProtocolResult, class_names: list[str],
                      endpoints: dict[str, EndpointSettings] | None = None, labels: tuple[str, str] = ("A", "B"),
                      n_boot: int = 2000, seed: int = 0) -> PairedComparison:
    """Each metric of ``a`` and ``b`` (one protocol's results), their difference (a - b) and its 95 % paired
    bootstrap interval over subjects, and the share of draws in which ``a`` scored higher."""
    return compare_confusions(subject_confusions(a, class_names), subject_confusions(b, class_names), class_names,
                              endpoints, labels, n_boot, seed, level=a.level)


def compare_confusions(conf_a: SubjectConfusions, conf_b: SubjectConfusions, class_names: list[str],
                       endpoints: dict[str, EndpointSettings] | None = None, labels: tuple[str, str] = ("A", "B"),
                       n_boot: int = 2000, seed: int = 0, level: str = "window") -> PairedComparison:
    """``paired_comparison`` of per-unit confusion matrices (subjects' windows, or records)."""
    endpoints = endpoints or {}
    check_paired(conf_a, conf_b, class_names, labels, "records" if level == "record" else "windows")
    n, k = len(conf_a.subjects), len(class_names)
    rng = np.random.default_rng(seed)
    flat_a, flat_b = conf_a.counts.reshape(n, k * k), conf_b.counts.reshape(n, k * k)
    drawn_a, drawn_b = np.empty((n_boot, k * k)), np.empty((n_boot, k * k))
    # draw d holds subject s weights[d, s] times; the same draws for both classifiers (that is the pairing). Draws
    # go in blocks of at most ~4 M weights, so that 100 000 records need 32 MB, not n_boot x n
    block = max(1, min(n_boot, 4_000_000 // max(n, 1)))
    for lo in range(0, n_boot, block):
        hi = min(n_boot, lo + block)
        weights = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(lo, hi)]).astype(np.float64)
        drawn_a[lo:hi], drawn_b[lo:hi] = weights @ flat_a, weights @ flat_b

    point_a = confusion_metrics(conf_a.counts.sum(0), class_names, endpoints)
    point_b = confusion_metrics(conf_b.counts.sum(0), class_names, endpoints)
    draws_a = confusion_metrics(drawn_a.reshape(n_boot, k, k), class_names, endpoints)
    draws_b = confusion_metrics(drawn_b.reshape(n_boot, k, k), class_names, endpoints)
    differences = []
    for metric in point_a:
        delta = draws_a[metric] - draws_b[metric]
        defined = np.isfinite(delta)
        va, vb = _finite(point_a[metric]), _finite(point_b[metric])
        differences.append(MetricDifference(
            metric=metric, a=va, b=vb, difference=None if va is None or vb is None else va - vb,
            ci95=percentile_interval(delta[defined]),
            a_better=float((delta[defined] > 0).mean()) if defined.any() else None,
        ))
    return PairedComparison(level=level, n_subjects=n, n_rows=int(conf_a.counts.sum()), n_boot=n_boot,
                            differences=differences)


def _finite(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


# ------------------------------------------------------------------------------------------------ two runs
@dataclass(frozen=True)
class FinishedRun:
    """What a comparison reads of a finished run's ``report.json`` (its best row's results under each protocol) or of
    an ``ecgpipe evaluate`` output's ``evaluation.json`` (a model's per-record answers on an external dataset)."""

    report: Path
    classifier: str
    class_names: list[str]
    endpoints: dict[str, EndpointSettings]
    protocols: dict[str, ProtocolResult]
    external: tuple[str, SubjectConfusions] | None = None  # evaluations: (dataset config, per-record outcomes)
    recordings: dict | None = None  # report.json's "recordings" (the endpoints over whole recordings), when scored
    windows_digest: str | None = None  # which windows the run scored (reports since 0.15.0)
    folds: dict | None = None  # what drew its folds: cv.seed and each protocol's number of folds


def _check_last_run_finished(folder: Path) -> None:
    """A run folder whose last run did not finish holds the report of an earlier run, perhaps of other settings: refused,
    unless that report is asked for by its file name."""
    status = last_run(Location(folder)).get("status")  # none (an evaluation's folder, a copied report): nothing to say
    if status not in (None, "completed") and not (folder / "report.json").is_file():
        raise UnreadableFile(f"{folder}: its last run is {status!r} (run.json) and no run there finished: it has no "
                             "report.json to compare; finish the run first")
    if status not in (None, "completed"):
        raise UnreadableFile(f"{folder}: its last run is {status!r} (run.json), so its report.json is an earlier run's, "
                             f"perhaps of other settings: finish the run, or give {folder / 'report.json'} to compare that report")


def read_report(run: str | Path) -> FinishedRun:
    """A finished run's ``report.json`` or an evaluation's ``evaluation.json`` (``run``: the output folder or the file
    itself), its results validated."""
    path = Path(run)
    if path.is_dir():
        _check_last_run_finished(path)
        path = path / "report.json" if (path / "report.json").is_file() or not (path / "evaluation.json").is_file() \
            else path / "evaluation.json"
    if not path.is_file():
        raise UnreadableFile(f"{path}: no report of a finished run here (give a run's or an evaluation's output folder, "
                             "or its report.json / evaluation.json)")
    try:
        doc = json.loads(path.read_text())
        if "dataset_classes" in doc:  # an ecgpipe evaluate output
            return _evaluation(path, doc)
        fields = set(ProtocolResult.model_fields)  # the written report adds file names (its confusion PNGs)
        protocols = {name: ProtocolResult.model_validate({k: v for k, v in p.items() if k in fields})
                     for name, p in doc["protocols"].items()}
        endpoints = {name: EndpointSettings.model_validate(e) for name, e in (doc["config"].get("endpoints") or {}).items()}
        cv = doc["config"].get("cv") or {}
        # the folds as drawn: the seed and each protocol's number of folds (n_splits is capped by the subjects)
        folds = {**({"seed": cv["seed"]} if "seed" in cv else {}),
                 **{f"{name} folds": p.get("n_folds") for name, p in doc["protocols"].items() if p.get("n_folds")}}
        return FinishedRun(path, doc["classifier"], list(doc["class_counts"]), endpoints, protocols,
                           recordings=doc.get("recordings"), windows_digest=doc.get("windows_digest"), folds=folds or None)
    except NotPaired:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as err:  # JSON and pydantic errors are ValueErrors
        raise UnreadableFile(f"{path}: not a readable ecgpipe report ({type(err).__name__}: {str(err)[:200]})") from None


def _evaluation(path: Path, doc: dict) -> FinishedRun:
    """An evaluation of a CSV-labelled dataset: each scored record's label and the dataset class its answer maps to
    (or "(unmapped)", the evaluation's last confusion column), each record its own unit."""
    result = doc["results"].get("records")
    if result is None:
        raise NotPaired(f"{path}: scored per window of rhythm-annotated records; `ecgpipe compare` pairs evaluations "
                        "of datasets labelled per record (CSV), whose every record's answer the evaluation lists")
    names = list(result["confusion_columns"])  # the dataset's classes, then the column of unmapped answers
    scored = [(row.get("subject", ""), row["record"], row["label"], row["predicted"])
              for row in doc["records"] if row.get("predicted")]
    endpoints = {name: EndpointSettings(classes=e["classes"]) for name, e in result["endpoints"].items()}
    model = f"model {doc['model']} ({doc['model_preset']})"
    return FinishedRun(path, model, names, endpoints, {},
                       external=(doc["dataset_config"], one_answer_per_subject(scored, names)))


def compare_runs(run_a: str | Path, run_b: str | Path, protocols: list[str] | None = None, n_boot: int = 2000,
                 seed: int = 0) -> RunComparison:
    """The best rows of two runs of the same segments, protocol by protocol: windows, and records' votes where the
    datasets are labelled per record; or two models' evaluations on the same external records. Endpoints: those
    both declare alike."""
    a, b = read_report(run_a), read_report(run_b)
    path_a, path_b, names_a = a.report, b.report, a.class_names
    if (a.external is None) != (b.external is None):
        raise NotPaired(f"{path_a} and {path_b}: one is a run's report, the other an evaluation; compare two of a kind")
    if a.class_names != b.class_names:
        raise NotPaired(f"{path_a} and {path_b} have other classes ({', '.join(a.class_names)} vs "
                        f"{', '.join(b.class_names)}): no paired comparison")
    endpoints = {name: e for name, e in a.endpoints.items()
                 if name in b.endpoints and sorted(b.endpoints[name].classes) == sorted(e.classes)}
    labels = (str(path_a.parent), str(path_b.parent))
    scopes, not_compared = [], []
    if a.external is not None:
        (dataset, ra), (_, rb) = a.external, b.external
        scopes.append(ScopeComparison(
            protocol=f"external: {dataset}", scored="records (each model's answer, mapped to the dataset's classes)",
            comparison=compare_confusions(ra, rb, names_a, endpoints, labels, n_boot, seed, level="record")))
        return RunComparison(a=labels[0], b=labels[1], a_classifier=a.classifier, b_classifier=b.classifier,
                             class_names=names_a, scopes=scopes)
    wanted = protocols or list(a.protocols)
    unknown = [p for p in wanted if p not in a.protocols and p not in b.protocols]
    if unknown:
        raise NotPaired(f"no protocol {', '.join(unknown)} in {path_a} or {path_b} "
                        f"(they have {', '.join(sorted(set(a.protocols) | set(b.protocols)))})")
    for protocol in wanted:
        if protocol not in a.protocols or protocol not in b.protocols:
            not_compared.append(f"{protocol}: only in {labels[0] if protocol in a.protocols else labels[1]}")
            continue
        pa, pb = a.protocols[protocol], b.protocols[protocol]
        if pa.level != pb.level:
            not_compared.append(f"{protocol}: one run scores {pa.level}s, the other {pb.level}s")
        elif pa.level == "window" and None not in (a.windows_digest, b.windows_digest) and a.windows_digest != b.windows_digest:
            # as many windows per patient and class is not the same windows: pairing them would be a fiction
            not_compared.append(f"{protocol}, windows: the runs scored other windows (their segment tables differ: "
                                "other records, segment settings or seed)")
        else:
            scopes.append(ScopeComparison(protocol=protocol, scored=f"{pa.level}s",
                                          comparison=paired_comparison(pa, pb, names_a, endpoints, labels, n_boot, seed)))
        if pa.per_record is not None and pb.per_record is not None and pa.level == "window" and pb.level == "window":
            ra, rb = record_confusions(pa.per_record, names_a), record_confusions(pb.per_record, names_a)
            scopes.append(ScopeComparison(
                protocol=protocol, scored="records (their windows' answer)",
                comparison=compare_confusions(ra, rb, names_a, endpoints, labels, n_boot, seed, level="record")))
    if a.recordings and b.recordings and not protocols:
        for name in endpoints:
            decisions = [f"{r['endpoints'][name]['width']} windows, penalty {r['endpoints'][name]['penalty']:g}"
                         for r in (a.recordings, b.recordings) if name in r["endpoints"]]
            if len(decisions) < 2:
                not_compared.append(f"whole recordings, {name}: scored in one run only")
                continue
            scored = f"{name} as predict calls it ({' / '.join(dict.fromkeys(decisions))}): every window of the recordings"
            scopes.append(ScopeComparison(
                protocol=f"whole recordings ({a.recordings['protocol']})", scored=scored,
                comparison=recording_comparison(a.recordings["records"], b.recordings["records"], name, labels, n_boot, seed)))
    elif bool(a.recordings) != bool(b.recordings) and not protocols:
        not_compared.append(f"whole recordings: scored in {labels[0] if a.recordings else labels[1]} only")
    if not scopes:
        raise NotPaired(f"{labels[0]} and {labels[1]}: nothing pairs: " + "; ".join(not_compared))
    notes = []
    shared = set(a.folds or {}) & set(b.folds or {})  # same windows, other folds: still paired, less clean
    if differ := ", ".join(f"{'cv.' if k == 'seed' else ''}{k} {a.folds[k]} vs {b.folds[k]}" for k in sorted(shared)
                           if a.folds[k] != b.folds[k]):
        notes.append(f"the runs drew other folds ({differ}): each A - B also holds the luck of the folds, which its "
                     "interval (subjects resampled, the fitted models fixed) does not cover; give both runs the same "
                     "cv settings for a clean comparison")
    return RunComparison(a=labels[0], b=labels[1], a_classifier=a.classifier, b_classifier=b.classifier,
                         class_names=names_a, scopes=scopes, not_compared=not_compared, notes=notes)


SMALL_SAMPLE = 10  # fewer subjects (or records) than this: the comparison says its intervals are a rough guide


def comparison_markdown(result: RunComparison) -> str:
    """The comparison as Markdown: one table per protocol and scope, A - B with its paired interval."""
    lines = [f"A: {result.a} ({result.a_classifier})", f"B: {result.b} ({result.b_classifier})",
             *(f"note: {note}" for note in result.notes)]
    for scope in result.scopes:
        c = scope.comparison
        per_record = c.level == "record" or scope.scored.startswith("records")
        unit = "subjects" if not per_record else "records" if c.n_subjects == c.n_rows else "patients"
        lines += ["", f"### {scope.protocol}, {scope.scored}: {c.n_rows} scored, paired bootstrap over {c.n_subjects} "
                      f"{unit} ({c.n_boot} draws)", "",
                  "| metric | A | B | A - B | 95 % CI of A - B | draws with A higher | verdict |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for d in c.differences:
            value = lambda v, sign="": "-" if v is None else f"{round(v, 4) + 0.0:{sign}.4f}"  # noqa: E731 (no "-0.0000")
            ci = "-" if d.ci95 is None else f"{value(d.ci95[0], '+')} to {value(d.ci95[1], '+')}"
            share = "-" if d.a_better is None else f"{d.a_better:.1%}"
            verdict = {"a higher": "A higher", "b higher": "B higher"}.get(d.verdict, d.verdict)
            lines.append(f"| {d.metric} | {value(d.a)} | {value(d.b)} | {value(d.difference, '+')} | {ci} | {share} "
                         f"| {verdict} |")
        if c.n_subjects < SMALL_SAMPLE:
            lines += ["", f"Only {c.n_subjects} {unit}: a bootstrap over so few understates the uncertainty; read the "
                          "verdicts as a rough guide, not a result."]
    lines += [f"not compared: {why}" for why in result.not_compared]
    return "\n".join(lines)
