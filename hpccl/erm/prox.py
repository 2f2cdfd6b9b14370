"""Regularizers R(x) = l1 ||x||_1 + (l2/2) ||x||_2^2 and their exact proximal maps.

prox_{tau R}(v) = argmin_z  R(z) + ||z - v||^2 / (2 tau).  For the elastic net this is
separable and closed-form:

    prox_{tau R}(v) = soft_threshold(v, tau*l1) / (1 + tau*l2),

(soft-threshold for the l1 part, then the shrinkage of the l2 part; the order is the
exact solution of the coordinate-wise problem, not an approximation).  L1 (l2 = 0),
L2 (l1 = 0) and the elastic net are the same class.

The l2 weight is also the strong-convexity modulus mu of the objective that the
strongly convex variants (restarted DASVRDA, the reference certificate) rely on.
"""
from __future__ import annotations

import numpy as np


def soft_threshold(v: np.ndarray, t: float) -> np.ndarray:
    """sign(v) * max(|v| - t, 0), with *exact* zeros where |v| <= t.

    Written as v - clip(v, -t, t): for |v| <= t that is v - v, which is exactly +0.0 in
    IEEE arithmetic (no -0.0, no tiny residue), so L1 solutions are truly sparse.
    """
    if t < 0:
        raise ValueError(f"threshold must be >= 0, got {t}")
    return v - np.clip(v, -t, t)


class ElasticNet:
    """R(x) = l1 * ||x||_1 + (l2 / 2) * ||x||_2^2 with l1, l2 >= 0."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        if l1 < 0 or l2 < 0:
            raise ValueError(f"regularization weights must be >= 0, got l1={l1}, l2={l2}")
        self.l1 = float(l1)
        self.l2 = float(l2)

    @property
    def strong_convexity(self) -> float:
        return self.l2

    def value(self, x: np.ndarray) -> float:
        r = 0.0
        if self.l1:
            r += self.l1 * float(np.abs(x).sum())
        if self.l2:
            r += 0.5 * self.l2 * float(x @ x)
        return r

    def prox(self, v: np.ndarray, tau: float) -> np.ndarray:
        """Exact prox_{tau R}(v) (a new array)."""
        z = soft_threshold(v, tau * self.l1) if self.l1 else v.copy()
        if self.l2:
            z /= 1.0 + tau * self.l2
        return z

    def min_norm_subgradient(self, x: np.ndarray, grad_f: np.ndarray) -> np.ndarray:
        """The element of least norm in grad_f + l2 x + l1 * d||x||_1 (the KKT residual).

        Zero exactly at the minimizer of F + R.  Where x_j != 0 the subdifferential of
        |x_j| is sign(x_j); where x_j == 0 it is [-1, 1], and the least-norm choice
        shrinks grad_j towards 0 by l1 (a soft threshold).
        """
        g = grad_f + self.l2 * x
        return np.where(x != 0.0, g + self.l1 * np.sign(x), soft_threshold(g, self.l1))

    def __repr__(self) -> str:
        return f"ElasticNet(l1={self.l1:g}, l2={self.l2:g})"


def L1(l1: float) -> ElasticNet:
    return ElasticNet(l1=l1, l2=0.0)


def L2(l2: float) -> ElasticNet:
    return ElasticNet(l1=0.0, l2=l2)
