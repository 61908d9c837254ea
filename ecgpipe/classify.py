"""Cross-validated classification of feature vectors under the protocols of ``ecgpipe.protocols``: the classifiers
(one scikit-learn Pipeline each), the folds, and the metrics of out-of-fold predictions.

Metrics are computed on the pooled out-of-fold predictions (so the confusion matrix and accuracy agree exactly), and
per fold (mean and std in the report).
"""

from __future__ import annotations

import tempfile
import warnings
from functools import partial

import numpy as np
from joblib import Memory
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

from ecgpipe.calibration import SubjectCalibratedClassifier, rowwise_calibration
from ecgpipe.config import ClassifierSettings, CVSettings, EndpointSettings
from ecgpipe.endpoints import endpoint_results, one_vs_rest_specificity, percentile_interval
from ecgpipe.kernels import RBFKernelSVC
from ecgpipe.protocols import make_splits
from ecgpipe.protocols import protocol as protocol_named
from ecgpipe.results import ProtocolResult, SubjectOutcomes


class BlockWeights(TransformerMixin, BaseEstimator):
    """Weights two column blocks (CNN features, then rhythm features) so that the second block holds ``weight`` of
    the total variance (the expected squared distance between samples), whatever the blocks' widths: 1280 CNN
    columns would otherwise drown 8 RR columns in an RBF kernel. The blocks' variances are learnt on the training
    rows (after standardising, and after PCA when the CNN block is reduced)."""

    def __init__(self, n_first: int = 1, weight: float = 0.3, pca_first: bool = False):
        self.n_first = n_first
        self.weight = weight
        self.pca_first = pca_first  # the first block is a CappedPCA's: as wide as its fit rows allowed

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        self.n_first_ = min(self.n_first, X.shape[0]) if self.pca_first else self.n_first
        first, rest = X[:, : self.n_first_].var(axis=0).sum(), X[:, self.n_first_ :].var(axis=0).sum()
        self.scale_ = np.array([np.sqrt((1 - self.weight) / max(first, 1e-12)), np.sqrt(self.weight / max(rest, 1e-12))])
        return self

    def transform(self, X):
        X = np.array(X, dtype=np.float64, copy=True)
        n_first = getattr(self, "n_first_", self.n_first)  # models saved before n_first_ existed
        X[:, :n_first] *= self.scale_[0]
        X[:, n_first:] *= self.scale_[1]
        return X


class CappedPCA(TransformerMixin, BaseEstimator):
    """PCA to ``n_components``, or to as many as the rows it is fitted on allow: a small dataset's fold (a pilot, a
    sweep on a slice) has fewer training rows than PCA-128 asks, which scikit-learn's PCA refuses, failing the run."""

    def __init__(self, n_components: int = 128, random_state: int = 0):
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X, y=None):
        self.fit_transform(X)
        return self

    def fit_transform(self, X, y=None):
        # scikit-learn's PCA.fit_transform, as before the cap: on the rows it is fitted to it returns U * S of its
        # (randomized, for PCA-128 of 1280 columns) SVD, which differs from transform(X) by a few percent in the
        # later components; inner CV choices of C are near ties that this difference decides, so every published
        # result depends on it (0.3.0 projected training rows with transform and moved paper4-best's grouped fold 2)
        X = np.asarray(X)
        self.n_components_ = min(self.n_components, X.shape[0], X.shape[1])
        self.pca_ = PCA(self.n_components_, random_state=self.random_state)
        self.n_features_in_ = X.shape[1]
        return self.pca_.fit_transform(X)

    def transform(self, X):
        return self.pca_.transform(X)


def _estimator(settings: ClassifierSettings, blas_kernel: bool = True):
    if settings.kind == "svc":
        if settings.kernel == "rbf" and blas_kernel:  # libsvm's model on a BLAS-computed kernel: ~3x faster predictions
            svc = RBFKernelSVC(C=settings.C, gamma=settings.gamma, class_weight=settings.class_weight)
        else:  # a larger kernel cache only makes fitting faster (scikit-learn's default is 200 MB)
            svc = SVC(kernel=settings.kernel, C=settings.C, gamma=settings.gamma, class_weight=settings.class_weight, cache_size=1000)
        if settings.uses_probabilities:
            # Platt scaling on 5-fold out-of-fold decision values (folds over subjects when fit is given them), then
            # one SVC on all rows: scikit-learn's replacement for the deprecated SVC(probability=True)
            return SubjectCalibratedClassifier(svc, method="sigmoid", cv=5, ensemble=False)
        return svc
    if settings.kind == "hgb":
        # early stopping off: a fit never depends on a random validation split, so results are reproducible
        return HistGradientBoostingClassifier(
            learning_rate=settings.learning_rate, max_iter=settings.max_iter, max_leaf_nodes=settings.max_leaf_nodes,
            l2_regularization=settings.l2_regularization, min_samples_leaf=settings.min_samples_leaf,
            class_weight=settings.class_weight, early_stopping=False,
            random_state=settings.seed)
    if settings.kind == "linear_svc":
        # its dual solver shuffles the rows: seeded, or a fit on fewer rows than columns is not reproducible
        return LinearSVC(C=settings.C, class_weight=settings.class_weight, max_iter=5000, random_state=settings.seed)
    return LogisticRegression(C=settings.C, class_weight=settings.class_weight, max_iter=3000)


def build_classifier(settings: ClassifierSettings, n_cnn: int | None = None, blas_kernel: bool = True) -> Pipeline:
    """Standardise (PCA-reduce the CNN block if asked; weight the CNN and rhythm blocks when fused), then classify.
    ``n_cnn`` is the number of CNN columns in front of the rhythm columns (inputs='cnn+rhythm' only)."""
    reduce = [("pca", CappedPCA(settings.pca, random_state=0))] if settings.pca else []
    if settings.inputs == "cnn+rhythm":
        if not n_cnn:
            raise ValueError("inputs='cnn+rhythm' needs the number of CNN columns")
        cnn = Pipeline([("scale", StandardScaler()), *reduce])
        steps = [
            ("blocks", ColumnTransformer([("cnn", cnn, slice(0, n_cnn)), ("rhythm", StandardScaler(), slice(n_cnn, None))])),
            ("weights", BlockWeights(min(settings.pca, n_cnn) if settings.pca else n_cnn, settings.rhythm_weight,
                                     pca_first=bool(settings.pca))),
        ]
    else:
        steps = [("scale", StandardScaler()), *(reduce if settings.inputs == "cnn" else [])]
    return Pipeline([*steps, ("clf", _estimator(settings, blas_kernel))])


def design_matrix(cnn: np.ndarray | None, rhythm: np.ndarray | None, settings: ClassifierSettings) -> np.ndarray:
    """The columns a classifier sees: CNN features, rhythm features, or both side by side (CNN first)."""
    needed = {"cnn": [cnn], "rhythm": [rhythm], "cnn+rhythm": [cnn, rhythm]}[settings.inputs]
    if any(block is None for block in needed):
        raise ValueError(f"classifier {settings.label!r} needs {settings.inputs} features, which this run has not computed")
    return np.hstack(needed) if len(needed) > 1 else needed[0]


def inner_splits(settings: ClassifierSettings, y: np.ndarray, groups: np.ndarray | None, seed: int = 0) -> list:
    """The inner CV's folds over one outer training set: grouped by subject when ``groups`` is given. Folds whose
    training rows hold one class teach nothing and are left out; none at all (a training set of one subject, or of a
    class with one row) means nothing can be tuned here (``fit_classifier`` then fits the configured values)."""
    if groups is not None:
        k = min(settings.inner_splits, len(np.unique(groups)))
    else:
        k = min(settings.inner_splits, int(np.unique(y, return_counts=True)[1].min()))
    if k < 2:
        return []
    splitter = (StratifiedGroupKFold if groups is not None else StratifiedKFold)(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [(train, test) for train, test in splitter.split(np.zeros(len(y)), y, groups) if len(np.unique(y[train])) > 1]


def fit_classifier(X, y, settings: ClassifierSettings, n_cnn=None, groups=None, seed: int = 0, reuse_transforms: bool = True,
                   blas_kernel: bool = True, subjects=None, weight_classes=None):
    """Fit on training rows. With ``tune``, C (and gamma for an RBF SVC) are chosen by an inner CV on these rows only
    (macro-F1; ``settings.inner_choice``: the best mean, or ``one_standard_error``), grouped by subject when ``groups``
    is given (so are an SVC's probability calibration folds), so the outer test fold never influences the choice.

    The grid varies only the final estimator, so each inner fold's preprocessing (scaling, PCA, block weights) is
    fitted once and reused for every grid value (scikit-learn's Pipeline ``memory``: a joblib cache of fitted
    transformers in a temporary folder), with the numbers of refitting it (``reuse_transforms=False``, for
    tests/benchmarks/bench_classify.py). An RBF SVC is libsvm's model fitted on a kernel matrix computed with BLAS
    (``ecgpipe.kernels``; ``blas_kernel=False``: libsvm's own kernel loop).

    With ``settings.subject_balance`` each row is weighted by ``subject_weights`` over ``subjects`` (every row's
    subject), within ``weight_classes`` (the rows' rhythm classes; default ``y``: a two-class detector passes the
    classes its two sides pool). The inner CV still scores unweighted macro-F1 on its held-out rows."""
    if len(np.unique(y)) < 2:  # a grouped fold of a few patients may train on one class: it can only answer that one
        return DummyClassifier(strategy="constant", constant=np.asarray(y)[:1]).fit(X, y), {}
    model = build_classifier(settings, n_cnn, blas_kernel)
    fit_params = {}
    if settings.subject_balance:
        if subjects is None:
            raise ValueError(f"classifier {settings.label!r}: subject_balance needs each training row's subject")
        weights = subject_weights(y if weight_classes is None else weight_classes, subjects, settings.subject_balance)
        fit_params["clf__sample_weight"] = weights
    if groups is not None and isinstance(model[-1], CalibratedClassifierCV):  # its folds keep subjects apart too
        fit_params["clf__groups"] = groups
    splits = inner_splits(settings, y, groups, seed) if settings.tune else []
    if not splits:  # not tuned, or too few subjects to tune on: the configured values
        model.fit(X, y, **fit_params)
        return model, {**pca_capped(model), **rowwise_calibration(model, groups)}
    clf = "clf__estimator__" if isinstance(model[-1], CalibratedClassifierCV) else "clf__"
    grid = {f"{clf}learning_rate": list(settings.learning_rate_grid)} if settings.kind == "hgb" else {f"{clf}C": list(settings.C_grid)}
    if settings.kind == "svc" and settings.kernel != "linear":
        grid[f"{clf}gamma"] = list(settings.gamma_grid)
    with tempfile.TemporaryDirectory(prefix="ecgpipe-grid-") as cache:
        if reuse_transforms:
            model.set_params(memory=Memory(cache, verbose=0))
        refit = partial(one_standard_error, simplest=next(iter(grid))) if settings.inner_choice == "one_se" else True
        search = GridSearchCV(model, grid, cv=splits, scoring="f1_macro", refit=refit, n_jobs=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            search.fit(X, y, groups=groups, **fit_params)
    chosen = {k.removeprefix(clf): v for k, v in search.best_params_.items()}
    best = search.best_estimator_.set_params(memory=None)  # the saved model points at no (deleted) cache
    return best, {**chosen, **pca_capped(best), **rowwise_calibration(best, groups)}


def one_standard_error(cv_results: dict, simplest: str) -> int:
    """GridSearchCV's ``refit`` rule 'one_se': of the grid points whose mean inner score is within one standard error
    (sample standard deviation of the best's fold scores over the square root of their number) of the best mean, the
    one with the smallest ``simplest`` parameter (C, or the learning rate: the most regularised), the best mean among
    ties (Hastie, Tibshirani, Friedman, The Elements of Statistical Learning, 7.10)."""
    means = np.asarray(cv_results["mean_test_score"], dtype=float)
    folds = np.array([v for k, v in cv_results.items() if k.startswith("split") and k.endswith("_test_score")], dtype=float)
    best = int(np.nanargmax(means))
    se = np.std(folds[:, best], ddof=1) / np.sqrt(folds.shape[0]) if folds.shape[0] > 1 else 0.0
    near = np.flatnonzero(means >= means[best] - se)
    values = np.asarray(cv_results[f"param_{simplest}"], dtype=float)
    return int(min(near, key=lambda i: (values[i], -means[i])))


def pca_capped(model) -> dict:
    """``{"pca_components": n}`` when the fitted model's PCA kept fewer components than asked because its fold had
    fewer training rows (``CappedPCA``), for the report to say so; else empty. A block narrower than ``pca`` keeps
    all its columns: nothing to say."""
    def parts(est):
        yield est
        for child in [s for _, s in getattr(est, "steps", [])] + [t for _, t, _ in getattr(est, "transformers_", [])]:
            if isinstance(child, BaseEstimator):
                yield from parts(child)

    kept = [p.n_components_ for p in parts(model)
            if isinstance(p, CappedPCA) and p.n_components_ < min(p.n_components, p.n_features_in_)]
    return {"pca_components": min(kept)} if kept else {}


def subject_weights(classes: np.ndarray, subjects: np.ndarray, power: float) -> np.ndarray:
    """Training weights that keep a few long recordings from standing for a class: within each class, a row of a
    subject with n rows of that class weighs n ** -power, scaled so that the class's weights add up to its row count
    (class weights, e.g. 'balanced', act on top unchanged). power 0: every row alike; 1: every subject alike within a
    class (paper4's AF windows come from 10 patients, 33 to 318 windows each)."""
    classes, subjects = np.asarray(classes), np.asarray(subjects)
    if len(classes) != len(subjects):
        raise ValueError(f"subject_weights: {len(classes)} classes for {len(subjects)} subjects")
    weights = np.empty(len(classes), dtype=np.float64)
    for c in np.unique(classes):
        rows = classes == c
        _, which, counts = np.unique(subjects[rows], return_inverse=True, return_counts=True)
        raw = counts[which].astype(np.float64) ** -power
        weights[rows] = raw * rows.sum() / raw.sum()
    return weights


def fit_predict(
    X: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    classifier: ClassifierSettings,
    n_cnn: int | None = None,
    groups: np.ndarray | None = None,
    n_classes: int | None = None,
    subjects: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """Fit the classifier on one fold's training rows and predict its test rows; also the inner CV's choice and,
    when the record rule needs them, the test rows' class probabilities.
    ``groups`` (subjects) makes the inner CV of a tuned classifier grouped, as the outer one is; ``subjects`` (every
    row's, whatever the protocol) weights the training rows when the classifier balances subjects; ``seed`` (the
    run's ``cv.seed``) shuffles the inner folds."""
    model, chosen = fit_classifier(X[train], y[train], classifier, n_cnn, None if groups is None else groups[train],
                                   seed=seed, subjects=None if subjects is None else subjects[train])
    if classifier.uses_probabilities:
        proba = model.predict_proba(X[test])
        return model.classes_[np.argmax(proba, axis=1)], chosen, class_probabilities(proba, model.classes_, n_classes or int(y.max()) + 1)
    return model.predict(X[test]), chosen, None


def class_probabilities(proba: np.ndarray, fitted_classes: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n_classes) probabilities from a model's (n, len(fitted_classes)) ones: a class absent from a fold's
    training rows gets probability 0."""
    out = np.zeros((len(proba), n_classes), dtype=np.float64)
    out[:, np.asarray(fitted_classes, dtype=np.int64)] = proba
    return out


def _balanced_accuracy(y, y_pred) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a fold may lack a class (grouped folds often do)
        return float(balanced_accuracy_score(y, y_pred))


def macro_f1(y: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 over the classes these rows are annotated with. A class with no row here (missing from a grouped
    test fold, or from a dataset) has no F1: sklearn's ``labels=all`` would count it as 0 and pull the mean down
    (a fold of three classes out of four could score at most 0.75). The bootstrap intervals count classes the same
    way (``bootstrap_ci``, ``ecgpipe.compare``)."""
    present = np.flatnonzero(np.bincount(y, minlength=n_classes))
    return float(f1_score(y, y_pred, labels=present, average="macro", zero_division=0))


def bootstrap_ci(y, y_pred, groups, n_classes: int, n_boot: int = 1000, seed: int = 0) -> dict:
    """95 % intervals of accuracy and macro-F1, resampling *subjects* with replacement (segments of one patient are
    not independent, so resampling segments would give intervals that are too narrow)."""
    subjects, subject_of = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    cell = y * n_classes + y_pred
    acc, f1 = [], []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, len(subjects), len(subjects)), minlength=len(subjects))
        cm = np.bincount(cell, weights=counts[subject_of], minlength=n_classes * n_classes).reshape(n_classes, n_classes)
        tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1_c = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
        present = support > 0
        acc.append(tp.sum() / cm.sum())
        f1.append(f1_c[present].mean())
    return {
        "method": f"bootstrap over {len(subjects)} subjects, {n_boot} resamples",
        "accuracy": percentile_interval(acc),
        "macro_f1": percentile_interval(f1),
    }


def per_subject(y: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, class_names: list[str]) -> SubjectOutcomes:
    """Per (subject, annotated class), subjects sorted: how many of its segments were called each class. Errors across
    patients are rarely spread evenly: this shows which patients they come from."""
    k = len(class_names)
    subjects, subject_code = np.unique(np.asarray(groups), return_inverse=True)
    pairs, pair_code = np.unique(subject_code.ravel() * k + np.asarray(y), return_inverse=True)
    called = np.zeros((len(pairs), k), dtype=np.int64)
    np.add.at(called, (pair_code.ravel(), np.asarray(y_pred)), 1)
    return SubjectOutcomes(classes=list(class_names), subject=np.array([str(s) for s in subjects[pairs // k]], dtype=object),
                           class_index=pairs % k, called=called)


def summarize_protocol(
    y: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray,
    splits: list,
    class_names: list[str],
    note: str = "",
    chosen: list[dict] | None = None,
    endpoints: dict[str, EndpointSettings] | None = None,
    level: str = "window",
) -> ProtocolResult:
    """Metrics of out-of-fold predictions: pooled, per class, per fold, and the confusion matrix.
    Segments in no test fold (``y_pred < 0``: classes left out by leave-one-database-out) are not scored."""
    scored = y_pred >= 0
    if not scored.any():
        raise ValueError("no segment was in a test fold")
    y, y_pred, groups = y[scored], y_pred[scored], groups[scored]
    remap = np.cumsum(scored) - 1  # fold indices into the scored rows
    splits = [(remap[train], remap[test]) for train, test in splits]
    labels = np.arange(len(class_names))
    folds = []
    for i, (train, test) in enumerate(splits):
        folds.append(
            {
                "fold": i,
                "n_train": int(len(train)),
                "n_test": int(len(test)),
                "test_subjects": int(len(np.unique(groups[test]))),
                "accuracy": float(accuracy_score(y[test], y_pred[test])),
                "balanced_accuracy": _balanced_accuracy(y[test], y_pred[test]),
                "macro_f1": macro_f1(y[test], y_pred[test], len(class_names)),
                **({"chosen": chosen[i]} if chosen and chosen[i] else {}),
            }
        )
    precision, recall, f1, support = precision_recall_fscore_support(y, y_pred, labels=labels, zero_division=0)
    cm = confusion_matrix(y, y_pred, labels=labels)
    specificity = one_vs_rest_specificity(cm)
    fold_acc = np.array([f["accuracy"] for f in folds])
    fold_f1 = np.array([f["macro_f1"] for f in folds])
    return ProtocolResult.model_validate({
        "n_folds": len(splits),
        "note": note,
        "accuracy": float(accuracy_score(y, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, y_pred)),
        "macro_f1": macro_f1(y, y_pred, len(class_names)),
        "balanced_accuracy_fold_std": float(np.std([f["balanced_accuracy"] for f in folds])),
        "accuracy_fold_mean": float(fold_acc.mean()),
        "accuracy_fold_std": float(fold_acc.std()),
        "macro_f1_fold_mean": float(fold_f1.mean()),
        "macro_f1_fold_std": float(fold_f1.std()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "specificity": specificity[i],
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
        "ci95": bootstrap_ci(y, y_pred, groups, len(class_names)),
        "per_subject": per_subject(y, y_pred, groups, class_names),
        "folds": folds,
        "endpoints": {k: v.to_json() for k, v in endpoint_results(y, y_pred, groups, class_names, endpoints or {}).items()},
        "level": level,
    })


def collect_predictions(n: int, folds: list[tuple[list, list, dict]]) -> tuple[np.ndarray, list[dict]]:
    """Out-of-fold predictions of ``n`` rows from each fold's (test rows, predictions, inner-CV choice); rows in no
    test fold stay -1 (not scored)."""
    y_pred = np.full(n, -1, dtype=np.int64)
    chosen = []
    for test, pred, params in folds:
        y_pred[np.asarray(test, dtype=np.int64)] = pred
        chosen.append(params)
    return y_pred, chosen


def collect_probabilities(n: int, n_classes: int, folds: list[tuple[list, list]]) -> np.ndarray:
    """Out-of-fold class probabilities (n, n_classes) from each fold's (test rows, probabilities); NaN where unscored."""
    y_proba = np.full((n, n_classes), np.nan)
    for test, proba in folds:
        y_proba[np.asarray(test, dtype=np.int64)] = np.asarray(proba, dtype=np.float64).reshape(len(test), n_classes)
    return y_proba


def evaluate_protocol(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    class_names: list[str],
    protocol: str,
    classifier: ClassifierSettings,
    cv: CVSettings,
    databases: np.ndarray | None = None,
    n_cnn: int | None = None,
) -> ProtocolResult:
    """One protocol on a plain matrix, in this process, with the steps the pipeline's fold tasks run."""
    splits, note = make_splits(protocol, y, groups, cv, databases, class_names)
    folds = []
    for train, test in splits:
        pred, params, _ = fit_predict(X, y, train, test, classifier, n_cnn, inner_groups(protocol, groups), subjects=groups,
                                      seed=cv.seed)
        folds.append((test, pred, params))
    y_pred, chosen = collect_predictions(len(y), folds)
    return summarize_protocol(y, y_pred, groups, splits, class_names, note, chosen)


def inner_groups(protocol: str, groups: np.ndarray) -> np.ndarray | None:
    """Subjects for the inner CV when the outer protocol keeps subjects apart; None for the paper's protocol."""
    return groups if protocol_named(protocol).grouped else None
