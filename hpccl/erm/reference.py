"""High-precision reference optimum f_star = min_x P(x), certified.

Method (deliberately unlike the stochastic solvers it is used to judge):

1. FISTA (Beck & Teboulle 2009) with backtracking on L and O'Donoghue & Candes' (2015)
   gradient-based adaptive restart: deterministic full gradients, linear convergence on
   strongly convex problems without knowing mu.  It is also exposed as the solver
   "fista" so that it runs in the same harness.
2. Newton polish: once FISTA has identified the support and signs of the solution, the
   objective restricted to that support is smooth (|x_j| = s_j x_j there), and a few
   damped Newton steps on it reach machine precision.
3. Certificate: r = least-norm element of dP(x) (:meth:`ElasticNet.min_norm_subgradient`).
   For mu = l2 > 0, strong convexity gives  P(x) - P* <= ||r||^2 / (2 mu),  a rigorous
   bound that is checked against ``tol * max(1, |P(x)|)``.  If the polish picked a wrong
   support the bound simply fails and FISTA continues.  Without l2 no bound exists and
   ``gap_bound`` is None (the KKT residual is still reported).

Everything goes through the same :class:`Oracle`, so it also runs on sharded data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from hpccl.erm.oracle import Oracle
from hpccl.erm.problem import Problem
from hpccl.erm.solvers.fista import FISTA


def kkt_residual(oracle: Oracle, x: np.ndarray):
    """(||r||, P(x)) with r the least-norm subgradient of P at x (untracked)."""
    g, P = oracle.gradient_untracked(x)
    r = oracle.reg.min_norm_subgradient(x, g)
    return float(np.linalg.norm(r)), P


def newton_polish(oracle: Oracle, x: np.ndarray, max_iter: int = 50) -> np.ndarray:
    """Damped Newton on the support of x with its signs fixed (see module docstring)."""
    reg, loss, X, y_lab, n = oracle.reg, oracle.loss, oracle.X, oracle.y, oracle.n
    S = np.flatnonzero(x) if reg.l1 else np.arange(x.shape[0])
    if S.size == 0:
        return x.copy()
    s = np.sign(x[S])
    XS = X[:, S]
    if hasattr(XS, "toarray") and S.size <= 2000:
        XS = XS.toarray()  # column slices of CSR are cheap to densify at these sizes

    def smooth_obj(xS):
        t = XS @ xS
        v = oracle.coll.sum(np.array([loss.value(t, y_lab).sum()]))[0] / n
        return v + reg.l1 * float(s @ xS) + 0.5 * reg.l2 * float(xS @ xS)

    xS = x[S].copy()
    Q = smooth_obj(xS)
    for _ in range(max_iter):
        t = XS @ xS
        k = S.size
        buf = np.empty(k + k * k)
        buf[:k] = XS.T @ loss.deriv(t, y_lab)
        w = loss.deriv2(t, y_lab)
        H = XS.T @ (XS * w[:, None]) if isinstance(XS, np.ndarray) else (XS.T @ XS.multiply(w[:, None])).toarray()
        buf[k:] = np.asarray(H).ravel()
        buf = oracle.coll.sum(buf)
        grad = buf[:k] / n + reg.l1 * s + reg.l2 * xS
        H = buf[k:].reshape(k, k) / n + reg.l2 * np.eye(k)
        try:
            step = -np.linalg.solve(H, grad)
        except np.linalg.LinAlgError:
            step = -np.linalg.lstsq(H, grad, rcond=None)[0]
        dec = -float(grad @ step)
        if not dec > 1e-32:
            break
        a = 1.0
        while a > 1e-10:
            cand = xS + a * step
            Qc = smooth_obj(cand)
            if Qc <= Q - 0.25 * a * dec or (a == 1.0 and dec < 1e-20):
                break
            a *= 0.5
        else:
            break
        xS, Q = cand, Qc
    out = np.zeros_like(x)
    out[S] = xS
    return out


@dataclass
class ReferenceSolution:
    f_star: float
    x: np.ndarray
    gap_bound: Optional[float]  # proven bound on f_star - P*, None without l2
    kkt_residual: float
    fista_iterations: int


def reference_optimum(problem: Problem, comm=None, tol: float = 1e-12,
                      max_fista_iterations: int = 200_000, chunk: int = 200,
                      x0: Optional[np.ndarray] = None,
                      oracle: Optional[Oracle] = None,
                      kkt_tol: float = 1e-10) -> ReferenceSolution:
    """f_star to relative accuracy ``tol`` (certified when l2 > 0).

    Runs FISTA in chunks of ``chunk`` iterations, polishing with Newton after each;
    returns as soon as the certificate P(x) - P* <= ||r||^2/(2 l2) is below
    tol * max(1, |P|).  Without l2 it stops once the KKT residual is below
    kkt_tol * max(1, |P|), and no certificate is given (``gap_bound`` None).
    """
    oracle = oracle or Oracle(problem, comm)
    mu = oracle.reg.strong_convexity
    x = np.zeros(oracle.dim) if x0 is None else np.asarray(x0, dtype=np.float64)
    gen = FISTA(oracle, x).stages()
    best = None  # (P, x, residual): the best upper bound on P* and its point
    lower = -np.inf  # the best certified lower bound on P*
    it = 0
    while it < max_fista_iterations:
        for _ in range(chunk):
            x, _, _ = next(gen)
            it += 1
        for cand in (x, newton_polish(oracle, x)):
            res, P = kkt_residual(oracle, cand)
            if best is None or P < best[0]:
                best = (P, cand.copy(), res)
            if mu > 0:
                lower = max(lower, P - res * res / (2.0 * mu))
        P, xb, res = best
        if mu > 0 and P - lower <= tol * max(1.0, abs(P)):
            break
        if mu == 0 and res <= kkt_tol * max(1.0, abs(P)):
            break
    P, xb, res = best
    return ReferenceSolution(P, xb, max(P - lower, 0.0) if mu > 0 else None, res, it)
