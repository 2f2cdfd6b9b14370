"""scikit-learn's SAGA on the same problem: the external reference solver.

scikit-learn's LogisticRegression (no intercept) minimizes

    C * sum_i log(1 + exp(-y_i a_i^T w)) + (1 - rho)/2 ||w||^2 + rho ||w||_1,

with rho = l1_ratio, while hpccl minimizes (1/n) sum_i log(1 + exp(-y_i a_i^T w))
+ l1 ||w||_1 + (l2/2) ||w||^2.  Dividing sklearn's objective by C n shows they are the same
problem (same minimizer) when

    1/(C n) = l1 + l2    and    rho = l1 / (l1 + l2),

i.e. C = 1 / (n (l1 + l2)), l1_ratio = l1 / (l1 + l2).  (sklearn's saga itself rescales
its penalty by 1/n internally; see sklearn.linear_model._sag.sag_solver.)  Only the
logistic loss is supported by sklearn here; no penalty (l1 = l2 = 0) maps to C = inf.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from hpccl.erm.problem import Problem


def sklearn_params(n: int, l1: float, l2: float) -> dict:
    """C and l1_ratio for which sklearn's objective is (C n) times ours."""
    alpha = l1 + l2
    if alpha == 0:
        return {"C": np.inf, "l1_ratio": 0.0}
    return {"C": 1.0 / (n * alpha), "l1_ratio": l1 / alpha}


def _estimator(n, l1, l2, max_iter, tol, seed):
    import sklearn
    from sklearn.linear_model import LogisticRegression

    p = sklearn_params(n, l1, l2)
    kw = dict(C=p["C"], l1_ratio=p["l1_ratio"], solver="saga", fit_intercept=False,
              max_iter=max_iter, tol=tol, random_state=seed)
    major, minor = (int(v) for v in sklearn.__version__.split(".")[:2])
    if (major, minor) < (1, 8):
        # Before 1.8 the penalty had to be named; l1_ratio alone was ignored.
        kw["penalty"] = "elasticnet" if 0 < p["l1_ratio"] < 1 else (
            "l1" if p["l1_ratio"] == 1 else "l2")
        if kw["penalty"] != "elasticnet":
            kw.pop("l1_ratio")
    return LogisticRegression(**kw)


def saga_fit(problem: Problem, max_iter: int, tol: float = 0.0, seed: int = 0):
    """Fit with sklearn saga; returns (w, epochs run, seconds).  Single process only."""
    if problem.loss.name != "logistic":
        raise ValueError("sklearn reference: logistic loss only")
    est = _estimator(problem.n or problem.n_local, problem.l1, problem.l2, max_iter, tol, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning is expected with tol=0
        t0 = time.perf_counter()
        est.fit(problem.X, problem.y)
        dt = time.perf_counter() - t0
    return est.coef_.ravel().copy(), int(np.max(est.n_iter_)), dt
