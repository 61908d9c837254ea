"""An RBF support-vector classifier that hands libsvm a kernel matrix computed with BLAS.

libsvm evaluates each RBF kernel entry in its own scalar loop over the features; scikit-learn's ``rbf_kernel`` computes
the whole matrix with one matrix product. With ``kernel="precomputed"`` libsvm only looks entries up, so a fit on a few
thousand PCA-128 rows takes about half the time (``tests/benchmarks/bench_classify.py``). The model is libsvm's: the
same C, gamma (``"scale"`` as scikit-learn defines it), class weights and solver; the kernel values differ from libsvm's
own only in the last bits of floating point, so a decision exactly on a boundary may rarely go the other way.

At prediction the kernel is computed against the support vectors only (the other training rows have no weight).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics.pairwise import rbf_kernel
from sklearn.svm import SVC


class RBFKernelSVC(ClassifierMixin, BaseEstimator):
    """``SVC(kernel="rbf", C, gamma, class_weight)``, fitted on a BLAS-computed kernel matrix."""

    def __init__(self, C: float = 1.0, gamma: str | float = "scale", class_weight=None, cache_size: float = 1000):
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight
        self.cache_size = cache_size

    def fit(self, X, y, sample_weight=None):
        X = np.asarray(X, dtype=np.float64)
        if self.gamma == "scale":  # scikit-learn's definition for a dense X
            variance = X.var()
            self.gamma_ = 1.0 / (X.shape[1] * variance) if variance != 0 else 1.0
        else:
            self.gamma_ = float(self.gamma)
        self.svc_ = SVC(kernel="precomputed", C=self.C, class_weight=self.class_weight, cache_size=self.cache_size)
        self.svc_.fit(rbf_kernel(X, X, gamma=self.gamma_), y, sample_weight=sample_weight)
        self.support_vectors_ = X[self.svc_.support_]
        self.n_fit_ = X.shape[0]
        self.classes_ = self.svc_.classes_
        self.n_features_in_ = X.shape[1]
        return self

    def _kernel(self, X) -> np.ndarray:
        """Kernel rows against every training row, as libsvm expects; zero where a row is not a support vector."""
        X = np.asarray(X, dtype=np.float64)
        K = np.zeros((X.shape[0], self.n_fit_))
        K[:, self.svc_.support_] = rbf_kernel(X, self.support_vectors_, gamma=self.gamma_)
        return K

    def decision_function(self, X) -> np.ndarray:
        return self.svc_.decision_function(self._kernel(X))

    def predict(self, X) -> np.ndarray:
        return self.svc_.predict(self._kernel(X))
