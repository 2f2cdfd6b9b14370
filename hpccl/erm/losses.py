"""Per-sample losses of linear models, f_i(x) = phi(a_i^T x, y_i).

Every loss works on the vector of margins t = A x (one entry per sample), so that the
solvers only ever touch the data through two matrix products per gradient: t = A_B x and
A_B^T phi'(t).  For linear models this also lets the variance-reduced solvers cache the
scalar phi'(a_i^T x~) at the snapshot instead of the d-vector grad f_i(x~) (see
:mod:`hpccl.erm.oracle`).

Each loss has a curvature bound ``curvature`` = sup_t phi''(t, y), so that f_i is
L_i-smooth with L_i = curvature * ||a_i||^2.  Those L_i are the per-sample smoothness
constants of the DASVRDA paper (Murata & Suzuki 2017, Assumption 1), used for the step
size and for importance sampling q_i = L_i / sum_j L_j.
"""
from __future__ import annotations

import numpy as np
from scipy.special import expit


class Loss:
    """Interface: vectorised value, first and second derivative in the margin t."""

    name = "loss"
    curvature = 1.0

    def value(self, t: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def deriv(self, t: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def deriv2(self, t: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Second derivative (a generalized one where phi' is only piecewise smooth).

        Only the Newton polish of the reference optimum uses it.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Logistic(Loss):
    """phi(t, y) = log(1 + exp(-y t)), y in {-1, +1}; phi'' <= 1/4."""

    name = "logistic"
    curvature = 0.25

    def value(self, t, y):
        # logaddexp avoids overflow of exp(-y t) for large negative margins.
        return np.logaddexp(0.0, -y * t)

    def deriv(self, t, y):
        # d/dt log(1+exp(-yt)) = -y * sigmoid(-y t); expit is stable in both tails.
        return -y * expit(-y * t)

    def deriv2(self, t, y):
        s = expit(y * t)
        return s * (1.0 - s)


class Squared(Loss):
    """phi(t, y) = (t - y)^2 / 2 (least squares / ridge / lasso); phi'' = 1."""

    name = "squared"
    curvature = 1.0

    def value(self, t, y):
        r = t - y
        return 0.5 * r * r

    def deriv(self, t, y):
        return t - y

    def deriv2(self, t, y):
        return np.ones_like(t)


class SmoothedHinge(Loss):
    """Smoothed hinge of Shalev-Shwartz & Zhang (2013), with margin z = y t:

        phi = 0                     if z >= 1
              1 - z - delta/2       if z <= 1 - delta
              (1 - z)^2 / (2 delta) otherwise,

    which is (1/delta)-smooth.  delta = 1 is the usual choice.
    """

    name = "smoothed_hinge"

    def __init__(self, delta: float = 1.0):
        if not delta > 0:
            raise ValueError(f"smoothed hinge needs delta > 0, got {delta}")
        self.delta = float(delta)
        self.curvature = 1.0 / self.delta

    def value(self, t, y):
        d = self.delta
        u = 1.0 - y * t
        return np.where(u <= 0.0, 0.0, np.where(u >= d, u - 0.5 * d, 0.5 * u * u / d))

    def deriv(self, t, y):
        # d phi / dz = -clip((1 - z)/delta, 0, 1) and dz/dt = y.
        return -y * np.clip((1.0 - y * t) / self.delta, 0.0, 1.0)

    def deriv2(self, t, y):
        u = 1.0 - y * t
        return np.where((u > 0.0) & (u < self.delta), 1.0 / self.delta, 0.0)

    def __repr__(self) -> str:
        return f"SmoothedHinge(delta={self.delta})"


_LOSSES = {"logistic": Logistic, "squared": Squared, "smoothed_hinge": SmoothedHinge}


def get_loss(loss: "str | Loss") -> Loss:
    """A Loss from its name ("logistic", "squared", "smoothed_hinge") or itself."""
    if isinstance(loss, Loss):
        return loss
    try:
        return _LOSSES[str(loss).lower().replace("-", "_")]()
    except KeyError:
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(_LOSSES)}") from None
