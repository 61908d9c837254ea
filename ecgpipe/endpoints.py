"""Clinical endpoints of out-of-fold predictions: per-class sensitivity, specificity and PPV, and binary endpoints
declared in the config (``[endpoints] shockable = {classes = ["vt", "vf"]}``) with 95 % intervals over subjects.

A clinician asks "how many shockable rhythms does it miss, how often does it shock a rhythm that is not?", not
"what is the macro-F1": a binary endpoint pools its classes (VT and VF are both shockable, so VT called VF is no
error). Intervals resample *subjects* with replacement, as ``ecgpipe.classify.bootstrap_ci`` does.

Pure functions: no Prefect, no Dask, no Zarr.
"""

from __future__ import annotations

import numpy as np

from ecgpipe.config import EndpointSettings
from ecgpipe.results import EndpointResult, SubjectAverage


def binary_rates(cm: np.ndarray) -> dict[str, float | None]:
    """Sensitivity, specificity, PPV, NPV and balanced accuracy of a 2x2 confusion matrix [[TN, FP], [FN, TP]]
    (None where the denominator is 0)."""
    (tn, fp), (fn, tp) = cm
    ratio = lambda a, b: float(a / (a + b)) if a + b > 0 else None  # noqa: E731
    sens, spec = ratio(tp, fn), ratio(tn, fp)
    return {"sensitivity": sens, "specificity": spec, "ppv": ratio(tp, fp), "npv": ratio(tn, fn),
            "balanced_accuracy": None if sens is None or spec is None else (sens + spec) / 2}


def one_vs_rest_specificity(cm: np.ndarray) -> list[float | None]:
    """Per class of a multi-class confusion matrix: the share of the other classes' rows not predicted as it."""
    cm = np.asarray(cm)
    out = []
    for c in range(len(cm)):
        negatives = cm.sum() - cm[c].sum()
        out.append(float((negatives - (cm[:, c].sum() - cm[c, c])) / negatives) if negatives else None)
    return out


def percentile_interval(draws) -> list[float] | None:
    """The 2.5th and 97.5th percentiles of bootstrap draws (None when there are none)."""
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))] if len(draws) else None


def endpoint_result(y: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, class_names: list[str],
                    endpoint: EndpointSettings, n_boot: int = 1000, seed: int = 0) -> EndpointResult:
    """One binary endpoint of scored out-of-fold predictions, with 95 % bootstrap intervals over subjects; and per
    rhythm (class), the share of its segments the endpoint gets right, with its interval and goal."""
    positive = np.array([c in endpoint.classes for c in class_names])
    truth, called = positive[y].astype(np.int64), positive[y_pred].astype(np.int64)
    cells = truth * 2 + called
    cm = np.bincount(cells, minlength=4).reshape(2, 2)
    right = (truth == called).astype(np.float64)
    n_classes = len(class_names)
    subjects, subject_of = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"sensitivity": [], "specificity": [], "balanced_accuracy": []}
    class_draws = np.full((n_boot, n_classes), np.nan)
    own = _subject_rates(truth, called, subject_of, len(subjects))
    own_draws: dict[str, list[float]] = {name: [] for name in own}
    for b in range(n_boot):
        drawn_subjects = np.bincount(rng.integers(0, len(subjects), len(subjects)), minlength=len(subjects))
        weights = drawn_subjects[subject_of]
        for name, (held, rates) in own.items():
            if drawn_subjects[held].sum():
                own_draws[name].append(float(np.average(rates, weights=drawn_subjects[held])))
        rates = binary_rates(np.bincount(cells, weights=weights, minlength=4).reshape(2, 2))
        for name in draws:
            if rates[name] is not None:
                draws[name].append(rates[name])
        drawn = np.bincount(y, weights=weights, minlength=n_classes)
        with np.errstate(invalid="ignore", divide="ignore"):  # a class no drawn subject has: NaN, left out
            class_draws[b] = np.bincount(y, weights=weights * right, minlength=n_classes) / drawn
    # a rate measured on one subject has no interval: every draw repeats that subject, and a zero-width interval
    # would pass for certainty (a rhythm held by one patient, a pilot's few records)
    spread = {"sensitivity": _n_subjects(subject_of, truth == 1), "specificity": _n_subjects(subject_of, truth == 0)}
    spread["balanced_accuracy"] = min(spread.values())
    ci = {name: interval for name, v in draws.items() if spread[name] > 1 and (interval := percentile_interval(v))}
    counts = np.bincount(y, minlength=n_classes)
    shares = np.bincount(y, weights=right, minlength=n_classes) / np.maximum(counts, 1)  # as each draw, unweighted
    held_by = {c: _n_subjects(subject_of, y == c) for c in range(n_classes) if counts[c]}
    by_class = [{"name": name, "positive": bool(positive[c]), "n": int(counts[c]),
                 "rate": float(shares[c]), "goal": endpoint.class_goals.get(name), "subjects": held_by[c],
                 "ci95": percentile_interval(class_draws[:, c]) if held_by[c] > 1 else None}
                for c, name in enumerate(class_names) if counts[c]]
    return EndpointResult.model_validate({
        "classes": list(endpoint.classes),
        "positives": int(cm[1].sum()),
        "negatives": int(cm[0].sum()),
        **binary_rates(cm),
        "ci95": ci,
        "ci_method": f"bootstrap over {len(subjects)} subjects, {n_boot} resamples",
        "positive_subjects": spread["sensitivity"],
        "negative_subjects": spread["specificity"],
        "goal_sensitivity": endpoint.goal_sensitivity,
        "goal_specificity": endpoint.goal_specificity,
        "goal_source": endpoint.goal_source,
        "by_class": by_class,
        **{f"{name}_per_subject": SubjectAverage(mean=float(rates.mean()), lowest=float(rates.min()), subjects=len(rates),
                                                 ci95=percentile_interval(own_draws[name]) if len(rates) > 1 else None)
           for name, (_, rates) in own.items() if len(rates)},
    })


def _subject_rates(truth: np.ndarray, called: np.ndarray, subject_of: np.ndarray, n_subjects: int) -> dict:
    """Per rate ('sensitivity', 'specificity'): the subjects holding its windows (their indices) and each one's rate."""
    out = {}
    for name, side in (("sensitivity", 1), ("specificity", 0)):
        held = np.bincount(subject_of, weights=truth == side, minlength=n_subjects)
        right = np.bincount(subject_of, weights=(truth == side) & (called == side), minlength=n_subjects)
        has = np.flatnonzero(held)
        out[name] = (has, right[has] / held[has])
    return out


def _n_subjects(subject_of: np.ndarray, rows: np.ndarray) -> int:
    """How many subjects hold at least one of the ``rows`` (a boolean mask)."""
    return len(np.unique(subject_of[rows]))


def endpoint_results(y, y_pred, groups, class_names: list[str], endpoints: dict[str, EndpointSettings]
                     ) -> dict[str, EndpointResult]:
    return {name: endpoint_result(y, y_pred, groups, class_names, e) for name, e in endpoints.items()}
