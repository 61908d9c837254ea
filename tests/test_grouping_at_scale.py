"""The per-subject and per-record summaries of a protocol's out-of-fold answers group rows with one sort
(``aggregate.rows_by_value``), not one scan of every row per subject or record: a scan per record was quadratic,
hours in the flow process at 300 000 records. They must give what the scans gave, row for row."""

from __future__ import annotations

import numpy as np

from ecgpipe.aggregate import record_groups, record_votes, rows_by_value
from ecgpipe.classify import per_subject
from ecgpipe.record_level import record_level_summary

CLASSES = ["normal", "afib", "other"]


def _answers(n_records: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 5, n_records)
    records = np.repeat(np.array([f"r{i:05d}" for i in rng.permutation(n_records)]), per)
    y = np.repeat(rng.integers(0, 3, n_records), per)
    y_pred = np.where(rng.random(len(y)) < 0.7, y, rng.integers(-1, 3, len(y)))  # -1: unscored
    subjects = np.array([f"s{int(r[1:]) // 3}" for r in records])
    return y, y_pred, records, subjects, rng.dirichlet(np.ones(3), len(y)), rng.integers(0, 5, len(y))


def test_grouping_by_one_sort_gives_what_a_scan_per_value_gave():
    y, y_pred, records, subjects, proba, fold = _answers()
    values, rows = rows_by_value(subjects)
    assert values.tolist() == sorted(set(subjects.tolist()))
    assert all(np.array_equal(r, np.flatnonzero(subjects == v)) for v, r in zip(values, rows))
    names, groups = record_groups(records)
    first_seen = list(dict.fromkeys(records.tolist()))
    assert names.tolist() == first_seen
    assert all(np.array_equal(r, np.flatnonzero(records == n)) for n, r in zip(names, groups))
    assert rows_by_value(np.array([], dtype=str))[0].size == 0 and record_groups(np.array([], dtype=str))[1] == []

    scored = np.where(y_pred < 0, y, y_pred)
    expected = []  # per_subject as it was: a scan of every row per subject and class
    for subject in sorted(set(subjects.tolist())):
        for c, name in enumerate(CLASSES):
            mask = (subjects == subject) & (y == c)
            if mask.any():
                counts = np.bincount(scored[mask], minlength=3)
                expected.append({"subject": subject, "class": name, "n": int(mask.sum()), "recall": float(counts[c] / mask.sum()),
                                 "predicted": {CLASSES[k]: int(v) for k, v in enumerate(counts) if v}})
    assert per_subject(y, scored, subjects, CLASSES) == expected

    names, true, voted, shares = record_votes(y, y_pred, records, 3, proba)
    kept = [r for r in sorted(set(records.tolist())) if ((records == r) & (y_pred >= 0)).any()]
    assert names == kept and all(type(n) is str for n in names)
    for k, r in enumerate(kept):
        mask = (records == r) & (y_pred >= 0)
        np.testing.assert_allclose(shares[k], proba[mask].mean(axis=0))
        assert true[k] == y[mask][0] and voted[k] == int(np.argmax(proba[mask].mean(axis=0)))
    summary = record_level_summary(y, y_pred, records, CLASSES, fold, subjects=subjects)
    for outcome in summary.records:
        mask = (records == outcome.record) & (y_pred >= 0)
        assert outcome.folds == sorted({int(f) for f in fold[mask]})
        assert outcome.subject == subjects[records == outcome.record][0]
