"""The evaluation protocols: the only place a protocol's name, title and short label are spelt.

* ``stratified_10fold`` -- the paper's protocol: stratified k-fold over segments. Segments of one patient land in both
  training and test folds, so this measures recognising *known* patients' rhythms (optimistic).
* ``grouped_by_subject`` -- stratified group k-fold with every subject's segments in exactly one fold: no patient is
  in both training and test data. This is the number to expect on new patients.
* ``leave_one_database_out`` -- train on every database but one, test on that one (shared classes only).

``make_splits`` gives each protocol's outer folds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str  # a sentence for reports
    short: str  # a column label
    grouped: bool  # keeps subjects apart: the inner CV of a tuned classifier is grouped too


STRATIFIED = Protocol(
    "stratified_10fold",
    "Stratified {k}-fold over segments (the paper's protocol; {subjects} shared across folds)",
    "paper (stratified)",
    grouped=False,
)
GROUPED = Protocol(
    "grouped_by_subject",
    "Stratified group {k}-fold by {subject} (no {subject} in both training and test)",
    "grouped by subject",
    grouped=True,
)
LEAVE_ONE_DATABASE_OUT = Protocol(
    "leave_one_database_out",
    "Leave one database out (train on the others, test on it; shared classes only)",
    "leave one DB out",
    grouped=True,
)

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (STRATIFIED, GROUPED, LEAVE_ONE_DATABASE_OUT)}
PROTOCOL_NAMES = tuple(PROTOCOLS)


def protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOL_NAMES)}") from None


_named = protocol  # make_splits' argument is called protocol too


def title(name: str, n_folds: int | str = "k", subject: str = "patient", level: str = "window") -> str:
    """The protocol's title with its real number of folds; ``subject`` is what keeps segments together ("patient",
    or "record" for a dataset without patient ids); ``level`` 'record' when one scored row is a whole record."""
    if name not in PROTOCOLS:
        return name
    if level == "record" and name == STRATIFIED.name:  # folds over records: no record's windows are split
        return f"Stratified {n_folds}-fold over records (one row per record: no record in both training and test)"
    return PROTOCOLS[name].title.format(k=n_folds, subject=subject, subjects=f"{subject}s")


def short(name: str) -> str:
    return PROTOCOLS[name].short if name in PROTOCOLS else name


def make_splits(
    protocol: str, y: np.ndarray, groups: np.ndarray, cv, databases: np.ndarray | None = None,
    class_names: list[str] | None = None,
) -> tuple[list, str]:
    """Train/test index pairs for a protocol, and a note when fewer folds than asked were possible. ``cv``: the
    config's ``CVSettings`` (its number of folds and seed; not imported here: the config imports this registry);
    ``class_names`` name the classes in notes."""
    note = ""
    _named(protocol)  # unknown names fail here, with the known ones listed
    if protocol == LEAVE_ONE_DATABASE_OUT.name:
        # train on every database but one, test on that one; only classes that every database holds take part
        if databases is None or len(np.unique(databases)) < 2:
            raise ValueError("leave_one_database_out needs segments from at least two databases")
        names = sorted(str(d) for d in np.unique(databases))
        shared = set.intersection(*(set(np.unique(y[databases == d]).tolist()) for d in names))
        if len(shared) < 2:
            raise ValueError(f"leave_one_database_out: the databases {names} share fewer than two classes")
        used = np.isin(y, sorted(shared))
        splits = [(np.flatnonzero(used & (databases != d)), np.flatnonzero(used & (databases == d))) for d in names]
        left_out = sorted(set(np.unique(y).tolist()) - shared)
        named = [class_names[c] if class_names else str(c) for c in left_out]
        note = f"folds test on {', '.join(names)} in turn" + (
            f"; class(es) {', '.join(named)} not in every database's segments: left out" if left_out else "")
        return splits, note
    if protocol == STRATIFIED.name:
        min_class = np.bincount(y).min() if len(y) else 0
        k = min(cv.n_splits, int(min_class))
        if k < 2:
            raise ValueError(f"stratified CV needs at least 2 segments in every class (smallest class has {min_class})")
        if k < cv.n_splits:
            note = f"{k} folds (the smallest class has {min_class} segments)"
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=cv.seed)
        return list(splitter.split(np.zeros(len(y)), y)), note
    if protocol == GROUPED.name:
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
    raise AssertionError(f"protocol {protocol!r} is registered but has no splitter")
