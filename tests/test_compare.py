"""Paired comparison of two classifiers on the same windows (ecgpipe.compare): point values equal the report's, the
interval is paired over subjects, and unpaired results are refused."""

from __future__ import annotations

import numpy as np
import pytest

from ecgpipe.classifier_settings import EndpointSettings
from ecgpipe.classify import summarize_protocol
from ecgpipe.compare import NotPaired, paired_comparison, subject_confusions

CLASSES = ["normal", "afib", "vt", "vf"]
ENDPOINTS = {"shockable": EndpointSettings(classes=["vt", "vf"]), "af": EndpointSettings(classes=["afib"])}


def _windows(seed: int = 0, n_subjects: int = 24, per_subject: int = 40):
    """Windows of subjects that each hold one or two classes, as rhythm databases do."""
    rng = np.random.default_rng(seed)
    y, groups = [], []
    for s in range(n_subjects):
        classes = rng.choice(len(CLASSES), size=1 + s % 2, replace=False)
        y += rng.choice(classes, per_subject).tolist()
        groups += [f"p{s:02d}"] * per_subject
    return np.array(y), np.array(groups)


def _predict(y: np.ndarray, groups: np.ndarray, error_rate: dict[str, float], seed: int) -> np.ndarray:
    """Predictions that are wrong at a per-subject rate (a hard patient is hard for every classifier)."""
    rng = np.random.default_rng(seed)
    pred = y.copy()
    for subject, rate in error_rate.items():
        rows = np.flatnonzero((groups == subject) & (rng.random(len(y)) < rate))
        pred[rows] = (y[rows] + rng.integers(1, len(CLASSES), len(rows))) % len(CLASSES)
    return pred


def _result(y, pred, groups):
    splits = [(np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in np.unique(groups)[:3]]
    return summarize_protocol(y, pred, groups, splits, CLASSES, endpoints=ENDPOINTS)


def test_point_values_are_the_reports_own():
    y, groups = _windows()
    hardness = {g: 0.05 + 0.6 * (i % 5 == 0) for i, g in enumerate(np.unique(groups))}
    a = _result(y, _predict(y, groups, hardness, 1), groups)
    b = _result(y, _predict(y, groups, hardness, 2), groups)
    cmp = paired_comparison(a, b, CLASSES, ENDPOINTS)
    assert subject_confusions(a, CLASSES).counts.sum(0).tolist() == a.confusion_matrix
    for result, side in ((a, "a"), (b, "b")):
        for metric in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert getattr(cmp.metric(metric), side) == pytest.approx(getattr(result, metric), abs=1e-12)
        for name, endpoint in result.endpoints.items():
            assert getattr(cmp.metric(f"{name} sensitivity"), side) == pytest.approx(endpoint.sensitivity, abs=1e-12)
            assert getattr(cmp.metric(f"{name} specificity"), side) == pytest.approx(endpoint.specificity, abs=1e-12)
    assert cmp.n_subjects == len(np.unique(groups)) and cmp.n_rows == len(y)


def test_the_same_classifier_differs_by_nothing():
    y, groups = _windows()
    a = _result(y, _predict(y, groups, {g: 0.2 for g in np.unique(groups)}, 1), groups)
    cmp = paired_comparison(a, a, CLASSES, ENDPOINTS)
    for d in cmp.differences:
        assert d.difference == 0 and d.ci95 == [0.0, 0.0] and d.a_better == 0.0
        assert d.verdict == "no difference shown"


def test_pairing_narrows_the_interval_where_patients_share_the_difficulty():
    """A is better on every patient by a little; patients' own difficulty varies a lot. Paired, the gain is shown;
    the two classifiers' separate intervals overlap."""
    y, groups = _windows(n_subjects=30)
    subjects = np.unique(groups)
    hard = {g: 0.05 + 0.5 * (i % 3 == 0) for i, g in enumerate(subjects)}
    a = _result(y, _predict(y, groups, hard, 1), groups)
    b = _result(y, _predict(y, groups, {g: r + 0.08 for g, r in hard.items()}, 1), groups)
    cmp = paired_comparison(a, b, CLASSES, ENDPOINTS, labels=("a", "b"))
    acc = cmp.metric("accuracy")
    assert acc.difference > 0 and acc.ci95[0] > 0 and acc.verdict == "a higher" and acc.a_better > 0.975
    assert a.ci95.accuracy[0] < b.ci95.accuracy[1]  # unpaired, the intervals overlap: the pairing is what shows it
    reverse = paired_comparison(b, a, CLASSES, ENDPOINTS).metric("accuracy")
    assert reverse.difference == pytest.approx(-acc.difference) and reverse.verdict == "b higher"


def test_results_of_other_windows_are_refused_naming_the_subject():
    y, groups = _windows()
    a = _result(y, y, groups)
    keep = ~((groups == "p03") & (np.arange(len(y)) % 2 == 0))  # p03 lost half its windows in B
    b = _result(y[keep], y[keep], groups[keep])
    with pytest.raises(NotPaired, match=r"subject p03 has \d+ \w+ windows in run_a and \d+ in run_b"):
        paired_comparison(a, b, CLASSES, ENDPOINTS, labels=("run_a", "run_b"))


def test_a_hundred_thousand_records_are_compared_in_blocks_of_draws():
    """CinC-scale datasets and beyond: draws go in blocks (2000 draws x 100 000 records would be 1.6 GB at once)."""
    from ecgpipe.compare import SubjectConfusions, compare_confusions

    rng = np.random.default_rng(0)
    n, k = 100_000, 3
    y = rng.integers(0, k, n)
    a, b = y.copy(), y.copy()
    wrong = rng.random(n) < 0.1
    b[wrong] = (y[wrong] + 1) % k
    counts_a, counts_b = np.zeros((n, k, k), dtype=np.int64), np.zeros((n, k, k), dtype=np.int64)
    counts_a[np.arange(n), y, a] = 1
    counts_b[np.arange(n), y, b] = 1
    names = [f"r{i:06d}" for i in range(n)]
    cmp = compare_confusions(SubjectConfusions(names, counts_a), SubjectConfusions(names, counts_b), ["n", "a", "o"],
                             n_boot=120, level="record")
    acc = cmp.metric("accuracy")
    assert acc.a == 1.0 and acc.difference == pytest.approx(1 - (b == y).mean())
    assert 0 < acc.ci95[0] < acc.difference < acc.ci95[1] and acc.ci95[1] - acc.ci95[0] < 0.01


def _tally(pos, tp, neg, tn, with_counts=True):
    tally = {"positive_windows": pos, "negative_windows": neg, "sensitivity": round(tp / pos, 4) if pos else None,
             "specificity": round(tn / neg, 4) if neg else None}
    return {**tally, "true_positives": tp, "true_negatives": tn} if with_counts else tally


def test_whole_recording_calls_pair_over_subjects_from_counts_or_older_reports_rates():
    from ecgpipe.compare import recording_comparison, recording_confusions

    records = [{"record": "db/1", "subject": "p1", "endpoints": {"af": _tally(900, 871, 3, 3)}},
               {"record": "db/2", "subject": "p1", "endpoints": {"af": _tally(0, 0, 900, 861)}},
               {"record": "db/3", "subject": "p2", "endpoints": {"af": _tally(1197, 1103, 0, 0)}},
               {"record": "db/4", "subject": "p3", "endpoints": {}}]  # its fold had no AF detector: left out
    conf = recording_confusions(records, "af")
    assert conf.subjects == ["p1", "p2"]
    assert conf.counts.tolist() == [[[864, 39], [29, 871]], [[0, 0], [94, 1103]]]
    older = [{**r, "endpoints": {k: _tally(t["positive_windows"], t["true_positives"], t["negative_windows"],
                                           t["true_negatives"], with_counts=False) for k, t in r["endpoints"].items()}}
             for r in records]
    assert np.array_equal(recording_confusions(older, "af").counts, conf.counts)
    same = recording_comparison(records, older, "af", n_boot=200)
    assert [d.metric for d in same.differences] == ["af balanced accuracy", "af sensitivity", "af specificity"]
    assert all(d.difference == 0 for d in same.differences)
    assert same.metric("af sensitivity").a == pytest.approx((871 + 1103) / (900 + 1197))
    better = [dict(r) for r in records]
    better[0] = {**records[0], "endpoints": {"af": _tally(900, 890, 3, 3)}}
    diff = recording_comparison(better, records, "af", n_boot=200).metric("af sensitivity")
    assert diff.difference == pytest.approx(19 / 2097) and diff.ci95[0] >= 0
    fewer = [records[0], records[1], {**records[2], "endpoints": {"af": _tally(1196, 1103, 0, 0)}}]
    with pytest.raises(NotPaired, match="subject p2 has 1197 af windows"):
        recording_comparison(records, fewer, "af", n_boot=10)


def test_a_folder_whose_last_run_did_not_finish_is_refused_and_few_subjects_are_flagged(tmp_path):
    """An interrupted rerun leaves the earlier run's report.json beside a config of other settings: comparing the
    folder is refused, naming run.json; the report file itself may still be compared. Over fewer than ten subjects
    the comparison says its intervals are a rough guide."""
    import json

    from ecgpipe.compare import comparison_markdown, read_report
    from ecgpipe.errors import UnreadableFile
    from ecgpipe.results import RunComparison, ScopeComparison

    (tmp_path / "run.json").write_text(json.dumps({"status": "failed", "failed": []}))
    with pytest.raises(UnreadableFile, match=r"its last run is 'failed' \(run.json\) and no run there finished: it has no "
                                             r"report.json to compare; finish the run first"):  # it named a file not there
        read_report(tmp_path)
    (tmp_path / "report.json").write_text("{}")
    (tmp_path / "run.json").write_text(json.dumps({"status": "interrupted", "failed": []}))
    with pytest.raises(UnreadableFile, match=r"its last run is 'interrupted' \(run.json\).*give .*report.json"):
        read_report(tmp_path)
    with pytest.raises(UnreadableFile, match="not a readable ecgpipe report"):  # the file itself: read as asked
        read_report(tmp_path / "report.json")
    (tmp_path / "run.json").write_text('{"status": "compl')  # cut short: read as `ecgpipe status` reads it
    with pytest.raises(UnreadableFile, match=r"run.json: the last run's record is not valid JSON"):
        read_report(tmp_path)

    y, groups = _windows(n_subjects=4)
    a = _result(y, _predict(y, groups, {g: 0.2 for g in np.unique(groups)}, 1), groups)
    few = paired_comparison(a, a, CLASSES, ENDPOINTS, n_boot=100)
    run = lambda c: RunComparison(a="A", b="B", a_classifier="x", b_classifier="y", class_names=CLASSES,  # noqa: E731
                                  scopes=[ScopeComparison(protocol="grouped_by_subject", scored="windows", comparison=c)])
    assert "Only 4 subjects" in comparison_markdown(run(few))
    y, groups = _windows(n_subjects=12)
    a = _result(y, _predict(y, groups, {g: 0.2 for g in np.unique(groups)}, 1), groups)
    assert "Only" not in comparison_markdown(run(paired_comparison(a, a, CLASSES, ENDPOINTS, n_boot=100)))


def test_the_windows_digest_names_which_windows_not_their_row_order():
    """Two runs pair only on the same windows (``ecgpipe compare``): the digest is blind to row order and record
    listing order, and sees a moved window or another class."""
    from types import SimpleNamespace

    from ecgpipe.report_build import windows_digest

    table = SimpleNamespace(sources=["db/a", "db/b"], source=np.array([0, 0, 1]), start=np.array([0, 3600, 0]))
    y = np.array([0, 1, 1])
    reordered = SimpleNamespace(sources=["db/b", "db/a"], source=np.array([0, 1, 1]), start=np.array([0, 3600, 0]))
    assert windows_digest(reordered, np.array([1, 1, 0])) == windows_digest(table, y)
    moved = SimpleNamespace(sources=table.sources, source=table.source, start=np.array([0, 3240, 0]))
    assert windows_digest(moved, y) != windows_digest(table, y)
    assert windows_digest(table, np.array([0, 0, 1])) != windows_digest(table, y)
