"""Every solver reaches an independently computed optimum; sparsity, CSR, accounting, API."""
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize

from hpccl.erm import Problem, ProblemError, reference_optimum, solve
from hpccl.erm.sklearn_ref import saga_fit, sklearn_params

L1, L2 = 1e-3, 1e-2
REL = 1e-8


def breast_cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return (X - X.mean(0)) / X.std(0), np.where(y == 1, 1.0, -1.0)


def lbfgsb_optimum(prob):
    """Independent optimum: x = u - v with u, v >= 0 makes the elastic net smooth; L-BFGS-B."""
    X, y, loss, d = prob.X, prob.y, prob.loss, prob.dim

    def fg(w):
        u, v = w[:d], w[d:]
        x = u - v
        t = X @ x
        g = X.T @ loss.deriv(t, y) / len(y) + prob.l2 * x
        f = loss.value(t, y).mean() + prob.l1 * w.sum() + 0.5 * prob.l2 * x @ x
        return f, np.concatenate([g + prob.l1, -g + prob.l1])

    r = minimize(fg, np.zeros(2 * d), jac=True, method="L-BFGS-B", bounds=[(0, None)] * (2 * d),
                 options=dict(maxiter=20000, ftol=1e-16, gtol=1e-13, maxcor=30))
    return r.fun


@pytest.fixture(scope="module")
def problem():
    X, y = breast_cancer()
    prob = Problem(X, y, loss="logistic", l1=L1, l2=L2)
    return prob, reference_optimum(prob, tol=1e-12)


def test_reference_is_certified_and_matches_an_independent_method(problem):
    prob, ref = problem
    assert ref.gap_bound is not None and ref.gap_bound <= 1e-12 * ref.f_star
    f_lb = lbfgsb_optimum(prob)
    # L-BFGS-B is a different algorithm on a different formulation; it can only be above.
    assert ref.f_star <= f_lb + 1e-15
    assert (f_lb - ref.f_star) / ref.f_star < 1e-9


SOLVER_RUNS = [
    ("dasvrda", {}),  # the paper's defaults, uniform sampling, function restart
    ("dasvrda", {"restart": "gradient", "step_scale": 8}),
    ("dasvrda", {"restart": "fixed", "step_scale": 8}),  # Algorithm 3 (DASVRDA^sc)
    ("dasvrda", {"restart": "none", "step_scale": 8}),  # Algorithm 1 alone
    ("dasvrda", {"importance": True}),
    ("dasvrda", {"batch_size": 1, "step_scale": 8}),
    ("svrg", {"batch_size": 8, "importance": True}),
    ("katyusha", {"batch_size": 8, "importance": True}),
    ("fista", {}),
]


@pytest.mark.parametrize("name,opts", SOLVER_RUNS)
def test_solver_reaches_optimum(problem, name, opts):
    prob, ref = problem
    res = solve(prob, name, epochs=800, f_star=ref.f_star, target_subopt=REL * ref.f_star,
                **opts)
    assert res.stop_reason == "target", (res.stop_reason, res.subopt)
    assert abs(res.objective - ref.f_star) <= REL * ref.f_star
    # The history is consistent: passes grow, the last record is the result.
    passes = [h.passes for h in res.history]
    assert passes[0] == 0 and all(a < b for a, b in zip(passes, passes[1:]))


def test_sgd_converges_slowly(problem):
    """Plain prox-SGD has no variance reduction: O(1/k), so only a loose check."""
    prob, ref = problem
    res = solve(prob, "sgd", epochs=60, f_star=ref.f_star, batch_size=8, importance=True)
    assert res.subopt / ref.f_star < 1e-2
    assert res.history[-1].subopt < res.history[1].subopt


@pytest.mark.parametrize("loss", ["squared", "smoothed_hinge"])
def test_other_losses(loss):
    X, y = breast_cancer()
    prob = Problem(X, y, loss=loss, l1=L1, l2=L2)
    ref = reference_optimum(prob)
    assert ref.gap_bound <= 1e-12 * max(1.0, ref.f_star)
    assert abs(lbfgsb_optimum(prob) - ref.f_star) <= 1e-9 * max(1.0, ref.f_star)
    res = solve(prob, "dasvrda", epochs=800, f_star=ref.f_star, importance=True,
                target_subopt=REL * ref.f_star)
    assert res.stop_reason == "target"


def test_l1_gives_exact_zeros():
    X, y = breast_cancer()
    prob = Problem(X, y, loss="logistic", l1=0.03, l2=1e-2)
    ref = reference_optimum(prob)
    zeros = ref.x == 0.0
    assert 5 <= zeros.sum() < X.shape[1]  # a genuinely sparse solution
    res = solve(prob, "dasvrda", epochs=800, f_star=ref.f_star, importance=True,
                target_subopt=1e-10)
    assert res.stop_reason == "target"
    # Dual averaging returns exact zeros (not 1e-17s) on the reference's zero set.
    np.testing.assert_array_equal(res.x == 0.0, zeros)


def test_sparse_csr_matches_dense(problem):
    prob, ref = problem
    Xs = sp.csr_matrix(np.where(np.abs(prob.X) < 0.5, 0.0, prob.X))  # really sparse
    dense = Problem(Xs.toarray(), prob.y, loss="logistic", l1=L1, l2=L2)
    csr = Problem(Xs, prob.y, loss="logistic", l1=L1, l2=L2)
    for name, opts in [("dasvrda", {}), ("dasvrda", {"importance": True}),
                       ("katyusha", {"batch_size": 8}), ("svrg", {"batch_size": 8})]:
        a = solve(dense, name, epochs=1e9, max_stages=6, seed=3, **opts)
        b = solve(csr, name, epochs=1e9, max_stages=6, seed=3, **opts)
        np.testing.assert_allclose(b.x, a.x, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose([h.objective for h in b.history],
                                   [h.objective for h in a.history], rtol=1e-12)
    assert abs(reference_optimum(csr).f_star - reference_optimum(dense).f_star) < 1e-13


def test_sklearn_saga_parameter_conversion(problem):
    prob, ref = problem
    p = sklearn_params(prob.n_local, L1, L2)
    assert p["C"] == pytest.approx(1.0 / (prob.n_local * (L1 + L2)))
    assert p["l1_ratio"] == pytest.approx(L1 / (L1 + L2))
    w, epochs, _ = saga_fit(prob, max_iter=3000, tol=1e-12)
    f = prob.loss.value(prob.X @ w, prob.y).mean() + prob.regularizer.value(w)
    # Same problem => same optimum (a wrong C scaling would be off by far more).
    assert abs(f - ref.f_star) <= REL * ref.f_star
    np.testing.assert_allclose(w, ref.x, atol=1e-3)
    assert np.array_equal(w == 0.0, ref.x == 0.0) or np.abs(w[ref.x == 0]).max() < 1e-6


def test_communication_accounting(problem):
    prob, _ = problem
    res = solve(prob, "dasvrda", epochs=1e9, max_stages=3)
    m, b, n, d = res.params["m"], res.params["batch_size"], prob.n_local, prob.dim
    assert b == int(np.sqrt(n)) and m == -(-n // b)
    h = res.history
    # Stage 1 also pays the initial full gradient; every stage: m + 1 allreduces.
    assert h[1].allreduces == 1 + (m + 1)
    assert h[2].allreduces - h[1].allreduces == m + 1
    assert h[2].allreduce_bytes - h[1].allreduce_bytes == 8 * (d + 1) + 8 * d * m
    assert h[2].passes - h[1].passes == pytest.approx(1 + m * b / n)


def test_defaults_follow_the_paper(problem):
    prob, _ = problem
    res = solve(prob, "dasvrda", epochs=1e9, max_stages=1)
    p = res.params
    b, m = p["batch_size"], p["m"]
    gamma = (3 + np.sqrt(9 + 8 * b / (m + 1))) / 2
    L = np.max(0.25 * np.sum(prob.X**2, axis=1))
    assert p["gamma"] == pytest.approx(gamma)
    assert p["eta"] == pytest.approx(1 / ((1 + gamma * (m + 1) / b) * L))


def test_callback_and_history(problem):
    prob, ref = problem
    seen = []

    def cb(rec):
        seen.append(rec)
        return rec.stage >= 2  # ask to stop

    res = solve(prob, "dasvrda", epochs=1e9, f_star=ref.f_star, callback=cb)
    assert res.stop_reason == "callback" and len(seen) == 2 and len(res.history) == 3
    cols = res.history_arrays()
    assert set(cols) >= {"objective", "subopt", "passes", "wall_time", "allreduces"}
    assert np.all(np.diff(cols["wall_time"]) >= 0)
    assert res.subopt == pytest.approx(res.objective - ref.f_star)


def test_bad_input_is_reported():
    with pytest.raises(ProblemError, match="labels"):
        Problem(np.eye(3), np.array([0.0, 1.0, 1.0]), loss="logistic")
    with pytest.raises(ProblemError):
        Problem(np.eye(3), np.ones(2))
    prob = Problem(np.eye(3), np.ones(3), l2=1.0)
    with pytest.raises(TypeError, match="unknown option"):
        solve(prob, "dasvrda", batchsize=3)
    with pytest.raises(ValueError, match="unknown solver"):
        solve(prob, "adam")
