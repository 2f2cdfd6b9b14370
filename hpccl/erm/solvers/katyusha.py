"""Katyusha for non-strongly convex objectives with a proximal term (Katyusha^ns).

Allen-Zhu, "Katyusha: The First Direct Acceleration of Stochastic Gradient Methods",
STOC 2017 / JMLR 2018, Algorithm 2 (Katyusha^ns), with a b-sample mini-batch estimator:
    m = ceil(2n / b),  tau_2 = 1/2,  y_0 = z_0 = x~^0 = x0
    for s = 0, 1, ...:
        tau_1 = 2 / (s + 4),  alpha = 1 / (3 tau_1 L),  mu^s = grad F(x~^s)
        for j = 0..m-1 (k = s m + j):
            x_{k+1} = tau_1 z_k + tau_2 x~^s + (1 - tau_1 - tau_2) y_k
            g = mu^s + (1/b) sum_{i in I} w_i (grad f_i(x_{k+1}) - grad f_i(x~^s))
            z_{k+1} = prox_{alpha R}(z_k - alpha g)                    (mirror step)
            y_{k+1} = prox_{R/(3L)}(x_{k+1} - g / (3L))                (gradient step)
        x~^{s+1} = (1/m) sum_{j=1..m} y_{s m + j}
tau_2 x~ is the "negative momentum" (Katyusha momentum) pulling towards the snapshot.
``step_scale`` c replaces L by L / c in both steps (for tuning).

Communication per stage: (m + 1) allreduces (m = 2n/b: twice DASVRDA's per stage, for 3
passes instead of 2).
"""
from __future__ import annotations

import numpy as np

from hpccl.erm.solvers.base import MinibatchSolver


class Katyusha(MinibatchSolver):
    name = "katyusha"
    OPTIONS = ("batch_size", "m", "L", "step_scale", "importance", "tau2")

    def __init__(self, oracle, x0, seed=0, **options):
        super().__init__(oracle, x0, seed, options, stage_passes=2)
        self.L = float(options.get("L") or self.L) / float(options.get("step_scale", 1.0))
        self.tau2 = float(options.get("tau2", 0.5))
        self.params = dict(batch_size=self.b, m=self.m, L=self.L, tau2=self.tau2,
                           importance=self.importance)

    def stages(self):
        oracle, prox, L, tau2 = self.oracle, self.oracle.reg.prox, self.L, self.tau2
        sampler = oracle.sampler(self.seed, self.importance)
        x_tilde = self.x0.copy()
        y = x_tilde.copy()
        z = x_tilde.copy()
        mu, _ = oracle.full_gradient(x_tilde)
        s = 0
        while True:
            tau1 = 2.0 / (s + 4.0)
            alpha = 1.0 / (3.0 * tau1 * L)
            y_sum = np.zeros_like(x_tilde)
            for _ in range(self.m):
                x = tau1 * z + tau2 * x_tilde + (1.0 - tau1 - tau2) * y
                g = mu + oracle.vr_correction(x, sampler.draw(self.b))
                z = prox(z - alpha * g, alpha)
                y = prox(x - g / (3.0 * L), 1.0 / (3.0 * L))
                y_sum += y
            x_tilde = y_sum / self.m
            mu, P = oracle.full_gradient(x_tilde)
            s += 1
            yield x_tilde, P, {}
