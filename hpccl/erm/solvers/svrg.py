"""Proximal SVRG (Xiao & Zhang, SIAM J. Optim. 2014, "Prox-SVRG"), mini-batch form.

Per stage s (their Figure 1 / Algorithm Prox-SVRG):
    v~ = grad F(x~);  x_0 = x~
    for k = 1..m:  v_k = v~ + (1/b) sum_{i in I_k} w_i (grad f_i(x_{k-1}) - grad f_i(x~))
                   x_k = prox_{eta R}(x_{k-1} - eta v_k)
    x~ = x_m  (default, "last")   or   (1/m) sum_k x_k  ("average", the analysed option)
The mini-batch estimator is the one of mS2GD (Konecny et al. 2016).  Defaults: m = 2n/b
(Xiao & Zhang take m ~ 2n for b = 1) and eta = 1/(4 L) (their Theorem 3.1 needs
eta < 1/(4 L); larger steps usually work, see ``step_scale``).  The initial x~ = x0.

Communication per stage: (m + 1) allreduces, as for DASVRDA.
"""
from __future__ import annotations

import numpy as np

from hpccl.erm.solvers.base import MinibatchSolver, step_size


class ProxSVRG(MinibatchSolver):
    name = "svrg"
    OPTIONS = ("batch_size", "m", "eta", "step_scale", "importance", "snapshot")

    def __init__(self, oracle, x0, seed=0, **options):
        super().__init__(oracle, x0, seed, options, stage_passes=2)
        self.eta = step_size(options, 1.0 / (4.0 * self.L))
        self.snapshot = options.get("snapshot", "last")
        if self.snapshot not in ("last", "average"):
            raise ValueError(f"snapshot must be 'last' or 'average', got {self.snapshot!r}")
        self.params = dict(batch_size=self.b, m=self.m, eta=self.eta, L=self.L,
                           importance=self.importance, snapshot=self.snapshot)

    def stages(self):
        oracle, prox, eta = self.oracle, self.oracle.reg.prox, self.eta
        sampler = oracle.sampler(self.seed, self.importance)
        x_tilde = self.x0.copy()
        v, _ = oracle.full_gradient(x_tilde)
        while True:
            x = x_tilde.copy()
            acc = np.zeros_like(x) if self.snapshot == "average" else None
            for _ in range(self.m):
                g = v + oracle.vr_correction(x, sampler.draw(self.b))
                x = prox(x - eta * g, eta)
                if acc is not None:
                    acc += x
            x_tilde = x if acc is None else acc / self.m
            v, P = oracle.full_gradient(x_tilde)
            yield x_tilde, P, {}
