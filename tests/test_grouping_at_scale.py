"""The per-subject and per-record summaries of a protocol's out-of-fold answers group rows with one sort, not one
scan of every row per subject or record: a scan per record was quadratic, hours in the flow process at 300 000
records. They must give what the scans gave, row for row; and they are columns (``results.SubjectOutcomes``,
``RecordOutcomes``), not one object per subject or record, read back from the form reports held before 0.18.0."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ecgpipe.aggregate import record_groups, record_votes, rows_by_value
from ecgpipe.classify import per_subject
from ecgpipe.record_level import record_level_summary
from ecgpipe.results import RecordLevel, SubjectOutcomes

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
    outcomes = per_subject(y, scored, subjects, CLASSES)
    assert outcomes.pairs() == expected
    assert SubjectOutcomes.model_validate({"classes": CLASSES, "rows": expected}) == outcomes  # a 0.17 report's form
    assert SubjectOutcomes.model_validate(json.loads(json.dumps(outcomes.to_json()))) == outcomes

    names, true, voted, shares = record_votes(y, y_pred, records, 3, proba)
    kept = [r for r in sorted(set(records.tolist())) if ((records == r) & (y_pred >= 0)).any()]
    assert names == kept and all(type(n) is str for n in names)
    for k, r in enumerate(kept):
        mask = (records == r) & (y_pred >= 0)
        np.testing.assert_allclose(shares[k], proba[mask].mean(axis=0))
        assert true[k] == y[mask][0] and voted[k] == int(np.argmax(proba[mask].mean(axis=0)))
    names, true, voted, shares = record_votes(y, y_pred, records, 3)  # majority vote: ties go to the first class
    for k, r in enumerate(kept):
        mask = (records == r) & (y_pred >= 0)
        votes = np.bincount(y_pred[mask], minlength=3)
        np.testing.assert_allclose(shares[k], votes / mask.sum())
        assert voted[k] == int(np.argmax(votes))
    summary = record_level_summary(y, y_pred, records, CLASSES, fold, subjects=subjects)
    rows = summary.records.rows()
    assert [r["record"] for r in rows] == kept
    for outcome in rows:
        mask = (records == outcome["record"]) & (y_pred >= 0)
        assert outcome["folds"] == sorted({int(f) for f in fold[mask]})
        assert outcome["subject"] == subjects[records == outcome["record"]][0]
        assert outcome["label"] == CLASSES[y[mask][0]] and outcome["predicted"] == CLASSES[voted[kept.index(outcome["record"])]]
    stored = summary.to_json()
    assert RecordLevel.model_validate({**stored, "records": rows}) == summary  # a 0.17 report's form, rounded votes
    assert RecordLevel.model_validate(json.loads(json.dumps(stored))) == summary


def test_a_record_whose_segments_carry_two_classes_is_named():
    y, y_pred, records = np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0]), np.array(["a", "a", "b", "b"])
    y[3] = 0
    with pytest.raises(ValueError, match=r"record b: segments of one per-record label carry classes \[0, 1\]"):
        record_votes(y, y_pred, records, 2)


def _protocol_result(n_records: int):
    from ecgpipe.classify import summarize_protocol
    from ecgpipe.config import CVSettings
    from ecgpipe.protocols import make_splits

    y, y_pred, records, subjects, _, _ = _answers(n_records=n_records)
    y_pred = np.where(y_pred < 0, y, y_pred)
    splits, _ = make_splits("grouped_by_subject", y, subjects, CVSettings(n_splits=3))
    result = summarize_protocol(y, y_pred, subjects, splits, CLASSES)
    test_fold = np.full(len(y), -1)
    for f, (_, test) in enumerate(splits):
        test_fold[test] = f
    result.per_record = record_level_summary(y, y_pred, records, CLASSES, test_fold, subjects=subjects)
    return result


def test_a_protocol_result_stored_before_columns_reads_as_the_same_result():
    """A row's marker or a report.json of 0.17 (one dict per subject and class, one per record) reads back as the
    columns it would hold now: `ecgpipe compare` against an older run, a kept row of an older store."""
    from ecgpipe.results import ProtocolResult

    result = _protocol_result(60)
    stored = json.loads(json.dumps(result.to_json()))
    older = {**stored, "per_subject": result.per_subject.pairs(),
             "per_record": {**stored["per_record"], "records": result.per_record.records.rows()}}
    assert ProtocolResult.model_validate(older) == ProtocolResult.model_validate(stored)
    assert ProtocolResult.model_validate(stored).per_subject == result.per_subject
    assert len(json.dumps(stored)) < len(json.dumps(older)) / 2  # columns: no key repeated per subject or record


def test_vote_shares_are_stored_as_before_and_no_scored_record_means_no_outcomes():
    """Each record's vote shares keep Python's rounding to 4 decimals, as stored before 0.18.0 (numpy's rounding
    scales first: 1/160 -> 0.0062, Python's 0.0063); a per-record database none of whose windows was scored (left out
    of a leave-one-database-out protocol) has no outcome columns, and empty columns read back."""
    from ecgpipe.results import RecordOutcomes

    y = np.zeros(160, dtype=np.int64)
    y_pred = np.r_[np.zeros(159, dtype=np.int64), 1]
    summary = record_level_summary(y, y_pred, np.array(["d/r"] * 160), ["normal", "afib"], np.zeros(160, dtype=np.int64))
    assert summary.records.rows()[0]["votes"] == {"normal": round(159 / 160, 4), "afib": 0.0063}
    none_scored = record_level_summary(y, np.full(160, -1), np.array(["d/r"] * 160), ["normal", "afib"], np.zeros(160, dtype=np.int64))
    assert none_scored.n_records == 0 and none_scored.records is None and none_scored.accuracy is None
    empty = RecordOutcomes(classes=["normal"], folds=np.zeros((0, 0), dtype=np.int16))
    assert len(empty) == 0 and RecordOutcomes.model_validate(empty.to_json()) == empty and empty.rows() == []


def test_report_json_holds_each_outcome_column_on_one_line():
    """report.json stays indented, but a column of outcomes is one line, not one line per value (millions of lines
    per protocol at 300 000 records); it reads back as the report it was written from."""
    from ecgpipe.report import report_json_text

    stored = _protocol_result(300).to_json()
    report = {"config_name": "scale", "protocols": {"grouped_by_subject": stored, "none": {"n_folds": 0}},
              "skipped_records": [{"record": "d/x", "error": "bad"}]}
    text = report_json_text(report)
    assert json.loads(text) == report
    indented = json.dumps(report, indent=2)
    assert len(indented.splitlines()) > 20 * len(text.splitlines())
    fewer = report_json_text({**report, "protocols": {"grouped_by_subject": _protocol_result(60).to_json()}})
    assert len(fewer.splitlines()) == len(report_json_text({**report, "protocols": {"grouped_by_subject": stored}}).splitlines())
    assert '"subject": ["s' in text and '"called": [[' in text and '"folds": [[' in text
    assert '"skipped_records": [\n    {' in text  # other lists indented as before
    assert report_json_text({"config_name": "no protocols"}) == json.dumps({"config_name": "no protocols"}, indent=2)
    older = {"protocols": {"p": {"per_subject": [{"subject": "s"}], "per_record": {"rule": "vote"}}}}  # written as given
    assert json.loads(report_json_text(older)) == older
