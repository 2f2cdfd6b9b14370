"""FISTA: accelerated proximal full-gradient method (Beck & Teboulle 2009).

With backtracking on the Lipschitz constant (Nesterov's adaptive variant: the estimate
shrinks by 0.9 per iteration and doubles on a failed sufficient-decrease test) and the
gradient-based adaptive restart of O'Donoghue & Candes (2015), which gives linear
convergence on strongly convex problems without knowing mu.  Deterministic, so it is the
first half of the reference optimum (:mod:`hpccl.erm.reference`); registered as the
solver "fista" so that it also runs in the common harness.
"""
from __future__ import annotations

import math

from hpccl.erm.solvers.base import Solver, check_options


class FISTA(Solver):
    """Accelerated proximal full-gradient method with backtracking and adaptive restart.

    One stage = one iteration: 1 full gradient (at the extrapolated point) and >= 1
    function value (the backtracking test at the new point); P of the new point comes
    with that test, so monitoring is free.
    """

    name = "fista"
    OPTIONS = ("L0", "restart")

    def __init__(self, oracle, x0, seed=0, **options):
        super().__init__(oracle, x0, seed)
        check_options(self.name, options, self.OPTIONS)
        # L_F <= mean_i L_i, so starting there the first test passes; the step then
        # grows by 1/0.9 per iteration until a test fails (Nesterov's adaptive L).
        self.L = float(options.get("L0") or oracle.L_mean)
        self.restart = bool(options.get("restart", True))
        self.params = dict(L0=self.L, restart=self.restart)

    def stages(self):
        oracle, reg = self.oracle, self.oracle.reg
        L_safe = oracle.L_mean
        x_prev = self.x0.copy()
        y = x_prev.copy()
        t = 1.0
        L = self.L
        while True:
            g, Py = oracle.full_gradient(y, keep_snapshot=False)
            Fy = Py - reg.value(y)
            L = max(0.9 * L, 1e-12 * L_safe)
            while True:
                x = reg.prox(y - g / L, 1.0 / L)
                d = x - y
                Px = oracle.value(x)
                if L >= L_safe or Px - reg.value(x) <= Fy + g @ d + 0.5 * L * (d @ d) + 1e-15 * abs(Fy):
                    break
                L = min(2.0 * L, L_safe)
            restarted = self.restart and float((y - x) @ (x - x_prev)) > 0.0
            if restarted:
                t = 1.0
                y = x.copy()
            else:
                t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
                y = x + ((t - 1.0) / t_next) * (x - x_prev)
                t = t_next
            x_prev = x
            yield x, Px, {"L": L, "restarted": restarted}
