"""Plain proximal stochastic gradient descent (the non-variance-reduced baseline).

    x_{k+1} = prox_{eta_k R}(x_k - eta_k (1/b) sum_{i in I_k} w_i grad f_i(x_k))
    eta_k = eta_0 / (1 + eta_0 mu k / 2)   if mu = l2 > 0   (the O(1/(mu k)) schedule)
          = eta_0 / sqrt(1 + k / m)        otherwise
with eta_0 = 1/L.  A stage is one epoch of m = ceil(n/b) steps.  Its iterates never
carry a full gradient, so the objective of each stage is a monitoring evaluation that the
driver makes outside the pass count and the timer.  Expect O(1/k) convergence: SGD is
here to show what variance reduction buys, not to reach 1e-8.
"""
from __future__ import annotations

import math

from hpccl.erm.solvers.base import MinibatchSolver, step_size


class ProxSGD(MinibatchSolver):
    name = "sgd"
    OPTIONS = ("batch_size", "eta", "step_scale", "importance", "m")

    def __init__(self, oracle, x0, seed=0, **options):
        super().__init__(oracle, x0, seed, options, stage_passes=1)
        self.eta0 = step_size(options, 1.0 / self.L)
        self.mu = oracle.reg.strong_convexity
        self.params = dict(batch_size=self.b, m=self.m, eta0=self.eta0, L=self.L,
                           importance=self.importance)

    def stages(self):
        oracle, prox = self.oracle, self.oracle.reg.prox
        sampler = oracle.sampler(self.seed, self.importance)
        x = self.x0.copy()
        k = 0
        while True:
            for _ in range(self.m):
                if self.mu > 0:
                    eta = self.eta0 / (1.0 + 0.5 * self.eta0 * self.mu * k)
                else:
                    eta = self.eta0 / math.sqrt(1.0 + k / self.m)
                g = oracle.stochastic_gradient(x, sampler.draw(self.b))
                x = prox(x - eta * g, eta)
                k += 1
            yield x, None, {}
