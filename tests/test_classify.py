import numpy as np
import pytest

from ecgpipe.classify import evaluate_protocol, summarize_protocol
from ecgpipe.config import ClassifierSettings, CVSettings
from ecgpipe.protocols import make_splits


def _data(n_subjects=12, per_subject=30, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X, y, g = [], [], []
    for s in range(n_subjects):
        c = s % n_classes
        X.append(rng.normal(size=(per_subject, 8)) + 2.5 * np.eye(8)[c] + 0.3 * rng.normal(size=8))
        y += [c] * per_subject
        g += [f"s{s}"] * per_subject
    return np.concatenate(X), np.array(y), np.array(g)


def test_grouped_protocol_never_shares_a_subject():
    X, y, g = _data()
    splits, _ = make_splits("grouped_by_subject", y, g, CVSettings(n_splits=10))
    assert len(splits) == 10
    for train, test in splits:
        assert not set(g[train]) & set(g[test])
    all_test = np.concatenate([t for _, t in splits])
    assert sorted(all_test) == list(range(len(y)))


def test_fewer_subjects_than_folds_gives_a_note():
    X, y, g = _data(n_subjects=6)
    splits, note = make_splits("grouped_by_subject", y, g, CVSettings(n_splits=10))
    assert len(splits) == 6 and "only 6 subjects" in note


def test_metrics_agree_with_the_confusion_matrix():
    X, y, g = _data()
    names = ["a", "b", "c"]
    for protocol in ("stratified_10fold", "grouped_by_subject"):
        r = evaluate_protocol(X, y, g, names, protocol, ClassifierSettings(), CVSettings()).to_json()  # the stored (JSON) form
        cm = np.array(r["confusion_matrix"])
        assert cm.sum() == len(y)
        assert r["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
        recalls = np.diag(cm) / cm.sum(axis=1)
        assert r["balanced_accuracy"] == pytest.approx(recalls.mean())
        for i, name in enumerate(names):
            assert r["per_class"][name]["recall"] == pytest.approx(recalls[i])
            assert r["per_class"][name]["support"] == cm[i].sum()
        assert sum(f["n_test"] for f in r["folds"]) == len(y)
        assert r["accuracy"] > 0.6  # separable synthetic classes


def test_a_fold_without_a_class_averages_the_classes_it_holds():
    """Grouped folds of few subjects miss classes: such a fold's macro-F1 is over its own classes (perfect calls score
    1.0, not 2/3 with a 0 for the missing class), as the pooled score and the bootstrap count them."""
    X, y, g = _data(n_subjects=3, per_subject=20)  # one subject per class: each grouped test fold holds one class
    splits, _ = make_splits("grouped_by_subject", y, g, CVSettings(n_splits=3))
    r = summarize_protocol(y, y.copy(), g, splits, ["a", "b", "c"])
    assert [f["macro_f1"] for f in r.to_json()["folds"]] == [1.0, 1.0, 1.0]
    assert r.macro_f1 == 1.0 and r.macro_f1_fold_std == 0.0
    wrong = np.where(y == 2, 0, y)  # class c always called a: F1 of c is 0 and a's precision falls
    r = summarize_protocol(y, wrong, g, splits, ["a", "b", "c"])
    held_c = next(f for f, (_, test) in zip(r.folds, splits) if (y[test] == 2).all())
    assert held_c.macro_f1 == 0.0 and r.macro_f1 == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_unknown_protocol_is_an_error():
    X, y, g = _data()
    with pytest.raises(ValueError, match="unknown protocol"):
        make_splits("leave_one_out", y, g, CVSettings())


def test_leave_one_database_out_uses_shared_classes_only():
    X, y, g = _data(n_subjects=12)
    dbs = np.array(["a" if int(s[1:]) < 6 else "b" for s in g])
    y = y.copy()
    y[(dbs == "b") & (y == 2)] = 1  # class 2 exists only in database "a"
    splits, note = make_splits("leave_one_database_out", y, g, CVSettings(), dbs)
    assert len(splits) == 2 and "left out" in note
    for (train, test), d in zip(splits, ("a", "b")):
        assert set(dbs[test]) == {d} and d not in set(dbs[train]) and 2 not in set(y[train]) | set(y[test])
    r = evaluate_protocol(X, y, g, ["a", "b", "c"], "leave_one_database_out", ClassifierSettings(), CVSettings(), dbs).to_json()  # the stored (JSON) form
    assert np.array(r["confusion_matrix"]).sum() == (y != 2).sum()
    assert "class(es) vf not in every database's segments: left out" in make_splits(
        "leave_one_database_out", y, g, CVSettings(), dbs, ["normal", "afib", "vf"])[1]  # by name, not index
    with pytest.raises(ValueError, match="two databases"):
        make_splits("leave_one_database_out", y, g, CVSettings(), np.array(["a"] * len(y)))


def test_subject_bootstrap_interval_brackets_the_estimate():
    X, y, g = _data()
    r = evaluate_protocol(X, y, g, ["a", "b", "c"], "grouped_by_subject", ClassifierSettings(), CVSettings()).to_json()  # the stored (JSON) form
    lo, hi = r["ci95"]["accuracy"]
    assert lo <= r["accuracy"] <= hi and hi - lo > 0
    assert r["ci95"]["macro_f1"][0] <= r["macro_f1"] <= r["ci95"]["macro_f1"][1]
    assert "12 subjects" in r["ci95"]["method"]


def test_nested_cv_chooses_from_the_grid_inside_each_outer_fold():
    X, y, g = _data(n_subjects=15)
    tuned = ClassifierSettings(kind="svc", tune=True, C_grid=[0.001, 1.0], inner_splits=3)
    result = evaluate_protocol(X, y, g, ["a", "b", "c"], "grouped_by_subject", tuned, CVSettings(n_splits=5)).to_json()  # the stored (JSON) form
    chosen = [f["chosen"] for f in result["folds"]]
    assert len(chosen) == 5 and all(c["C"] in (0.001, 1.0) and c["gamma"] == "scale" for c in chosen)
    # C=0.001 collapses an RBF SVC to one class; the inner CV (macro-F1) must reject it everywhere
    assert all(c["C"] == 1.0 for c in chosen)
    assert result["macro_f1"] > 0.8


def test_grid_search_reuses_preprocessing_with_the_same_numbers():
    """Each inner fold's scaling + PCA + block weights are fitted once for the whole C grid: same choice, same model."""
    from ecgpipe.classify import fit_classifier

    X, y, g = _data(n_subjects=15)
    rhythm = np.random.default_rng(5).normal(size=(len(y), 3))
    Z = np.hstack([X, rhythm])
    settings = ClassifierSettings(kind="svc", inputs="cnn+rhythm", pca=4, tune=True, C_grid=[0.1, 1.0, 10.0], inner_splits=3)
    reused, chosen = fit_classifier(Z, y, settings, n_cnn=8, groups=g)
    refitted, chosen_again = fit_classifier(Z, y, settings, n_cnn=8, groups=g, reuse_transforms=False)
    assert chosen == chosen_again
    assert np.array_equal(reused.decision_function(Z), refitted.decision_function(Z))
    assert reused.memory is None  # the returned (and saved) model refers to no deleted cache folder


def test_inner_cv_of_the_grouped_protocol_is_grouped_too():
    from ecgpipe.classify import inner_groups, inner_splits

    X, y, g = _data(n_subjects=15)
    outer, _ = make_splits("grouped_by_subject", y, g, CVSettings(n_splits=5))
    settings = ClassifierSettings(tune=True, inner_splits=3)
    for train, test in outer:
        inner_g = inner_groups("grouped_by_subject", g)[train]
        for itrain, itest in inner_splits(settings, y[train], inner_g):
            assert not set(inner_g[itrain]) & set(inner_g[itest])  # no subject on both sides of an inner split
            assert not set(inner_g[itest]) & set(g[test])  # the outer test subjects are not even in the inner data
    assert inner_groups("stratified_10fold", g) is None  # the paper's protocol stays over segments


def test_classifier_kinds_and_fused_inputs():
    from ecgpipe.classify import BlockWeights, build_classifier, design_matrix

    X, y, g = _data()
    for kind in ("svc", "linear_svc", "logreg"):
        s = ClassifierSettings(kind=kind, C=1.0, pca=4)
        result = evaluate_protocol(X, y, g, ["a", "b", "c"], "stratified_10fold", s, CVSettings(n_splits=3)).to_json()  # the stored (JSON) form
        assert result["accuracy"] > 0.8, kind
    fused = ClassifierSettings(inputs="cnn+rhythm", rhythm_weight=0.25)
    rhythm = np.random.default_rng(1).normal(size=(len(y), 2))
    Z = design_matrix(X, rhythm, fused)
    assert Z.shape == (len(y), 10)
    weighted = build_classifier(fused, n_cnn=8)[:-1].fit_transform(Z)
    # after standardising, the rhythm block holds its configured share of the squared distance
    share = weighted[:, 8:].var(axis=0).sum() / weighted.var(axis=0).sum()
    assert share == pytest.approx(0.25, abs=1e-6)
    assert isinstance(build_classifier(fused, n_cnn=8).named_steps["weights"], BlockWeights)
    # the same share when the CNN block is PCA-reduced (its components do not have unit variance)
    reduced = build_classifier(fused.model_copy(update={"pca": 3}), n_cnn=8)[:-1].fit_transform(Z)
    assert reduced.shape[1] == 5
    assert reduced[:, 3:].var(axis=0).sum() / reduced.var(axis=0).sum() == pytest.approx(0.25, abs=1e-6)
    with pytest.raises(ValueError, match="needs cnn\\+rhythm features"):
        design_matrix(X, None, fused)


def test_a_pca_wider_than_a_folds_training_rows_keeps_what_the_rows_allow_and_the_model_saves(tmp_path):
    """PCA-128 on a fold of a small run (a pilot, a sweep on a slice) stopped the run with scikit-learn's
    "n_components=128 must be between 0 and min(n_samples, n_features)" after every feature was computed."""
    from ecgpipe.classify import build_classifier, design_matrix, fit_classifier
    from ecgpipe.config import load_config
    from ecgpipe.model import load_model, save_model

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    cnn = rng.normal(size=(60, 200)) + y[:, None]
    rhythm = rng.normal(size=(60, 3)) + y[:, None]
    for settings in (ClassifierSettings(pca=128), ClassifierSettings(pca=128, inputs="cnn+rhythm", rhythm_weight=0.25)):
        X = design_matrix(cnn, rhythm, settings)
        pipe = build_classifier(settings, n_cnn=200)[:-1]
        reduced = pipe.fit_transform(X[:40])  # 40 training rows: 40 components
        assert reduced.shape[1] == 40 + (3 if settings.inputs == "cnn+rhythm" else 0)
        if settings.inputs == "cnn+rhythm":  # the rhythm block keeps its share beside the narrower CNN block
            assert reduced[:, 40:].var(axis=0).sum() / reduced.var(axis=0).sum() == pytest.approx(0.25, abs=1e-6)
        result = evaluate_protocol(X, y, np.arange(60) % 6, ["a", "b", "c"], "stratified_10fold", settings,
                                   CVSettings(n_splits=3), n_cnn=200)
        assert result.accuracy > 0.8
        # each fold's 40 training rows capped PCA at 40: the folds say so, for the report's warning
        assert [f.chosen for f in result.folds] == [{"pca_components": 40}] * 3
    model, chosen = fit_classifier(X, y, settings, n_cnn=200)
    assert chosen == {"pca_components": 60}
    assert fit_classifier(X, y, settings.model_copy(update={"pca": 50}), n_cnn=200)[1] == {}  # as asked: nothing to say
    # a CNN block narrower than pca (a layer tap of 80 columns) keeps every column: no rows were short, nothing to say
    wide_y = np.repeat(np.arange(3), 100)
    narrow = np.hstack([rng.normal(size=(300, 80)) + wide_y[:, None], rng.normal(size=(300, 3))])
    assert fit_classifier(narrow, wide_y, settings, n_cnn=80)[1] == {}
    tuned, chosen = fit_classifier(X, y, settings.model_copy(update={"tune": True, "C_grid": [1.0, 10.0]}), n_cnn=200)
    assert chosen["pca_components"] == 60 and chosen["C"] in (1.0, 10.0)
    cfg = load_config("paper4", {"classifier": settings.model_dump(), "rhythm": {"enabled": True}})
    save_model(tmp_path / "m.skops", model, cfg, weights_source="test", n_cnn=200, training={"n_segments": 60})
    loaded = load_model(tmp_path / "m.skops")  # CappedPCA is a trusted type of the artifact
    assert np.array_equal(loaded.predict(cnn, rhythm), model.predict(X))


def test_per_subject_breakdown_names_the_patients_the_errors_come_from():
    from ecgpipe.classify import per_subject
    from ecgpipe.report import hardest_subjects, predicted_as

    y = np.array([0] * 20 + [1] * 12 + [1] * 5)
    groups = np.array(["p1"] * 20 + ["p2"] * 12 + ["p3"] * 5)
    y_pred = np.array([0] * 18 + [1] * 2 + [0] * 9 + [1] * 3 + [0] * 5)
    outcomes = per_subject(y, y_pred, groups, ["n", "af"])
    rows = {(r["subject"], r["class"]): r for r in outcomes.pairs()}
    assert rows[("p1", "n")] == {"subject": "p1", "class": "n", "n": 20, "recall": 0.9, "predicted": {"n": 18, "af": 2}}
    assert rows[("p2", "af")]["recall"] == 0.25 and rows[("p2", "af")]["predicted"] == {"n": 9, "af": 3}
    hardest = hardest_subjects({"per_subject": outcomes.to_json()})
    assert hardest_subjects({"per_subject": list(rows.values()), "per_class": {"n": {}, "af": {}}}) == hardest  # 0.17's form
    assert [(r["subject"], r["recall"]) for r in hardest] == [("p2", 0.25), ("p1", 0.9)]  # p3: under 10 segments
    assert predicted_as(hardest[0]) == "n 9, af 3"
    X, yy, g = _data()
    report_protocol = evaluate_protocol(X, yy, g, ["a", "b", "c"], "grouped_by_subject", ClassifierSettings(), CVSettings()).to_json()  # the stored (JSON) form
    assert set(report_protocol["per_subject"]["subject"]) == set(g)
    assert np.sum(report_protocol["per_subject"]["called"]) == len(yy)


def test_an_rbf_svc_on_a_blas_kernel_is_libsvms_model():
    """RBFKernelSVC (what kind='svc' ships) gives SVC(kernel='rbf')'s support vectors, dual coefficients, decision
    values and classes, for gamma 'scale' and a number, with and without class weights."""
    from sklearn.svm import SVC

    from ecgpipe.kernels import RBFKernelSVC

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 12))
    y = rng.integers(0, 3, 400)
    X = centres[y] + rng.normal(scale=1.2, size=(400, 12))  # overlapping classes: many support vectors
    train, test = np.arange(300), np.arange(300, 400)
    for C, gamma, weight in [(1.0, "scale", None), (10.0, "scale", "balanced"), (3.0, 0.05, None)]:
        rows = rng.uniform(0.2, 3.0, len(train)) if weight else None  # per-row weights (subject_balance) too
        ref = SVC(kernel="rbf", C=C, gamma=gamma, class_weight=weight).fit(X[train], y[train], sample_weight=rows)
        got = RBFKernelSVC(C=C, gamma=gamma, class_weight=weight).fit(X[train], y[train], sample_weight=rows)
        assert np.array_equal(got.svc_.support_, ref.support_) and len(ref.support_) > 50
        assert np.allclose(got.svc_.dual_coef_, ref.dual_coef_, rtol=0, atol=1e-8)
        assert np.allclose(got.decision_function(X[test]), ref.decision_function(X[test]), rtol=0, atol=1e-8)
        assert np.array_equal(got.predict(X[test]), ref.predict(X[test]))


def test_subject_weights_make_every_subject_count_alike_within_its_class():
    from ecgpipe.classify import subject_weights

    classes = np.array([0] * 5 + [1] * 4)
    subjects = np.array(["a"] * 4 + ["b"] + ["c"] * 2 + ["d"] * 2)
    assert np.array_equal(subject_weights(classes, subjects, 0.0), np.ones(9))
    w = subject_weights(classes, subjects, 1.0)
    # class 0: subject a (4 windows) and b (1) each hold half of the class's 5; class 1 is already even
    assert np.allclose(w, [0.625] * 4 + [2.5] + [1.0] * 4)
    half = subject_weights(classes, subjects, 0.5)  # in between: a's windows weigh 1/sqrt(4) of b's
    assert np.isclose(half[4] / half[0], 2.0) and np.isclose(half[:5].sum(), 5.0)
    # a subject with windows of two classes is balanced within each class separately
    mixed = subject_weights(np.array([0, 0, 0, 1, 1]), np.array(["a", "a", "b", "a", "b"]), 1.0)
    assert np.allclose(mixed, [0.75, 0.75, 1.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="3 classes for 2 subjects"):
        subject_weights(np.array([0, 1, 1]), np.array(["a", "b"]), 1.0)


def test_a_classifier_balancing_subjects_fits_with_their_weights():
    """subject_balance reaches the estimator as sample weights (a dominant subject counts as one), changes the model,
    is named in the row label, and needs the rows' subjects."""
    from sklearn.linear_model import LogisticRegression

    from ecgpipe.classify import fit_classifier, subject_weights

    X, y, g = _data(n_subjects=9, per_subject=10)
    X, y, g = np.vstack([X, X[:1] + 1.5 * np.random.default_rng(1).normal(size=(60, 8))]), np.r_[y, [y[0]] * 60], np.r_[g, [g[0]] * 60]
    plain = ClassifierSettings(kind="logreg", C=1.0)
    balanced = ClassifierSettings(kind="logreg", C=1.0, subject_balance=1.0)
    assert "subjects balanced" in balanced.label and "subjects" not in plain.label
    with pytest.raises(ValueError, match="subject_balance needs each training row's subject"):
        fit_classifier(X, y, balanced)
    got, _ = fit_classifier(X, y, balanced, subjects=g)
    scaled = got[:-1].transform(X)
    ref = LogisticRegression(C=1.0, max_iter=3000).fit(scaled, y, sample_weight=subject_weights(y, g, 1.0))
    assert np.allclose(got[-1].coef_, ref.coef_, atol=1e-6)
    unweighted, _ = fit_classifier(X, y, plain)
    assert not np.allclose(unweighted[-1].coef_, got[-1].coef_, atol=1e-3)
    # tuned: the inner CV's folds receive the same weights, sliced to their rows
    tuned, chosen = fit_classifier(X, y, balanced.model_copy(update={"tune": True, "C_grid": [0.1, 1.0]}), groups=g, subjects=g)
    assert chosen["C"] in (0.1, 1.0) and tuned.predict(X).shape == y.shape
    with pytest.raises(ValueError):
        ClassifierSettings(subject_balance=1.5)


def test_a_classifier_that_calls_everything_one_class_is_warned_about():
    from types import SimpleNamespace

    from ecgpipe.report_build import one_class_warning

    names = ["normal", "afib", "other"]
    collapsed = SimpleNamespace(confusion_matrix=[[5, 0, 0], [4, 0, 0], [3, 0, 0]], level="record")
    learnt = SimpleNamespace(confusion_matrix=[[5, 0, 0], [1, 3, 0], [3, 0, 0]], level="window")
    warning = one_class_warning({"grouped_by_subject": collapsed, "stratified_10fold": learnt}, names)
    assert "grouped_by_subject (every record called normal)" in warning and "stratified" not in warning
    assert one_class_warning({"stratified_10fold": learnt}, names) == ""
    one_class_data = SimpleNamespace(confusion_matrix=[[5, 0], [0, 0]], level="window")  # only one class to find
    assert one_class_warning({"p": one_class_data}, names[:2]) == ""
    assert "class_weight" in warning and "min_samples_leaf" not in warning  # the hint fits the kind (svc)
    assert "min_samples_leaf" in one_class_warning({"g": collapsed}, names, "hgb")
    lone = SimpleNamespace(confusion_matrix=learnt.confusion_matrix, level="window",
                           note="1 of 2 folds train on one class only, so they call every test row that class (fold 2: afib)")
    assert "under g some folds trained on one class only" in one_class_warning({"g": lone}, names)


def test_a_fold_that_trains_on_one_class_calls_everything_that_class_and_tuning_needs_two_subjects():
    """A pilot of two patients: the grouped fold holding one out trains on the other's one class. It crashed the run
    (sklearn: "The number of classes has to be greater than one"); with nested CV, one training subject crashed it
    too ("too few subjects ... for inner folds"). Now the fold answers its one class, and tuning needs >= 2 subjects."""
    from ecgpipe.classify import fit_classifier, inner_splits
    from ecgpipe.stages.classification import one_class_folds

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.repeat([0, 1], 20)
    model, chosen = fit_classifier(X[y == 1], y[y == 1], ClassifierSettings(kind="svc"))
    assert (model.predict(X) == 1).all() and chosen == {}
    from ecgpipe.model import detector_score

    never, _ = fit_classifier(X, np.zeros(40, dtype=bool), ClassifierSettings(kind="svc"))  # a detector with no positive
    assert (detector_score(never, X) < 0).all() and (detector_score(fit_classifier(X, y == 1, ClassifierSettings())[0], X) != 0).any()
    tuned = ClassifierSettings(kind="svc", tune=True, C_grid=[0.1, 1.0])
    one_subject = np.zeros(40, dtype=int)
    assert inner_splits(tuned, y, one_subject) == []
    model, chosen = fit_classifier(X, y, tuned, groups=one_subject)
    assert chosen == {} and model[-1].C == tuned.C  # the configured C: nothing to tune on
    two = np.repeat([0, 1], 20)  # each subject one class: every inner training fold holds one class
    assert inner_splits(tuned, y, two) == []
    four = np.array([0, 1] * 10 + [2, 3] * 10)
    assert all(len(np.unique(y[tr])) == 2 for tr, _ in inner_splits(tuned, y, four))
    note = one_class_folds([(np.arange(20, 40), np.arange(20)), (np.arange(40), np.arange(0))], y, ["normal", "afib"])
    assert note.startswith("1 of 2 folds train on one class only") and "fold 1: afib" in note


def test_the_report_warns_of_rows_whose_pca_was_capped():
    """A capped PCA changes the classifier: the report's warning names the row, the components kept and in how many
    folds (report.json ``warning``, report.md's first lines)."""
    from types import SimpleNamespace

    from ecgpipe.config import load_config
    from ecgpipe.report_build import capped_pca_warning
    from ecgpipe.stages.classification import ComparisonRow

    cfg = load_config("paper4-best")
    row = ComparisonRow(cfg=cfg, extractor=None, key="k", unit="u", features=None, data_key="d")
    folds = [SimpleNamespace(chosen={"C": 1.0, "pca_components": n}) for n in (90, 95)] + [SimpleNamespace(chosen={"C": 1.0})]
    row.protocols = {"grouped_by_subject": SimpleNamespace(folds=folds)}
    assert capped_pca_warning([row]) == (
        f"PCA kept fewer components than asked, the folds having fewer training rows: {row.label} (90 of 128 in 2 "
        "fold(s)). More records (or a smaller classifier.pca) give the configured classifier.")
    row.protocols = {"grouped_by_subject": SimpleNamespace(folds=folds[2:])}
    assert capped_pca_warning([row]) == ""


def test_the_report_warns_of_rows_whose_calibration_fell_back_to_rows():
    """A grouped fold whose calibration learnt from row-wise folds (``fit_classifier``'s ``calibration_folds``) is
    named in the report's warning, with its protocol and how many folds."""
    from types import SimpleNamespace

    from ecgpipe.config import load_config
    from ecgpipe.report_build import rowwise_calibration_warning
    from ecgpipe.stages.classification import ComparisonRow

    row = ComparisonRow(cfg=load_config("paper4-best"), extractor=None, key="k", unit="u", features=None, data_key="d")
    folds = [SimpleNamespace(chosen={"calibration_folds": "rows"}), SimpleNamespace(chosen={"C": 1.0})]
    row.protocols = {"grouped_by_subject": SimpleNamespace(folds=folds), "stratified_10fold": SimpleNamespace(folds=folds[1:])}
    warning = rowwise_calibration_warning([row])
    assert f"{row.label} (grouped_by_subject: 1 of 2 folds)" in warning and "stratified" not in warning
    row.protocols = {"grouped_by_subject": SimpleNamespace(folds=folds[1:])}
    assert rowwise_calibration_warning([row]) == ""


def test_capped_pca_projects_its_training_rows_as_scikit_learns_pca_did():
    """Pipelines call fit_transform on training rows: scikit-learn's PCA returns its randomized SVD's U * S there,
    a few percent off transform(X) in later components, and nested C choices are near ties this decides. CappedPCA
    returns exactly what PCA did, so results from before the cap are reproduced bit for bit (0.3.0 did not, and
    paper4-best's grouped fold 2 chose another C)."""
    from sklearn.decomposition import PCA

    from ecgpipe.classify import CappedPCA

    X = np.random.default_rng(0).normal(size=(700, 300)) @ np.random.default_rng(1).normal(size=(300, 300))
    ours, theirs = CappedPCA(64, random_state=0), PCA(64, random_state=0)
    assert np.array_equal(ours.fit_transform(X), theirs.fit_transform(X))
    assert theirs._fit_svd_solver == "randomized"  # the case where fit_transform and transform differ
    assert np.array_equal(ours.transform(X[:5]), theirs.transform(X[:5]))
    assert np.array_equal(CappedPCA(64, random_state=0).fit(X).transform(X[:5]), theirs.transform(X[:5]))


def test_the_one_standard_error_rule_takes_the_most_regularised_value_within_one_se_of_the_best():
    from ecgpipe.classify import one_standard_error

    # C = 100 has the best mean (0.80; its folds 0.77, 0.80, 0.83: SE 0.03 / sqrt(3) = 0.0173); C = 10 (0.79) is
    # within one SE of it, C = 1 (0.75) is not: the rule takes C = 10, the highest mean would take C = 100
    results = {"param_clf__C": np.ma.masked_array([1.0, 10.0, 100.0]), "mean_test_score": [0.75, 0.79, 0.80],
               "split0_test_score": [0.74, 0.78, 0.77], "split1_test_score": [0.75, 0.79, 0.80],
               "split2_test_score": [0.76, 0.80, 0.83]}
    assert one_standard_error(results, "clf__C") == 1
    assert one_standard_error({**results, "mean_test_score": [0.79, 0.785, 0.80]}, "clf__C") == 0  # ties: smallest C
    # steadier best folds (a smaller SE) leave only the best itself within reach
    steady = {**results, "split0_test_score": [0.74, 0.78, 0.799], "split2_test_score": [0.76, 0.80, 0.801]}
    assert one_standard_error(steady, "clf__C") == 2
    # a grid point with a mean the inner CV could not compute (NaN) is never chosen
    assert one_standard_error({**results, "mean_test_score": [np.nan, 0.79, 0.80]}, "clf__C") == 1


def test_a_classifier_tuned_by_the_one_se_rule_chooses_no_larger_c_than_the_best_mean_and_says_so():
    from ecgpipe.classify import fit_classifier

    X, y, g = _data(n_subjects=15)
    X = X + np.random.default_rng(0).normal(scale=1.5, size=X.shape)  # classes overlap: C values nearly tie
    best = ClassifierSettings(kind="svc", tune=True, C_grid=[0.3, 1.0, 10.0, 100.0], inner_splits=3)
    one_se = best.model_copy(update={"inner_choice": "one_se"})
    _, chosen_best = fit_classifier(X, y, best, groups=g)
    model_se, chosen_se = fit_classifier(X, y, one_se, groups=g)
    # the highest inner mean is C = 1; C = 0.3 is within one SE of it and more regularised
    assert chosen_best["C"] == 1.0 and chosen_se["C"] == 0.3 and model_se[-1].C == 0.3
    assert "(one-SE)" in one_se.label and "(one-SE)" not in best.label
    with pytest.raises(ValueError, match="inner_choice"):
        ClassifierSettings(tune=True, inner_choice="one-se")


def test_an_svcs_probability_calibration_keeps_subjects_apart_when_given_them():
    from sklearn.svm import SVC

    from ecgpipe.calibration import SubjectCalibratedClassifier, grouped_calibration_folds
    from ecgpipe.classify import build_classifier, fit_classifier

    X, y, g = _data()
    settings = ClassifierSettings(kind="svc", record_rule="mean_probability", C=10.0)
    grouped, grouped_chosen = fit_classifier(X, y, settings, groups=g)
    rowwise, rowwise_chosen = fit_classifier(X, y, settings)
    assert "calibration_folds" not in grouped_chosen and "calibration_folds" not in rowwise_chosen  # as asked: no note
    assert isinstance(grouped[-1], SubjectCalibratedClassifier) and grouped[-1].cv == 5  # its setting, as asked
    folds = grouped_calibration_folds(y, g, 5)
    assert len(folds) == 4 and all(not set(g[a]) & set(g[b]) for a, b in folds)  # 4 subjects per class: 4 folds
    # the sigmoid was learnt from decision values of models that never saw the row's subject: exactly the
    # calibration on those folds, and not the row-wise one
    reference = build_classifier(settings).set_params(clf__cv=folds).fit(X, y)
    np.testing.assert_array_equal(grouped.predict_proba(X), reference.predict_proba(X))
    assert np.abs(grouped.predict_proba(X) - rowwise.predict_proba(X)).max() > 1e-3
    # tuned: the subjects reach the refit's calibration through GridSearchCV (sliced per inner fold on the way)
    tuned, chosen = fit_classifier(X, y, settings.model_copy(update={"tune": True, "C_grid": [1.0, 10.0]}), groups=g)
    refit, _ = fit_classifier(X, y, settings.model_copy(update={"C": chosen["C"]}), groups=g)
    np.testing.assert_array_equal(tuned.predict_proba(X), refit.predict_proba(X))
    assert grouped[-1].calibration_folds_ == "subjects" and rowwise[-1].calibration_folds_ == "rows"
    # a class held by one subject cannot be calibrated over subjects: row-wise folds, as without groups, and the
    # fitted model says so; scikit-learn's cv=None (5 folds) works with groups too
    assert grouped_calibration_folds(np.array([0, 0, 1, 1]), np.array(["a", "a", "b", "c"]), 5) is None
    one_subject = np.where(y == 0, "s0", g)
    fell_back, chosen = fit_classifier(X, y, settings, groups=one_subject)
    assert fell_back[-1].calibration_folds_ == "rows" and chosen["calibration_folds"] == "rows"  # the report says so
    tuned_back = fit_classifier(X, y, settings.model_copy(update={"tune": True, "C_grid": [1.0, 10.0]}), groups=one_subject)
    assert tuned_back[1]["calibration_folds"] == "rows"
    plain = SubjectCalibratedClassifier(SVC(), cv=None, ensemble=False).fit(X, y, groups=g)
    assert plain.calibration_folds_ == "subjects" and plain.cv is None


def test_the_runs_cv_seed_shuffles_the_inner_folds_too_and_linear_svc_is_seeded(monkeypatch):
    """cv.seed moved only the outer folds: the inner CV's (and the refit's) were always seed 0, so a seed study
    understated the spread. And LinearSVC's dual solver shuffles rows with the global RNG unless seeded."""
    from ecgpipe import classify
    from ecgpipe.config import CVSettings

    seen = []
    real = classify.inner_splits
    monkeypatch.setattr(classify, "inner_splits", lambda settings, y, groups, seed=0: seen.append(seed) or real(settings, y, groups, seed))
    X, y, g = _data()
    tuned = ClassifierSettings(kind="logreg", tune=True, C_grid=[0.1, 1.0])
    names = [str(c) for c in sorted(set(y))]
    classify.evaluate_protocol(X, y, g, names, "grouped_by_subject", tuned, CVSettings(n_splits=2, seed=7))
    assert seen and set(seen) == {7}
    svc = classify.build_classifier(ClassifierSettings(kind="linear_svc", seed=3))
    assert svc[-1].random_state == 3
    assert not any(w.startswith("seed") for w in ClassifierSettings(kind="linear_svc", seed=3).unused_settings())
    assert "seed = 3: only kind = 'hgb' or 'linear_svc' reads it" in ClassifierSettings(kind="logreg", seed=3).unused_settings()
