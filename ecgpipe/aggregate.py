"""Record-level rows from window-level rows: the features of a classifier with ``level = 'record'``.

A record labelled as a whole (CinC 2017: one label per 9-61 s recording) is one sample, not a handful of windows
that each must carry the label: its windows' feature columns are summarised (mean, and optionally std, min, max,
median over the record's windows) into one row, and the classifier sees one row per record.

Pure functions: no Prefect, no Dask, no Zarr.
"""

from __future__ import annotations

import numpy as np

STATISTICS = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max, "median": np.median}


def rows_by_value(values: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct values in sorted order, and the row indices of each (ascending): one sort, not one scan of every
    row per value, which at 300 000 records was hours in the flow process."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    bounds = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1], True]) if len(values) else np.array([0])
    return ordered[bounds[:-1]], [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def record_groups(records: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct records in order of first appearance, and the row indices of each."""
    names, rows = rows_by_value(records)
    order = np.argsort([r[0] for r in rows], kind="stable") if rows else np.array([], dtype=np.int64)
    return names[order], [rows[k] for k in order]


def summarize_rows(block: np.ndarray, rows: list[np.ndarray], stats: list[str]) -> np.ndarray:
    """(n_records, n_columns * len(stats)): each statistic of every column over each record's rows, statistic
    by statistic (all means, then all stds, ...)."""
    block = np.asarray(block, dtype=np.float64)
    out = np.empty((len(rows), block.shape[1] * len(stats)))
    for k, idx in enumerate(rows):
        part = block[idx]
        out[k] = np.concatenate([STATISTICS[s](part, axis=0) for s in stats])
    return out


def record_votes(y: np.ndarray, y_pred: np.ndarray, records: np.ndarray, n_classes: int, y_proba: np.ndarray | None = None
                 ) -> tuple[list, np.ndarray, np.ndarray, np.ndarray]:
    """Per record: its label (its segments' common class), its prediction and each class's share. By default the
    prediction is the majority vote of its segments' out-of-fold predictions (a tie goes to the class listed first in
    the config) and the shares are vote shares; with ``y_proba`` (n, n_classes) it is the argmax of the segments'
    mean class probability, and the shares are those means. Unscored segments do not count."""
    names, true, voted, shares = [], [], [], []
    for record, group in zip(*rows_by_value(records)):
        rows = group[y_pred[group] >= 0]
        if not len(rows):
            continue
        labels = np.unique(y[rows])
        if len(labels) != 1:
            raise ValueError(f"record {record}: segments of one per-record label carry classes {labels.tolist()}")
        names.append(record.item() if hasattr(record, "item") else record)
        true.append(int(labels[0]))
        share = y_proba[rows].mean(axis=0) if y_proba is not None else np.bincount(y_pred[rows], minlength=n_classes) / len(rows)
        voted.append(int(np.argmax(share)))  # argmax: first of tied classes
        shares.append(share)
    return (names, np.array(true, dtype=np.int64), np.array(voted, dtype=np.int64),
            np.array(shares).reshape(len(names), n_classes))
