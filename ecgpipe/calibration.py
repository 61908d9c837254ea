"""Probability calibration whose folds keep a subject's rows together, as the grouped protocols do."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedGroupKFold


def grouped_calibration_folds(y: np.ndarray, groups: np.ndarray, n_splits: int) -> list | None:
    """Folds over subjects for the out-of-fold decision values that Platt scaling learns from, or None when the rows
    cannot be split so (a class held by fewer than two subjects, or a fold whose training rows miss a class)."""
    y, groups = np.asarray(y), np.asarray(groups)
    k = min(n_splits, min(len(np.unique(groups[y == c])) for c in np.unique(y)))
    if k < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        folds = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=0).split(np.zeros(len(y)), y, groups))
    n_classes = len(np.unique(y))
    return folds if all(len(np.unique(y[train])) == n_classes for train, _ in folds) else None


class SubjectCalibratedClassifier(CalibratedClassifierCV):
    """scikit-learn's ``CalibratedClassifierCV`` (sigmoid, one model on all rows) that, given each row's subject as
    ``groups``, learns the sigmoid from decision values of models that never saw that row's subject. Row-wise folds
    put a patient's other windows on the training side, so the sigmoid learns from decision values on known patients,
    unlike those the new patients of a grouped protocol get; the folds follow the protocol as the inner CV's do.
    Without ``groups`` (the paper's protocol, where patients are shared anyway), when the classes' subjects are too
    few to split, or with a ``cv`` that is not a number of folds, it is ``CalibratedClassifierCV`` as configured.
    After fitting, ``calibration_folds_`` says which folds the sigmoid learnt from: 'subjects' or 'rows'."""

    def fit(self, X, y, sample_weight=None, groups=None, **fit_params):
        n_splits = 5 if self.cv is None else self.cv  # scikit-learn's default for cv=None
        folds = None
        if groups is not None and isinstance(n_splits, int | np.integer):
            folds = grouped_calibration_folds(y, groups, int(n_splits))
        if folds is None:
            super().fit(X, y, sample_weight=sample_weight, **fit_params)
            self.calibration_folds_ = "rows"
            return self
        configured, self.cv = self.cv, folds
        try:
            super().fit(X, y, sample_weight=sample_weight, **fit_params)
        finally:
            self.cv = configured  # the parameter stays what the settings asked for (clone and get_params read it)
        self.calibration_folds_ = "subjects"
        return self


def rowwise_calibration(model, groups) -> dict:
    """``{"calibration_folds": "rows"}`` when a grouped fit's (``groups`` given) calibration fell back to row-wise
    folds, its classes' subjects too few to split, for the report to say so; else empty. ``model``: a fitted
    classifier or a Pipeline ending in one."""
    clf = model[-1] if hasattr(model, "steps") else model
    return {"calibration_folds": "rows"} if groups is not None and getattr(clf, "calibration_folds_", None) == "rows" else {}
