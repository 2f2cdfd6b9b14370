"""DASVRDA: Doubly Accelerated Stochastic Variance Reduced Dual Averaging.

Murata & Suzuki, "Doubly Accelerated Stochastic Variance Reduced Dual Averaging Method
for Regularized Empirical Risk Minimization", NeurIPS 2017, arXiv:1703.00439.
Notation follows the paper: outer iterates x~_s, z~_s, y~_s with weights theta~_s;
inner (one stage of AccSVRDA) iterates x_k, y_k, z_k with weights theta_k.

Algorithm 1 (DASVRDA^ns, non-strongly convex), outer loop, s = 1, 2, ...:
    x~_{-1} = z~_0 = x~_0,  theta~_0 = 1 - 1/gamma
    theta~_s = (1 - 1/gamma) (s + 2) / 2
    y~_s = x~_{s-1} + ((theta~_{s-1} - 1)/theta~_s)(x~_{s-1} - x~_{s-2})
                    + (theta~_{s-1}/theta~_s)(z~_{s-1} - x~_{s-1})
    (x~_s, z~_s) = One Stage AccSVRDA(y~_s, x~_{s-1}, eta, m, b, Q)
The second momentum term, towards the dual-averaging point z~_{s-1}, is the "double"
acceleration on top of the Nesterov term.

Algorithm 2 (One Stage AccSVRDA(y~, x~, eta, m, b, Q)):
    x_0 = z_0 = y~,  g-bar_0 = 0,  theta_0 = 1/2,  v~ = grad F(x~)
    for k = 1..m:
        theta_k = (k + 1)/2
        y_k = (1 - 1/theta_k) x_{k-1} + (1/theta_k) z_{k-1}
        I_k = b indices i.i.d. from Q
        g_k = v~ + (1/b) sum_{i in I_k} (1/(n q_i)) (grad f_i(y_k) - grad f_i(x~))
        g-bar_k = (1 - 1/theta_k) g-bar_{k-1} + (1/theta_k) g_k
        z_k = argmin_z <g-bar_k, z> + R(z) + ||z - z_0||^2 / (2 eta theta_k theta_{k-1})
            = prox_{eta theta_k theta_{k-1} R}(z_0 - eta theta_k theta_{k-1} g-bar_k)
        x_k = (1 - 1/theta_k) x_{k-1} + (1/theta_k) z_k
    return (x_m, z_m)
Unrolling the g-bar recursion, g-bar_k = sum_j j g_j / (k(k+1)/2): dual averaging of all
the stage's gradients with linearly growing weights, centred at the stage start z_0
(not a proximal-gradient step from z_{k-1}; that is what makes it *dual averaging*).

Parameters (paper, Section 4 and the theorems' conditions; the defaults here):
    b = floor(sqrt(n)),  m = ceil(n / b),
    gamma = (3 + sqrt(9 + 8 b / (m + 1))) / 2,
    eta = 1 / ((1 + gamma (m + 1) / b) L),
with L = max_i L_i for uniform Q and L = mean_i L_i for q_i ∝ L_i (the paper's L-bar).

Strongly convex objectives (mu = l2 > 0): Algorithm 3 (DASVRDA^sc) restarts Algorithm 1
from its output every S stages.  Our S halves the bound of the non-strongly convex
rate in the form E[P(x~_S) - P*] <= 4/((1-1/gamma)^2 (S+2)^2) * ((1-1/gamma)(P(x~_0)-P*)
+ 4 ||x~_0 - x*||^2 / (eta m (m+1))) combined with ||x~_0 - x*||^2 <= 2(P(x~_0)-P*)/mu
(the constant is our derivation from the shape of the paper's Theorem; only the
O(1 + (b/m) sqrt(kappa)) scaling of S matters).  Adaptive restart (the paper's practical
variant, after O'Donoghue & Candes 2015) needs no mu: "function" restarts when P(x~_s) >
P(x~_{s-1}) - free here, as P(x~_s) comes with the snapshot gradient of stage s+1 - and
"gradient" when <y~_s - x~_s, x~_s - x~_{s-1}> > 0.  A restart sets x~_{-1} = z~_0 = x~_s
and the outer counter s back to 0.

Communication per stage (P ranks, d features, float64): 1 allreduce of d + 1 floats for
grad F(x~) and P(x~) (snapshot and monitoring in one), then m allreduces of d floats, one
per mini-batch gradient: (m + 1) allreduces and 8 (d + 1 + m d) bytes of payload per rank
(~ 8 d n / b bytes; e.g. b = sqrt(n) gives sqrt(n) + 1 latency-bound allreduces per 2
passes over the data).  No other communication: the batch is agreed on through a shared
seed and the iterates are identical on every rank.  Work per stage and rank: one pass
over the local shard plus ~ m b / P rows.
"""
from __future__ import annotations

import math

import numpy as np

from hpccl.erm.solvers.base import Solver, check_options, default_batch_size

RESTARTS = ("none", "function", "gradient", "fixed")


def dasvrda_defaults(n: int, L: float, b: int | None = None, m: int | None = None,
                     gamma: float | None = None, eta: float | None = None):
    """The paper's (b, m, gamma, eta) for n samples and smoothness L."""
    b = default_batch_size(n) if b is None else int(b)
    if not 1 <= b:
        raise ValueError(f"batch size must be >= 1, got {b}")
    m = max(1, math.ceil(n / b)) if m is None else int(m)
    if gamma is None:
        gamma = (3.0 + math.sqrt(9.0 + 8.0 * b / (m + 1))) / 2.0
    if not gamma > 1:
        raise ValueError(f"gamma must be > 1, got {gamma}")
    if eta is None:
        eta = 1.0 / ((1.0 + gamma * (m + 1) / b) * L)
    return b, m, float(gamma), float(eta)


def fixed_restart_period(gamma: float, eta: float, m: int, mu: float) -> int:
    """S of DASVRDA^sc (Algorithm 3): stages after which the error bound halves."""
    c = 1.0 - 1.0 / gamma
    bound = 8.0 * (c + 8.0 / (mu * eta * m * (m + 1))) / (c * c)
    return max(1, math.ceil(math.sqrt(bound) - 2.0))


class DASVRDA(Solver):
    name = "dasvrda"
    OPTIONS = ("batch_size", "m", "gamma", "eta", "step_scale", "importance", "restart",
               "restart_period")

    def __init__(self, oracle, x0, seed=0, **options):
        super().__init__(oracle, x0, seed)
        check_options(self.name, options, self.OPTIONS)
        self.importance = bool(options.get("importance", False))
        L = oracle.L_mean if self.importance else oracle.L_max
        b, m, gamma, eta = dasvrda_defaults(oracle.n, L, options.get("batch_size"),
                                            options.get("m"), options.get("gamma"),
                                            options.get("eta"))
        eta *= float(options.get("step_scale", 1.0))
        restart = options.get("restart", "function")
        if restart not in RESTARTS:
            raise ValueError(f"restart must be one of {RESTARTS}, got {restart!r}")
        period = options.get("restart_period")
        if restart == "fixed" and period is None:
            mu = oracle.reg.strong_convexity
            if not mu > 0:
                raise ValueError("restart='fixed' (DASVRDA^sc) needs l2 > 0 or restart_period")
            period = fixed_restart_period(gamma, eta, m, mu)
        self.b, self.m, self.gamma, self.eta = b, m, gamma, eta
        self.restart, self.period = restart, period
        self.params = dict(batch_size=b, m=m, gamma=gamma, eta=eta, L=L,
                           importance=self.importance, restart=restart,
                           restart_period=period)

    def _stage(self, sampler, y_tilde, v_tilde):
        """Algorithm 2 (One Stage AccSVRDA) from y~ with snapshot gradient v~ = grad F(x~).

        The oracle holds phi'(a_i^T x~) from the full-gradient pass, so grad f_i(x~) in
        the correction is not recomputed.
        """
        oracle, prox, eta = self.oracle, self.oracle.reg.prox, self.eta
        z0 = y_tilde
        x = y_tilde.copy()  # x_0
        z = y_tilde.copy()  # z_0
        gbar = np.zeros_like(y_tilde)  # g-bar_0
        theta_prev = 0.5  # theta_0
        for k in range(1, self.m + 1):
            theta = 0.5 * (k + 1)  # theta_k
            a = 1.0 / theta
            y = (1.0 - a) * x + a * z  # y_k
            g = v_tilde + oracle.vr_correction(y, sampler.draw(self.b))  # g_k (one allreduce)
            gbar = (1.0 - a) * gbar + a * g  # g-bar_k
            tau = eta * theta * theta_prev  # eta theta_k theta_{k-1}
            z = prox(z0 - tau * gbar, tau)  # z_k, dual averaging prox centred at z_0
            x = (1.0 - a) * x + a * z  # x_k
            theta_prev = theta
        return x, z

    def stages(self):
        oracle = self.oracle
        sampler = oracle.sampler(self.seed, self.importance)
        c = 1.0 - 1.0 / self.gamma
        x_prev = self.x0.copy()  # x~_{s-1}
        v, P_prev = oracle.full_gradient(x_prev)  # grad F(x~_0): snapshot of stage 1
        x_prev2 = x_prev.copy()  # x~_{s-2}  (x~_{-1} = x~_0)
        z_prev = x_prev.copy()  # z~_{s-1}  (z~_0 = x~_0)
        theta_prev = c  # theta~_0 = 1 - 1/gamma
        s = 0  # outer counter since the last (re)start
        restarts = 0
        while True:
            s += 1
            theta = c * (s + 2) / 2.0  # theta~_s
            y = (x_prev + ((theta_prev - 1.0) / theta) * (x_prev - x_prev2)
                 + (theta_prev / theta) * (z_prev - x_prev))  # y~_s
            x_new, z_new = self._stage(sampler, y, v)  # snapshot x~_{s-1}
            v, P_new = oracle.full_gradient(x_new)  # grad F(x~_s), P(x~_s): 1 allreduce
            if self.restart == "function":
                restart = P_new > P_prev
            elif self.restart == "gradient":
                restart = float(np.dot(y - x_new, x_new - x_prev)) > 0.0
            elif self.restart == "fixed":
                restart = s >= self.period
            else:
                restart = False
            yield x_new, P_new, {"restarted": bool(restart), "outer_s": s}
            if restart:
                restarts += 1
                x_prev2, x_prev, z_prev = x_new, x_new, x_new.copy()
                theta_prev, s = c, 0
            else:
                x_prev2, x_prev, z_prev, theta_prev = x_prev, x_new, z_new, theta
            P_prev = P_new
