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
    y, y_pred, records = np.asarray(y), np.asarray(y_pred), np.asarray(records)
    scored = y_pred >= 0
    names, code = np.unique(records[scored], return_inverse=True)  # sorted; records without a scored segment: none
    code, labels, n = code.ravel(), y[scored], len(names)
    count = np.bincount(code, minlength=n)
    lowest, highest = np.full(n, np.iinfo(np.int64).max), np.full(n, -1)
    np.minimum.at(lowest, code, labels)
    np.maximum.at(highest, code, labels)
    if (mixed := np.flatnonzero(lowest != highest)).size:
        record = names[mixed[0]]
        raise ValueError(f"record {record}: segments of one per-record label carry classes "
                         f"{np.unique(labels[code == mixed[0]]).tolist()}")
    if y_proba is not None:
        sums = np.stack([np.bincount(code, weights=np.asarray(y_proba)[scored][:, c], minlength=n) for c in range(n_classes)], axis=1)
    else:
        sums = np.stack([np.bincount(code, weights=(y_pred[scored] == c).astype(np.float64), minlength=n)
                         for c in range(n_classes)], axis=1)
    shares = (sums / np.maximum(count, 1)[:, None]).reshape(n, n_classes)
    return names.tolist(), lowest.astype(np.int64), np.argmax(shares, axis=1).astype(np.int64), shares  # argmax: first of ties
