"""Distributed first-order oracle of an ERM problem, with cost accounting.

Binds a :class:`~hpccl.erm.problem.Problem` shard to a communicator and provides exactly
the operations the solvers need, each costing one allreduce:

* :meth:`Oracle.full_gradient` - grad F(x) and P(x) from ONE allreduce of d + 1 floats
  (the shard's gradient sum and loss sum travel in the same buffer, so objective
  monitoring of the SVRG-type methods is free: it rides on the snapshot gradient);
* :meth:`Oracle.vr_correction` - (1/b) sum_{i in I} w_i (grad f_i(y) - grad f_i(x~)),
  ONE allreduce of d floats;
* :meth:`Oracle.stochastic_gradient` - (1/b) sum_{i in I} w_i grad f_i(x), ONE allreduce.

Snapshot cache: for a linear model grad f_i(x) = phi'(a_i^T x) a_i, so the full-gradient
pass keeps the n_local scalars phi'(a_i^T x~) and the variance-reduced correction needs
only one product with the batch rows; grad f_i(x~) is never recomputed.

Cost accounting ("passes"): the number of per-sample gradient evaluations, counted
globally (a full gradient costs n, a mini-batch costs b), divided by n.  Cached snapshot
gradients cost nothing.  With this convention one SVRG-type stage with m = n/b inner
steps costs 2 passes.  Monitoring-only evaluations (:meth:`objective`) are not counted.
"""
from __future__ import annotations

import numpy as np

from hpccl.core.collectives import Collectives
from hpccl.erm.problem import Problem, ProblemError
from hpccl.erm.sampling import Batch, ShardSampler


class Oracle:
    def __init__(self, problem: Problem, comm=None):
        self.problem = problem
        self.coll = Collectives(comm)
        self.X, self.y, self.loss = problem.X, problem.y, problem.loss
        self.reg = problem.regularizer
        self.dim = problem.dim

        # Shard layout: one allgather at set-up (untracked).
        info = self.coll.allgather((problem.n_local, problem.dim, problem.offset))
        sizes = [s for s, _, _ in info]
        dims = {d for _, d, _ in info}
        if len(dims) != 1:
            raise ProblemError(f"ranks disagree on the number of features: {sorted(dims)}")
        self.shard_sizes = sizes
        self.n = int(sum(sizes))
        if problem.n is not None and int(problem.n) != self.n:
            raise ProblemError(f"Problem.n = {problem.n} but the shards hold {self.n} samples")
        offsets = list(np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int))
        given = [o for _, _, o in info]
        if any(o is not None and int(o) != offsets[r] for r, o in enumerate(given)):
            raise ProblemError(
                "Problem.offset must number samples by rank order (rank r starts at the "
                f"number of samples on ranks < r): expected {offsets}, got {given}")
        self.offset = offsets[self.coll.rank]

        # Per-sample smoothness L_i, their max and mean (global).
        self.L_local = problem.sample_smoothness()
        self.L_max = self.coll.max(self.L_local.max() if self.L_local.size else 0.0)
        self._L_local_total = float(np.cumsum(self.L_local)[-1]) if self.L_local.size else 0.0
        self._L_totals = self.coll.allgather(self._L_local_total)
        self.L_mean = float(np.sum(self._L_totals)) / self.n
        if not self.L_max > 0:
            raise ProblemError("all samples are zero vectors: nothing to fit")

        self.grad_evals = 0  # global count of per-sample gradient evaluations
        self._snap_deriv = None  # phi'(a_i^T x~) for the local samples

    # -- accounting ------------------------------------------------------------------
    @property
    def passes(self) -> float:
        return self.grad_evals / self.n

    @property
    def allreduces(self) -> int:
        return self.coll.allreduces

    @property
    def allreduce_bytes(self) -> int:
        return self.coll.bytes

    def sampler(self, seed: int, importance: bool = False) -> ShardSampler:
        """The shared-seed sampler; importance=True draws i with q_i proportional to L_i."""
        if importance:
            return ShardSampler(self.shard_sizes, self.coll.rank, seed,
                                local_weights=self.L_local, shard_weight_totals=self._L_totals)
        return ShardSampler(self.shard_sizes, self.coll.rank, seed)

    # -- oracle calls ----------------------------------------------------------------
    def full_gradient(self, x: np.ndarray, keep_snapshot: bool = True):
        """(grad F(x), P(x)); one allreduce of d+1 floats; n gradient evaluations."""
        t = self.X @ x
        deriv = self.loss.deriv(t, self.y)
        buf = np.empty(self.dim + 1)
        buf[: self.dim] = self.X.T @ deriv
        buf[self.dim] = self.loss.value(t, self.y).sum()
        buf = self.coll.sum(buf, counted=True)
        self.grad_evals += self.n
        if keep_snapshot:
            self._snap_deriv = deriv
        grad = buf[: self.dim] / self.n
        return grad, buf[self.dim] / self.n + self.reg.value(x)

    def vr_correction(self, x: np.ndarray, batch: Batch) -> np.ndarray:
        """(1/b) sum_i w_i (grad f_i(x) - grad f_i(x~)) with x~ the last full-gradient point."""
        idx = batch.local_idx
        if idx.size:
            Xb = self.X[idx]
            coef = (self.loss.deriv(Xb @ x, self.y[idx]) - self._snap_deriv[idx]) * batch.scale
            local = np.asarray(Xb.T @ coef, dtype=np.float64).ravel()
        else:  # this rank owns none of the batch; it still joins the allreduce
            local = np.zeros(self.dim)
        self.grad_evals += batch.size
        return self.coll.sum(local, counted=True)

    def stochastic_gradient(self, x: np.ndarray, batch: Batch) -> np.ndarray:
        """(1/b) sum_i w_i grad f_i(x)."""
        idx = batch.local_idx
        if idx.size:
            Xb = self.X[idx]
            coef = self.loss.deriv(Xb @ x, self.y[idx]) * batch.scale
            local = np.asarray(Xb.T @ coef, dtype=np.float64).ravel()
        else:
            local = np.zeros(self.dim)
        self.grad_evals += batch.size
        return self.coll.sum(local, counted=True)

    def value(self, x: np.ndarray) -> float:
        """P(x) as part of a method (FISTA's backtracking): one allreduce of one float.

        Counted as n evaluations: it is a pass over the data even without gradients.
        """
        s = np.array([self.loss.value(self.X @ x, self.y).sum()])
        s = self.coll.sum(s, counted=True)
        self.grad_evals += self.n
        return float(s[0]) / self.n + self.reg.value(x)

    # -- monitoring (not counted) ----------------------------------------------------
    def objective(self, x: np.ndarray) -> float:
        """P(x); an untracked allreduce of one float, not counted in passes."""
        s = np.array([self.loss.value(self.X @ x, self.y).sum()])
        return float(self.coll.sum(s)[0]) / self.n + self.reg.value(x)

    def gradient_untracked(self, x: np.ndarray):
        """(grad F(x), P(x)) for the reference solver and checks; not counted."""
        t = self.X @ x
        buf = np.empty(self.dim + 1)
        buf[: self.dim] = self.X.T @ self.loss.deriv(t, self.y)
        buf[self.dim] = self.loss.value(t, self.y).sum()
        buf = self.coll.sum(buf)
        return buf[: self.dim] / self.n, buf[self.dim] / self.n + self.reg.value(x)
