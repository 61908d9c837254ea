"""Decisions over more than one window: each window's class or score replaced by its neighbours' in time.

Rhythms last longer than one window and a classifier's isolated flips are mostly errors, so ``ecgpipe predict``
takes a centred majority vote over ``--smooth`` windows, and ``tests/benchmarks/bench_context.py`` measures what
such a decision over W windows does for new patients (README "Clinical endpoints": on paper4's grouped folds and
predict's windows, the AF detector's sensitivity 0.881 -> 0.948 with widths chosen by inner folds). Pure functions on
arrays, vectorised with cumulative sums, so smoothing tens of thousands of windows costs milliseconds.

Windows are rows sorted by (record, start); a window's neighbours are the same record's windows whose start lies
within ``radius`` samples of its own (with contiguous windows of one stride, ``radius = (W // 2) * stride``).
"""

from __future__ import annotations

import numpy as np


def neighbour_ranges(records: np.ndarray, starts: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows grouped by record and sorted by start within it: the row range ``[lo, hi)`` of each row's neighbours
    (same record, start within ``radius`` of its own, itself included)."""
    records, starts = np.asarray(records), np.asarray(starts, dtype=np.int64)
    if len(starts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    change = np.concatenate([[False], records[1:] != records[:-1]])
    record_index = np.cumsum(change)
    if record_index[-1] + 1 != len(np.unique(records)):
        raise ValueError("rows are not grouped by record")
    if np.any((np.diff(starts) < 0) & ~change[1:]):
        raise ValueError("rows are not sorted by start within a record")
    # one sorted key over all records: a record's starts never reach into the next record's span
    span = int(starts.max() - starts.min()) + 2 * radius + 1
    key = record_index.astype(np.int64) * span + (starts - starts.min())
    return np.searchsorted(key, key - radius, "left"), np.searchsorted(key, key + radius, "right")


def window_ranges(n: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Ranges of a centred window of ``width`` rows (odd) over ``n`` contiguous windows, clipped at the ends."""
    half = max(width, 1) // 2
    index = np.arange(n, dtype=np.int64)
    return np.maximum(index - half, 0), np.minimum(index + half + 1, n)


def smoothed_mean(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Mean of ``values`` (n,) or (n, k) over each row's range. NaN (an unscored window) takes no part in its
    neighbours' means, and a row whose range holds no finite value is NaN."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    # running sums of the finite values and of their count: one NaN must not spread to every later row
    zero = np.zeros((1,) + values.shape[1:])
    total = np.concatenate([zero, np.cumsum(np.where(finite, values, 0.0), axis=0)])
    count = np.concatenate([zero, np.cumsum(finite, axis=0, dtype=np.float64)])
    n = count[hi] - count[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (total[hi] - total[lo]) / n, np.nan)


def smoothed_vote(classes: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Majority class over each row's range. Ties keep the row's own class; -1 (no prediction) never votes and is
    never replaced."""
    classes = np.asarray(classes, dtype=np.int64)
    voted = classes >= 0
    if not voted.any():
        return classes.copy()
    n_classes = int(classes.max()) + 1 if n_classes is None else n_classes
    onehot = np.zeros((len(classes) + 1, n_classes), dtype=np.int64)
    onehot[1:][voted, classes[voted]] = 1
    counts = np.cumsum(onehot, axis=0)
    counts = counts[hi] - counts[lo]
    own = np.where(voted, classes, 0)
    keep = counts[np.arange(len(classes)), own] == counts.max(axis=1)
    return np.where(voted, np.where(keep, own, counts.argmax(axis=1)), -1)


def majority_smooth(classes: np.ndarray, width: int) -> np.ndarray:
    """Centred majority vote over ``width`` contiguous windows (odd; 1 or less: unchanged), as ``ecgpipe predict
    --smooth`` applies it to one record's windows."""
    classes = np.asarray(classes, dtype=np.int64)
    if width > 1 and width % 2 == 0:
        raise ValueError(f"smoothing width must be odd (a centred vote), got {width}")
    if width <= 1 or len(classes) == 0:
        return classes.copy()
    return smoothed_vote(classes, *window_ranges(len(classes), width))


def smoothed_call(scores: np.ndarray, width: int, penalty: float = 0.0) -> np.ndarray:
    """A binary decision over ``width`` contiguous windows (odd): 1 where the mean score of the scored windows centred
    on a window is above 0, 0 where not, -1 where the window itself has no score (NaN). With ``penalty > 0`` the mean
    scores are then segmented (``segmented_call``): the call changes only where they pay ``penalty`` for it."""
    scores = np.asarray(scores, dtype=np.float64)
    if width < 1 or width % 2 == 0:
        raise ValueError(f"smoothing width must be odd (a centred vote), got {width}")
    mean = smoothed_mean(scores, *window_ranges(len(scores), width))
    calls = segmented_call(mean, penalty) if penalty > 0 else mean > 0
    return np.where(np.isnan(scores), -1, calls).astype(np.int64)


def pooled_vote(classes: np.ndarray, members, width: int) -> np.ndarray:
    """An endpoint over ``width`` contiguous windows (odd): 1 where most of the scored windows centred on a window are
    called one of ``members`` (class indices pooled before the count, so VT and VF votes add up for a shockable
    endpoint), 0 where not, -1 where the window itself has no call."""
    return smoothed_call(member_votes(classes, members), width)


def member_votes(classes: np.ndarray, members) -> np.ndarray:
    """Each window's vote for an endpoint from its class: +1/2 for one of ``members``, -1/2 for another class, NaN
    for no call; a positive mean over windows is a majority of members (``pooled_vote``)."""
    classes = np.asarray(classes, dtype=np.int64)
    return np.where(classes >= 0, np.isin(classes, list(members)) - 0.5, np.nan)


def segmented_call(scores: np.ndarray, penalty: float, records: np.ndarray | None = None) -> np.ndarray:
    """A binary decision per window that changes as rarely as the scores allow: the labelling ``z`` (0 or 1 per
    window) that maximises ``sum(z * score) - penalty * (number of changes of z)`` within each record, found exactly by
    the Viterbi recursion over two states. Unlike a centred mean over a fixed width, a long episode is called whole up
    to its edges despite a few weak windows, and a short one survives when its scores are strong enough to pay for two
    changes. ``penalty = 0`` is the window's own call (``score > 0``). NaN (an unscored window) adds nothing and is returned as -1; ``records``
    (rows grouped by record) restarts the recursion at each record's first row."""
    scores = np.asarray(scores, dtype=np.float64)
    if not penalty >= 0:
        raise ValueError(f"penalty must be a number >= 0, got {penalty}")
    if penalty == 0:  # each window alone; exactly its sign (the recursion would break exact-zero ties either way)
        return np.where(np.isnan(scores), -1, scores > 0).astype(np.int64)
    n = len(scores)
    calls = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return calls
    gain = np.where(np.isnan(scores), 0.0, scores).tolist()
    first = np.zeros(n, dtype=bool)
    first[0] = True
    if records is not None:
        records = np.asarray(records)
        first[1:] = records[1:] != records[:-1]
    first = first.tolist()
    # stay[s][t]: the best labelling ending in state s at window t came from state s at t - 1 (else it changed there)
    stay0, stay1 = [True] * n, [True] * n
    last_state = [0] * n  # at each record's last window: the state the best labelling of the record ends in
    best0 = best1 = 0.0
    for t in range(n):
        if first[t]:
            best0, best1 = 0.0, gain[t]
        else:
            stay0[t] = best0 >= best1 - penalty
            stay1[t] = best1 >= best0 - penalty
            best0, best1 = (best0 if stay0[t] else best1 - penalty), (best1 if stay1[t] else best0 - penalty) + gain[t]
        if t + 1 == n or first[t + 1]:
            last_state[t] = int(best1 > best0)
    state = 0
    for t in range(n - 1, -1, -1):  # back from each record's last window
        if t + 1 == n or first[t + 1]:
            state = last_state[t]
        calls[t] = state
        if not (stay1[t] if state else stay0[t]):
            state = 1 - state
    calls[np.isnan(scores)] = -1
    return calls
