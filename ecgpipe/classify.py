"""Cross-validated classification of feature vectors, under two protocols side by side.

* ``stratified_10fold`` -- the paper's protocol: stratified k-fold over segments. Segments of one patient land in both
  training and test folds, so this measures recognising *known* patients' rhythms (optimistic).
* ``grouped_by_subject`` -- stratified group k-fold with every subject's segments in exactly one fold: no patient is
  in both training and test data. This is the number to expect on new patients.

Metrics are computed on the pooled out-of-fold predictions (so the confusion matrix and accuracy agree exactly), and
per fold (mean and std in the report).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ecgpipe.config import ClassifierSettings, CVSettings

PROTOCOLS = ("stratified_10fold", "grouped_by_subject")


def build_classifier(settings: ClassifierSettings) -> Pipeline:
    return Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "svc",
                # a larger kernel cache only makes fitting faster (scikit-learn's default is 200 MB)
                SVC(
                    kernel=settings.kernel,
                    C=settings.C,
                    gamma=settings.gamma,
                    class_weight=settings.class_weight,
                    cache_size=1000,
                ),
            ),
        ]
    )


def make_splits(protocol: str, y: np.ndarray, groups: np.ndarray, cv: CVSettings) -> tuple[list, str]:
    """Train/test index pairs for a protocol, and a note when fewer folds than asked were possible."""
    note = ""
    if protocol == "stratified_10fold":
        min_class = np.bincount(y).min() if len(y) else 0
        k = min(cv.n_splits, int(min_class))
        if k < 2:
            raise ValueError(f"stratified CV needs at least 2 segments in every class (smallest class has {min_class})")
        if k < cv.n_splits:
            note = f"{k} folds (the smallest class has {min_class} segments)"
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=cv.seed)
        return list(splitter.split(np.zeros(len(y)), y)), note
    if protocol == "grouped_by_subject":
        n_groups = len(np.unique(groups))
        k = min(cv.n_splits, n_groups)
        if k < 2:
            raise ValueError(f"grouped CV needs at least 2 subjects, got {n_groups}")
        if k < cv.n_splits:
            note = f"{k} folds (only {n_groups} subjects)"
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=cv.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "least populated class has only N members"
            return list(splitter.split(np.zeros(len(y)), y, groups)), note
    raise ValueError(f"cv.protocols: unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")


def fit_predict(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, classifier: ClassifierSettings) -> np.ndarray:
    """Fit the classifier on one fold's training rows and predict its test rows."""
    return build_classifier(classifier).fit(X[train], y[train]).predict(X[test])


def summarize_protocol(
    y: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, splits: list, class_names: list[str], note: str = ""
) -> dict:
    """JSON-ready metrics of out-of-fold predictions: pooled, per class, per fold, and the confusion matrix."""
    if (y_pred < 0).any():
        raise ValueError("some segments were in no test fold")
    labels = np.arange(len(class_names))
    folds = []
    for i, (train, test) in enumerate(splits):
        folds.append(
            {
                "fold": i,
                "n_train": int(len(train)),
                "n_test": int(len(test)),
                "test_subjects": int(len(np.unique(groups[test]))),
                "accuracy": float(accuracy_score(y[test], y_pred[test])),
                "macro_f1": float(f1_score(y[test], y_pred[test], labels=labels, average="macro", zero_division=0)),
            }
        )
    precision, recall, f1, support = precision_recall_fscore_support(y, y_pred, labels=labels, zero_division=0)
    fold_acc = np.array([f["accuracy"] for f in folds])
    fold_f1 = np.array([f["macro_f1"] for f in folds])
    return {
        "n_folds": len(splits),
        "note": note,
        "accuracy": float(accuracy_score(y, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, y_pred)),
        "macro_f1": float(f1_score(y, y_pred, labels=labels, average="macro", zero_division=0)),
        "accuracy_fold_mean": float(fold_acc.mean()),
        "accuracy_fold_std": float(fold_acc.std()),
        "macro_f1_fold_mean": float(fold_f1.mean()),
        "macro_f1_fold_std": float(fold_f1.std()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y, y_pred, labels=labels).tolist(),
        "folds": folds,
    }


def evaluate_protocol(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    class_names: list[str],
    protocol: str,
    classifier: ClassifierSettings,
    cv: CVSettings,
) -> dict:
    """Run one protocol in this process (the flow runs the folds as parallel tasks instead)."""
    splits, note = make_splits(protocol, y, groups, cv)
    y_pred = np.full_like(y, -1)
    for train, test in splits:
        y_pred[test] = fit_predict(X, y, train, test, classifier)
    return summarize_protocol(y, y_pred, groups, splits, class_names, note)
