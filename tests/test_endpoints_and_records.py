"""Clinical endpoints (ecgpipe/endpoints.py), gradient boosting (kind = 'hgb') and record-level classifiers
(level = 'record', ecgpipe/aggregate.py): metrics checked against hand counts, rows against hand aggregates."""

from __future__ import annotations

import numpy as np
import pytest

from ecgpipe.aggregate import record_groups, summarize_rows
from ecgpipe.classify import fit_classifier, summarize_protocol
from ecgpipe.config import ClassifierSettings, ConfigError, EndpointSettings, config_from_dict
from ecgpipe.endpoints import binary_rates, endpoint_result, one_vs_rest_specificity
from ecgpipe.report_tables import NO_VERDICT, endpoint_class_table, goal_verdict
from ecgpipe.stages.classification import ClassificationData, ComparisonRow, evaluate_row

CLASSES = ["normal", "afib", "vt", "vf"]


def test_binary_rates_match_hand_counts():
    rates = binary_rates(np.array([[90, 10], [5, 45]]))  # [[TN, FP], [FN, TP]]
    assert rates["sensitivity"] == pytest.approx(45 / 50) and rates["specificity"] == pytest.approx(90 / 100)
    assert rates["ppv"] == pytest.approx(45 / 55) and rates["npv"] == pytest.approx(90 / 95)
    assert rates["balanced_accuracy"] == pytest.approx((0.9 + 0.9) / 2)
    assert binary_rates(np.array([[10, 0], [0, 0]]))["sensitivity"] is None  # no positive: no sensitivity


def test_one_vs_rest_specificity():
    cm = np.array([[8, 2, 0], [1, 6, 3], [0, 0, 10]])
    spec = one_vs_rest_specificity(cm)
    assert spec[0] == pytest.approx((20 - 1) / 20) and spec[1] == pytest.approx((20 - 2) / 20)
    assert spec[2] == pytest.approx((20 - 3) / 20)


def test_an_endpoint_pools_its_classes():
    """VT called VF is no error for 'shockable'; a normal called VT is a false positive; intervals over subjects."""
    y = np.array([2, 2, 3, 3, 0, 0, 0, 1, 1, 0])
    p = np.array([3, 2, 2, 0, 0, 2, 0, 1, 0, 0])
    groups = np.array(["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"])
    ep = endpoint_result(y, p, groups, CLASSES, EndpointSettings(classes=["vt", "vf"], goal_sensitivity=0.9))
    assert ep.positives == 4 and ep.negatives == 6
    assert ep.sensitivity == pytest.approx(3 / 4) and ep.specificity == pytest.approx(5 / 6)
    assert ep.ppv == pytest.approx(3 / 4)
    assert goal_verdict([(ep.sensitivity, ep.ci95["sensitivity"], ep.goal_sensitivity)]) == "not met"
    lo, hi = ep.ci95["sensitivity"]
    assert lo <= ep.sensitivity <= hi and "5 subjects" in ep.ci_method


def test_an_endpoint_gives_ec57s_average_over_subjects_beside_the_pooled_rate():
    """A patient with 100 positive windows all caught hides one with 2 missed in the pooled (gross) sensitivity, 0.98;
    the mean of each patient's own sensitivity (EC57's average statistic) is 0.5, and the lowest patient's is 0."""
    from ecgpipe.report_tables import ENDPOINT_ALIGN, endpoint_table, per_subject_means

    y = np.repeat([3, 3, 0, 0, 0], [100, 2, 50, 10, 40])
    groups = np.repeat(["big", "small", "big", "small", "third"], [100, 2, 50, 10, 40])
    p = y.copy()
    p[100:102] = 0  # the small patient's two VF windows missed
    p[102:112] = 3  # five of the big patient's normal windows called VF
    p[102:107] = 0
    ep = endpoint_result(y, p, groups, CLASSES, EndpointSettings(classes=["vt", "vf"]))
    assert ep.sensitivity == pytest.approx(100 / 102) and ep.specificity == pytest.approx(95 / 100)
    sens, spec = ep.sensitivity_per_subject, ep.specificity_per_subject
    assert sens.mean == pytest.approx(0.5) and sens.lowest == 0.0 and sens.subjects == 2
    assert spec.mean == pytest.approx((45 / 50 + 1 + 1) / 3) and spec.lowest == pytest.approx(0.9) and spec.subjects == 3
    assert sens.ci95[0] <= sens.mean <= sens.ci95[1] and sens.ci95[0] == 0.0  # a draw of the small patient alone
    header, rows = endpoint_table({"shockable": ep.to_json()})
    assert rows[0][header.index("per subject: mean sensitivity / specificity (lowest)")] == per_subject_means(ep.to_json())
    assert ENDPOINT_ALIGN.count("|") - 1 == len(header) == len(rows[0])  # else Markdown shows the table as text
    assert per_subject_means(ep.to_json()).startswith("0.500 (0.000 - 1.000) / 0.967 (") and per_subject_means(ep.to_json()).endswith(") (0.000 / 0.900)")
    older = {k: v for k, v in ep.to_json().items() if not k.endswith("_per_subject")}
    assert per_subject_means(older) == "-"  # a report before 0.21.0


def test_an_endpoint_scores_every_rhythm_against_its_own_goal():
    """The AHA states its shock-advisory goals per rhythm (VF sensitivity > 90 %, sinus-rhythm specificity > 99 %):
    each class's share of segments that the endpoint gets right, with an interval over subjects and its goal."""
    y = np.repeat([3, 2, 0, 1], [10, 10, 20, 10])  # vf, vt, normal, afib
    p = y.copy()
    p[0] = 0  # one VF called normal: missed
    p[1] = 2  # one VF called VT: still shockable
    p[10:14] = 0  # four VT called normal: missed
    p[20] = 3  # one normal called VF: a false shock
    p[21] = 1  # one normal called AF: still not shockable
    groups = np.array([f"s{i // 5}" for i in range(len(y))])
    goals = {"vf": 0.90, "vt": 0.75, "normal": 0.99}
    ep = endpoint_result(y, p, groups, CLASSES, EndpointSettings(classes=["vt", "vf"], class_goals=goals))
    rates = {c.name: c for c in ep.by_class}
    assert [c.name for c in ep.by_class] == CLASSES  # in the classes' order
    assert rates["vf"].positive and rates["vf"].measure == "sensitivity" and rates["vf"].rate == pytest.approx(9 / 10)
    assert rates["vt"].rate == pytest.approx(6 / 10)
    assert not rates["normal"].positive and rates["normal"].measure == "specificity"
    assert rates["normal"].rate == pytest.approx(19 / 20) and rates["afib"].rate == 1.0
    assert ep.sensitivity == pytest.approx(15 / 20)  # the pooled rate is the classes' rates weighted by their counts
    assert rates["vf"].goal == 0.90 and rates["afib"].goal is None
    for c in ep.by_class:
        assert c.ci95[0] <= c.rate <= c.ci95[1]
    header, rows = endpoint_class_table({"shockable": ep.to_json()})
    goal_of = {row[1]: row[-1] for row in rows}
    # VF's 0.90 meets its goal by the point estimate only: one patient's miss could as well be two
    assert goal_of["vf"].endswith("(met; CI reaches below; from 2 subjects: its interval is too narrow)")
    assert goal_of["vt"].endswith("(not met)")
    assert goal_of["normal"].endswith("(not met)") and goal_of["afib"] == "-" and header[3] == "measure"
    # under a protocol that shares subjects across folds a goal is not judged at all
    _, rows = endpoint_class_table({"shockable": ep.to_json()}, NO_VERDICT)
    assert {row[1]: row[-1] for row in rows}["vf"] == "≥ 0.90 (no verdict: subjects shared across folds)"


def test_a_rate_one_subject_measures_has_no_interval_and_meets_no_goal_for_certain():
    """Every bootstrap draw repeats the one VF patient: its rate would get a zero-width interval, read as certainty."""
    y = np.repeat([3, 0], [20, 60])  # vf (one patient), normal (six)
    p = y.copy()
    p[0] = 0  # 19 of 20 VF right
    groups = np.array(["s0"] * 20 + [f"s{1 + i % 6}" for i in range(60)])
    ep = endpoint_result(y, p, groups, CLASSES, EndpointSettings(classes=["vt", "vf"], goal_sensitivity=0.9,
                                                                  class_goals={"vf": 0.9}))
    assert ep.sensitivity == pytest.approx(0.95) and "sensitivity" not in ep.ci95 and "balanced_accuracy" not in ep.ci95
    assert "specificity" in ep.ci95  # six patients measure it
    vf = next(c for c in ep.by_class if c.name == "vf")
    assert vf.ci95 is None and next(c for c in ep.by_class if c.name == "normal").ci95 is not None
    _, rows = endpoint_class_table({"shockable": ep.to_json()})
    assert {row[1]: row[-1] for row in rows}["vf"] == "≥ 0.90 (met at the point estimate; no interval)"


def test_a_goal_is_met_when_its_interval_clears_it_and_ppv_names_its_share_of_positives():
    from ecgpipe.report_tables import endpoint_table, goal_verdict, judged

    assert goal_verdict([(0.95, [0.91, 0.98], 0.90), (0.99, [0.985, 0.995], 0.98)]) == "met"
    assert goal_verdict([(0.95, [0.87, 0.98], 0.90)]) == "met; CI reaches below"
    assert goal_verdict([(0.95, None, 0.90)]) == "met at the point estimate; no interval"
    assert goal_verdict([(0.95, [0.91, 0.98], 0.90), (0.97, [0.95, 0.99], 0.98)]) == "not met"
    assert goal_verdict([(None, None, 0.90)]) == "no verdict: nothing to measure"  # no positives: nothing to judge
    # a goal measured and missed is said, even when the other has nothing to measure (a dataset without positives)
    assert goal_verdict([(None, None, 0.90), (0.90, [0.85, 0.95], 0.95)]) == "not met"
    assert goal_verdict([(None, None, 0.90), (0.99, [0.98, 1.0], 0.95)]) == "no verdict: nothing to measure"
    # an interval that reaches below is said, whatever the other goal's lack of one
    assert goal_verdict([(0.95, [0.87, 0.98], 0.90), (0.99, None, 0.95)]) == "met; CI reaches below"
    assert goal_verdict([(0.95, [0.91, 0.98], 0.90), (0.99, None, 0.95)]) == "met at the point estimate; no interval"
    y = np.repeat([3, 0], [40, 60])  # vf, normal: 40 % positives
    p = y.copy()
    p[:2] = 0
    groups = np.array([f"s{i % 20}" for i in range(len(y))])
    ep = endpoint_result(y, p, groups, CLASSES, EndpointSettings(classes=["vt", "vf"], goal_sensitivity=0.9,
                                                                  goal_specificity=0.9))
    header, rows = endpoint_table({"shockable": ep.to_json()})
    assert header[6] == "PPV (at this share of positives)" and rows[0][6] == "1.000 (40%)"
    # 38 of 40 right, one miss each in two of 20 patients: a draw taking those two five times gives 35 / 40 = 0.875
    assert ep.ci95["sensitivity"][0] < 0.9 and ep.ci95["specificity"] == [1.0, 1.0]
    assert rows[0][-1] == "sensitivity ≥ 0.90, specificity ≥ 0.90 (met; CI reaches below)"
    assert rows[0][2] == "40 / 60 (20 / 20 subjects)"  # what each rate rests on
    # the same windows from 10 patients: a met goal says its interval is too narrow (bench_interval_coverage.py)
    few = endpoint_result(y, np.where(np.arange(len(y)) < 1, 0, y), np.array([f"s{i % 10}" for i in range(len(y))]), CLASSES,
                          EndpointSettings(classes=["vt", "vf"], goal_sensitivity=0.9, goal_specificity=0.9))
    assert few.positive_subjects == few.negative_subjects == 10
    cell = endpoint_table({"shockable": few.to_json()})[1][0][-1]
    assert cell.startswith("sensitivity ≥ 0.90, specificity ≥ 0.90 (met") and cell.endswith("; from 10 subjects: its interval is too narrow)")
    older = {k: v for k, v in few.to_json().items() if k not in ("positive_subjects", "negative_subjects")}
    assert "subjects" not in endpoint_table({"shockable": older})[1][0][-1]  # a report before 0.16.0: nothing claimed
    assert endpoint_table({"shockable": ep.to_json()}, "no verdict: why")[1][0][-1].endswith("(no verdict: why)")
    assert judged("grouped_by_subject") and judged("leave_one_database_out") and not judged("stratified_10fold")
    # a record-level classifier where each record is its own subject keeps subjects apart under any protocol
    assert judged("stratified_10fold", "records", "record") and not judged("stratified_10fold", "records", "patient")
    assert not judged("stratified_10fold", "records, majority vote", "record")  # windows of a record in both


def test_protocol_results_carry_endpoints_and_specificity():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    p = np.where(rng.random(40) < 0.8, y, (y + 1) % 4)
    groups = np.array([f"s{i // 5}" for i in range(40)])
    splits = [(np.arange(20, 40), np.arange(20)), (np.arange(20), np.arange(20, 40))]
    r = summarize_protocol(y, p, groups, splits, CLASSES, endpoints={"shockable": EndpointSettings(classes=["vt", "vf"])})
    truth, called = np.isin(y, [2, 3]), np.isin(p, [2, 3])
    assert r.endpoints["shockable"].sensitivity == pytest.approx((truth & called).sum() / truth.sum())
    cm = np.array(r.confusion_matrix)
    assert r.per_class["normal"].specificity == pytest.approx(1 - cm[1:, 0].sum() / cm[1:].sum())


def test_records_are_summarised_in_order_of_first_appearance():
    names, rows = record_groups(np.array(["db/b", "db/b", "db/a", "db/c", "db/a"]))
    assert names.tolist() == ["db/b", "db/a", "db/c"] and [r.tolist() for r in rows] == [[0, 1], [2, 4], [3]]
    block = np.array([[1.0, 10], [3, 30], [5, 50], [7, 70], [9, 90]])
    out = summarize_rows(block, rows, ["mean", "max"])
    assert out.tolist() == [[2, 20, 3, 30], [7, 70, 9, 90], [7, 70, 7, 70]]


def _csv_config(**classifier):
    return config_from_dict({
        "name": "t", "databases": {"d": {"fs": 300.0, "labels_csv": "labels.csv"}},
        "classes": {"normal": ["N"], "afib": ["A"], "other": ["O"]},
        "rhythm": {"enabled": True},
        "classifier": {"kind": "hgb", "inputs": "rhythm", "level": "record", "max_iter": 30, "min_samples_leaf": 3, **classifier},
        "endpoints": {"af": {"classes": ["afib"]}},
        "cv": {"n_splits": 3, "protocols": ["grouped_by_subject"]},
    })


def _record_data(n_records=30, seed=0) -> ClassificationData:
    """Records of 2-4 windows each; a record's class shifts the mean of its rhythm block."""
    rng = np.random.default_rng(seed)
    rhythm, y, names = [], [], []
    for r in range(n_records):
        c = r % 3
        for _ in range(int(rng.integers(2, 5))):
            rhythm.append(rng.normal(size=6) + 2.0 * np.eye(6)[c])
            y.append(c)
            names.append(f"d/r{r:02d}")
    records = np.array(names)
    return ClassificationData(None, np.array(rhythm), np.array(y), records, np.array(["d"] * len(y)), records)


def test_a_record_level_classifier_sees_one_row_per_record():
    data = _record_data()
    cfg = _csv_config(record_stats=["mean", "max"])
    rec = data.by_record(["mean", "max"])
    assert len(rec.y) == 30 and rec.rhythm.shape == (30, 12) and rec.records[0] == "d/r00"
    first = data.records == "d/r00"
    assert rec.rhythm[0].tolist() == pytest.approx([*data.rhythm[first].mean(0), *data.rhythm[first].max(0)])
    row = ComparisonRow(cfg=cfg, extractor=None, key="k", unit="u", features=None, data_key="")
    result = evaluate_row(row, data)["grouped_by_subject"]
    assert result.level == "record" and sum(f.n_test for f in result.folds) == 30
    assert np.array(result.confusion_matrix).sum() == 30
    assert result.per_record.n_records == 30 and result.per_record.macro_f1 == pytest.approx(result.macro_f1)
    assert "af" in result.endpoints and "af" in result.per_record.endpoints
    assert result.macro_f1 > 0.6  # separable synthetic records


def test_windows_of_one_record_with_two_labels_are_refused():
    data = _record_data(6)
    data.y[0] = (data.y[0] + 1) % 3
    with pytest.raises(Exception, match="several classes"):
        data.by_record(["mean"])


def test_gradient_boosting_tunes_its_learning_rate_inside_the_fold():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(90, 5)) + np.repeat(np.eye(5)[:3], 30, axis=0) * 2, np.repeat(np.arange(3), 30)
    model, chosen = fit_classifier(X, y, ClassifierSettings(kind="hgb", tune=True, learning_rate_grid=[0.05, 0.2], max_iter=20))
    assert chosen["learning_rate"] in (0.05, 0.2)
    again, _ = fit_classifier(X, y, ClassifierSettings(kind="hgb", max_iter=20))
    assert (again.predict(X) == fit_classifier(X, y, ClassifierSettings(kind="hgb", max_iter=20))[0].predict(X)).all()  # deterministic
    assert ClassifierSettings(kind="hgb", inputs="cnn+rhythm").label.startswith("+RR GradBoost")


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match="level = 'record' needs databases labelled per record"):
        config_from_dict({"databases": {"mitdb": {}}, "classes": {"normal": ["(N"], "afib": ["(AFIB"]},
                          "classifier": {"level": "record"}})
    with pytest.raises(ConfigError, match=r"endpoints.shock: \['vt'\] not in classes"):
        config_from_dict({"databases": {"mitdb": {}}, "classes": {"normal": ["(N"], "afib": ["(AFIB"]},
                          "endpoints": {"shock": {"classes": ["vt"]}}})
    with pytest.raises(ConfigError, match="every class is positive"):
        config_from_dict({"databases": {"mitdb": {}}, "classes": {"normal": ["(N"], "afib": ["(AFIB"]},
                          "endpoints": {"any": {"classes": ["normal", "afib"]}}})
    with pytest.raises(ConfigError, match=r"endpoints.shock.class_goals: \['vf'\] not in classes"):
        config_from_dict({"databases": {"mitdb": {}}, "classes": {"normal": ["(N"], "afib": ["(AFIB"]},
                          "endpoints": {"shock": {"classes": ["afib"], "class_goals": {"vf": 0.9}}}})
    with pytest.raises(ConfigError, match=r"class_goals.normal: 1.5 is not a share"):
        config_from_dict({"databases": {"mitdb": {}}, "classes": {"normal": ["(N"], "afib": ["(AFIB"]},
                          "endpoints": {"af": {"classes": ["afib"], "class_goals": {"normal": 1.5}}}})
    with pytest.raises(ConfigError, match="learning_rate_grid"):
        _csv_config(learning_rate_grid=[0.0])


def test_a_record_level_gradient_boosting_artifact_round_trips(tmp_path):
    """skops loads scikit-learn's tree container (trusted by name); predict answers one class per record."""
    from ecgpipe.model import load_model, save_model

    data = _record_data()
    cfg = _csv_config()
    rec = data.by_record(["mean"])
    model, _ = fit_classifier(rec.rhythm, rec.y, cfg.classifier)
    save_model(tmp_path / "m.skops", model, cfg, weights_source="-", n_cnn=None, training={})
    loaded = load_model(tmp_path / "m.skops")
    windows = data.rhythm[data.records == "d/r04"]
    got = loaded.predict(None, windows)
    assert len(got) == len(windows) and len(set(got.tolist())) == 1
    assert got[0] == model.predict(windows.mean(0, keepdims=True))[0]


def test_records_by_mean_probability_let_a_confident_window_outweigh_two_unsure_ones():
    from ecgpipe.aggregate import record_votes
    from ecgpipe.record_level import record_level_summary

    y = np.array([0, 0, 0, 1, 1])
    y_pred = np.array([1, 1, 0, 1, 1])
    records = np.array(["a", "a", "a", "b", "b"])
    proba = np.array([[0.45, 0.55], [0.45, 0.55], [0.98, 0.02], [0.2, 0.8], [0.3, 0.7]])
    _, _, voted, shares = record_votes(y, y_pred, records, 2)
    assert voted.tolist() == [1, 1] and shares[0].tolist() == pytest.approx([1 / 3, 2 / 3])
    _, _, by_mean, means = record_votes(y, y_pred, records, 2, proba)
    assert by_mean.tolist() == [0, 1] and means[0].tolist() == pytest.approx([0.6267, 0.3733], abs=1e-4)
    summary = record_level_summary(y, y_pred, records, ["n", "a"], y_proba=proba)
    assert summary.accuracy == 1.0 and "mean class probability" in summary.rule
    assert summary.records.rows()[0]["votes"] == {"n": pytest.approx(0.6267, abs=1e-4), "a": pytest.approx(0.3733, abs=1e-4)}
    assert "majority vote" in record_level_summary(y, y_pred, records, ["n", "a"]).rule


def test_a_window_classifier_can_score_records_by_mean_probability():
    data = _record_data()
    for kind in ("logreg", "svc"):
        cfg = _csv_config(kind=kind, level="window", record_rule="mean_probability")
        assert cfg.classifier.label.endswith("records by mean probability")
        row = ComparisonRow(cfg=cfg, extractor=None, key="k", unit="u", features=None, data_key="")
        result = evaluate_row(row, data)["grouped_by_subject"]
        assert result.level == "window" and result.per_record.n_records == 30
        assert "mean class probability" in result.per_record.rule
        shares = result.per_record.records.votes.sum(axis=1).tolist()
        assert shares == pytest.approx([1.0] * 30, abs=1e-3)  # mean probabilities, not vote counts
        assert result.per_record.macro_f1 > 0.6, kind
    with pytest.raises(ConfigError, match="linear_svc has none"):
        _csv_config(kind="linear_svc", level="window", record_rule="mean_probability")
    with pytest.raises(ConfigError, match="answers once per record"):
        _csv_config(record_rule="mean_probability")


def test_a_mean_probability_artifact_answers_records_as_training_did(tmp_path):
    """A tuned, calibrated SVC survives the skops round trip; predict's record class is the mean-probability argmax."""
    from ecgpipe.model import load_model, save_model
    from ecgpipe.predict import RecordPrediction

    data = _record_data()
    cfg = _csv_config(kind="svc", level="window", record_rule="mean_probability", tune=True, C_grid=[0.1, 1.0])
    model, chosen = fit_classifier(data.rhythm, data.y, cfg.classifier, groups=data.subjects)
    assert chosen["C"] in (0.1, 1.0)
    save_model(tmp_path / "m.skops", model, cfg, weights_source="-", n_cnn=None, training={})
    loaded = load_model(tmp_path / "m.skops")
    windows = data.rhythm[data.records == "d/r04"]
    proba = loaded.predict_proba(None, windows)
    assert proba.shape == (len(windows), 3) and proba.sum(axis=1) == pytest.approx(np.ones(len(windows)))
    assert np.array_equal(proba, model.predict_proba(windows))
    pred = RecordPrediction("r04", 300.0, "I", 30.0, np.zeros(len(windows)), np.zeros(len(windows), dtype=np.int64), 10.0, [],
                            class_names=cfg.class_names, window_probabilities=proba)
    assert pred.record_class == cfg.class_names[int(np.argmax(proba.mean(axis=0)))]


def test_classification_rows_come_in_record_then_start_order_whatever_the_table_order(tmp_path):
    """An incremental run may put a segment anywhere in the table; the rows a classifier sees (and their starts,
    which benchmarks use to find a window's neighbours) are always in (database, record, start) order."""
    from ecgpipe import store as zs
    from ecgpipe.stages.classification import read_classification_data
    from ecgpipe.store import Layout

    path = str(tmp_path / "store.zarr")
    zs.ensure_groups(path, Layout.SEGMENTS)
    sources = [{"database": "mitdb", "record": "100", "subject": "mitdb/100"},
               {"database": "vfdb", "record": "418", "subject": "vfdb/418"}]
    zs.add_attrs(zs.open_group(f"{path}/{Layout.SEGMENTS}", mode="a"), {"sources": sources})
    source, start, klass = [1, 0, 1, 0, 0], [720, 1440, 0, 0, 720], [3, 1, 2, 0, 0]
    for name, values in [("source", source), ("start", start), ("class_index", klass)]:
        zs.create_array(path, Layout.segment(name), (5,), (5,), Layout.SEGMENT_ARRAYS[name])[...] = np.array(values)
    data = read_classification_data(path, None)
    assert list(zip(data.records.tolist(), data.starts.tolist(), data.y.tolist())) == [
        ("mitdb/100", 0, 0), ("mitdb/100", 720, 0), ("mitdb/100", 1440, 1), ("vfdb/418", 0, 2), ("vfdb/418", 720, 3)]
    assert data.subjects.tolist() == ["mitdb/100"] * 3 + ["vfdb/418"] * 2


def test_a_detector_is_fitted_per_endpoint_with_both_sides_in_training():
    """As a shock-advisory or AF detector is built: a two-class classifier per endpoint, the run's settings, every
    window; none for an endpoint without positives (or negatives), none for a record-level classifier."""
    from ecgpipe.stages.classification import endpoint_detectors

    cfg = config_from_dict({"databases": {"mitdb": {}}, "classes": {c: [f"({c.upper()}"] for c in CLASSES},
                            "endpoints": {"shockable": {"classes": ["vt", "vf"]}, "af": {"classes": ["afib"]}},
                            "rhythm": {"enabled": True}, "classifier": {"kind": "logreg", "inputs": "rhythm"}})
    rng = np.random.default_rng(0)
    y = np.repeat([0, 2, 3], 20)  # normal, vt, vf: no AF window
    rhythm = rng.normal(size=(60, 3)) + np.isin(y, [2, 3])[:, None] * 3.0
    records = np.array([f"mitdb/{i // 10}" for i in range(60)])
    data = ClassificationData(None, rhythm, y, records, np.array(["mitdb"] * 60), records)
    detectors = endpoint_detectors(rhythm, data.y, data.n_cnn, cfg, None)
    assert set(detectors) == {"shockable"}  # af has no positive window to learn from
    assert (detectors["shockable"].predict(rhythm) == np.isin(y, [2, 3])).mean() > 0.95
    record_level = cfg.with_stage(classifier=cfg.classifier.model_copy(update={"level": "record"}))
    assert endpoint_detectors(rhythm, data.y, data.n_cnn, record_level, None) == {}
    # balancing subjects: within each rhythm class the shockable side pools (VT apart from VF), not within the sides
    from ecgpipe.classify import fit_classifier

    balanced = cfg.with_stage(classifier=cfg.classifier.model_copy(update={"subject_balance": 1.0}))
    records = np.array([f"mitdb/{i // 10}" for i in range(35)] + ["mitdb/9"] * 25)  # one VF subject of 25 windows
    got = endpoint_detectors(rhythm, data.y, data.n_cnn, balanced, None, records)["shockable"]
    positive = np.isin(y, [2, 3]).astype(np.int64)
    by_rhythm = fit_classifier(rhythm, positive, balanced.classifier, subjects=records, weight_classes=y)[0]
    by_side = fit_classifier(rhythm, positive, balanced.classifier, subjects=records)[0]
    assert np.allclose(got[-1].coef_, by_rhythm[-1].coef_) and not np.allclose(got[-1].coef_, by_side[-1].coef_)


def test_an_endpoint_s_decision_settings_rewrite_the_model_but_rerun_no_fold():
    """decision_windows and change_penalty travel in the artifact and are never used by cross-validation: changing one
    keeps the classification rows' key (no fold reruns) and changes the model's (the artifact is written again);
    changing the endpoint's classes changes both."""
    from types import SimpleNamespace

    from ecgpipe.stages.classification import model_key, row_key

    def keys(**endpoint):
        cfg = config_from_dict({"databases": {"mitdb": {}}, "classes": {c: [f"({c.upper()}"] for c in CLASSES},
                                "endpoints": {"af": {"classes": ["afib"], **endpoint}}})
        key = row_key(cfg, ["features"], "table")
        return key, model_key(SimpleNamespace(key=key, cfg=cfg))

    base = keys()
    assert keys(change_penalty=4.0) == base  # the default stated
    for changed in ({"change_penalty": 1.0}, {"decision_windows": 31}):
        row, model = keys(**changed)
        assert row == base[0] and model != base[1]
    row, model = keys(classes=["afib", "vt"])
    assert row != base[0] and model != base[1]


def test_a_comparison_of_window_and_record_rows_says_which_unit_each_column_counts():
    from ecgpipe.report_tables import comparison_units_note

    scores = {"grouped_by_subject": {"macro_f1": 0.8, "record_macro_f1": 0.8}}
    both = {"protocols": {"grouped_by_subject": {}}, "comparison": [{"classifier": "GradBoost, per record (mean)", "protocols": scores},
                                                                  {"classifier": "SVC(rbf)", "protocols": scores}]}
    note = comparison_units_note(both)
    assert "Rows marked 'per record'" in note and "Compare rows on the record macro-F1 column of a protocol that keeps a record's windows together" in note
    assert "flatters their record columns there too" in note  # the stratified protocol's record columns of window rows
    records_only = {**both, "comparison": both["comparison"][:1]}
    assert "per record" in comparison_units_note(records_only) and "Compare rows" not in comparison_units_note(records_only)
    windows_only = {**both, "comparison": both["comparison"][1:]}
    assert comparison_units_note(windows_only) == ""


def test_a_record_level_protocol_s_confusion_title_says_folds_over_records():
    """report.md and the confusion PNG share one title; the PNG's left out the level until 0.20.0 and told a record-level
    row's stratified folds as "over segments; records shared across folds" (found by a review)."""
    from ecgpipe.report import confusion_title

    record_level = confusion_title("stratified_10fold", {"n_folds": 5, "level": "record"}, "record")
    window_level = confusion_title("stratified_10fold", {"n_folds": 5}, "record")
    assert "over records" in record_level and "shared" not in record_level
    assert "segments" in window_level and record_level != window_level
