"""Mini-batch sampling over samples sharded across ranks.

The DASVRDA mini-batch I_k is b indices drawn independently (with replacement) from a
distribution Q on all n samples (Murata & Suzuki 2017, Algorithm 2, "pick i_1..i_b ~ Q"):
Q uniform, or q_i = L_i / sum_j L_j (importance sampling, their Section 3).

Sharded version used here: every rank holds an identically seeded generator and draws
the *same global* index set; each rank keeps the indices it owns.  Hence

* the union over ranks is exactly the single-process draw (uniform over all n, whatever
  the shard sizes: a rank with twice the samples gets twice the indices on average);
* no communication is needed to agree on the batch, and the sequence of batches does not
  depend on the number of ranks, which makes runs on 1, 2, 4 ranks comparable;
* every rank spends O(b) on the draw, negligible next to the O(b d) gradient.

The mini-batch gradient is then one allreduce of the ranks' partial sums.  Each draw
returns the local rows and their weights w_i / b, with w_i = 1 / (n q_i) the unbiasing
factor of the estimator (1/b) sum_{i in I} (1/(n q_i)) grad f_i  (=1/b when uniform).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np


@dataclass
class Batch:
    local_idx: np.ndarray  # rows of this rank's shard (repeats possible)
    scale: np.ndarray  # per drawn row: 1 / (b n q_i)
    size: int  # b, the global batch size


class ShardSampler:
    """Draws global mini-batches and returns the part owned by ``rank``.

    Parameters
    ----------
    shard_sizes: number of samples of every rank, in rank order (global numbering is by
        rank order, see :mod:`hpccl.erm.problem`).
    rank: this rank.
    seed: must be the same on all ranks.
    local_weights: unnormalized q_i for this rank's samples (e.g. L_i), or None for
        uniform sampling.
    shard_weight_totals: sum of the weights of every shard (all ranks), required with
        ``local_weights``; each rank's entry must be exactly ``local_weights.sum()``
        computed as ``np.cumsum(local_weights)[-1]`` on that rank.
    """

    def __init__(self, shard_sizes: Sequence[int], rank: int, seed: int,
                 local_weights: Optional[np.ndarray] = None,
                 shard_weight_totals: Optional[Sequence[float]] = None):
        self.shard_sizes = np.asarray(shard_sizes, dtype=np.int64)
        self.rank = int(rank)
        self.n = int(self.shard_sizes.sum())
        if self.n <= 0:
            raise ValueError("cannot sample from an empty data set")
        starts = np.concatenate([[0], np.cumsum(self.shard_sizes)])
        self.lo, self.hi = int(starts[rank]), int(starts[rank + 1])
        self.rng = np.random.default_rng(seed)
        self.weighted = local_weights is not None
        if self.weighted:
            w = np.asarray(local_weights, dtype=np.float64)
            if w.shape != (self.hi - self.lo,) or (w < 0).any():
                raise ValueError("local_weights must be >= 0, one per local sample")
            self._local_cum = np.cumsum(w)
            totals = np.asarray(shard_weight_totals, dtype=np.float64)
            self._shard_cum = np.concatenate([[0.0], np.cumsum(totals)])
            self.total_weight = float(self._shard_cum[-1])
            if not self.total_weight > 0:
                raise ValueError("sampling weights are all zero")
            self._w = w

    def draw(self, b: int) -> Batch:
        return self.draw_with_global(b)[0]

    def draw_with_global(self, b: int) -> tuple[Batch, np.ndarray]:
        """The local batch plus the global indices this rank owns (for tests)."""
        if not self.weighted:
            g = self.rng.integers(0, self.n, size=b)
            mine = g[(g >= self.lo) & (g < self.hi)]
            local = mine - self.lo
            return Batch(local, np.full(local.shape[0], 1.0 / b), b), mine
        # Inverse-CDF sampling with one shared uniform per draw: every rank finds the
        # owning shard from the (identical) shard cumulative totals, so exactly one rank
        # owns each draw; only the owner resolves the row inside its shard.
        u = self.rng.random(b) * self.total_weight
        shard = np.searchsorted(self._shard_cum, u, side="right") - 1
        np.clip(shard, 0, self.shard_sizes.shape[0] - 1, out=shard)
        v = u[shard == self.rank] - self._shard_cum[self.rank]
        local = np.searchsorted(self._local_cum, v, side="right")
        np.clip(local, 0, self.hi - self.lo - 1, out=local)
        # 1/(b n q_i) with q_i = w_i / W.
        scale = self.total_weight / (b * self.n * self._w[local])
        return Batch(local, scale, b), local + self.lo
