"""Per-record results of a database labelled per record (a CSV: CinC 2017): each record's windows vote (or their
mean class probability decides), and the votes are scored as one answer per record, with the endpoints' intervals
over the records' subjects.

Pure functions: no Prefect, no Dask, no Zarr.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from ecgpipe.aggregate import record_votes
from ecgpipe.classifier_settings import EndpointSettings
from ecgpipe.classify import macro_f1
from ecgpipe.endpoints import endpoint_results, one_vs_rest_specificity
from ecgpipe.results import RecordLevel, RecordOutcomes

MAJORITY_VOTE = "majority vote of the record's segment predictions; ties go to the class listed first"
MEAN_PROBABILITY = "argmax of the mean class probability of the record's segments"


def record_level_summary(y, y_pred, records, class_names: list[str], test_fold: np.ndarray | None = None,
                         endpoints: dict[str, EndpointSettings] | None = None, rule: str | None = None,
                         y_proba: np.ndarray | None = None, subjects: np.ndarray | None = None) -> RecordLevel:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of per-record majority votes
    (CSV-labelled databases), and every record's out-of-fold outcome (``test_fold``: the outer fold that tested
    each segment). ``subjects`` (each segment's): the endpoints' intervals resample them, not the records."""
    names, true, voted, shares = record_votes(y, y_pred, records, len(class_names), y_proba)
    subject_of = dict(zip(np.asarray(records).tolist(), np.asarray(subjects if subjects is not None else records).tolist()))
    rule = rule or (MEAN_PROBABILITY if y_proba is not None else MAJORITY_VOTE)
    labels = np.arange(len(class_names))
    precision, recall, f1, support = (precision_recall_fscore_support(true, voted, labels=labels, zero_division=0) if names
                                      else (None,) * 4)  # no record scored (a leave-one-database-out fold's classes)
    cm = confusion_matrix(true, voted, labels=labels) if names else np.zeros((0, 0), dtype=np.int64)
    specificity = one_vs_rest_specificity(cm)
    outcomes = RecordOutcomes(classes=list(class_names), record=np.array(names, dtype=object),
                              subject=np.array([subject_of[n] for n in names], dtype=object), label=true, predicted=voted,
                              # Python's round of each share, as stored before 0.18.0 (numpy's scales: 1/160 -> 0.0062)
                              votes=np.array([[round(v, 4) for v in row] for row in shares.tolist()]).reshape(shares.shape),
                              folds=record_folds(names, records, y_pred, test_fold)) if names else None
    return RecordLevel.model_validate({
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i]), "specificity": specificity[i]} for i, c in enumerate(class_names)} if names else {},
        "endpoints": ({k: v.to_json() for k, v in endpoint_results(true, voted, np.array([subject_of[n] for n in names]),
                                                                      class_names, endpoints).items()}
                      if names and endpoints else {}),
        "records": outcomes,
        "rule": rule,
        "n_records": len(names),
        "accuracy": float(accuracy_score(true, voted)) if names else None,
        "macro_f1": macro_f1(true, voted, len(class_names)) if names else None,
        "confusion_matrix": cm.tolist(),
    })


def record_folds(names: list[str], records: np.ndarray, y_pred: np.ndarray, test_fold: np.ndarray | None) -> np.ndarray:
    """(len(names), widest) the outer folds that tested each named record's scored segments, padded with -1; no
    column without ``test_fold``."""
    if test_fold is None or not len(names):
        return np.zeros((len(names), 0), dtype=np.int16)
    scored = np.asarray(y_pred) >= 0
    index = {name: k for k, name in enumerate(names)}
    row = np.array([index.get(r, -1) for r in np.asarray(records)[scored].tolist()], dtype=np.int64)
    pairs = np.unique(np.stack([row, np.asarray(test_fold)[scored]], axis=1)[row >= 0], axis=0)  # (record, fold), sorted
    width = int(np.bincount(pairs[:, 0], minlength=len(names)).max()) if len(pairs) else 0
    out = np.full((len(names), width), -1, dtype=np.int16)
    starts = np.searchsorted(pairs[:, 0], np.arange(len(names)))
    out[pairs[:, 0], np.arange(len(pairs)) - starts[pairs[:, 0]]] = pairs[:, 1]
    return out
