"""Globally unbiased sampling from all ranks' shards with one-sided reads.

A draw of r representatives is uniform, without replacement, over a *snapshot* of the
stored samples: rank q's records 0..T[q]-1, where T[q] is rank q's total as this rank last
read it. Totals only grow and records below a total always hold a stored sample (shard.py),
so every position of the snapshot is a valid sample, and a draw needs no per-class counts.

Per-draw work does not grow with the number of ranks: each draw refreshes the totals of its
own node (plain loads) and reads only the records it drew, from all owners at once, in one
round (windows.py); the totals of ``REFRESH_PER_DRAW`` other ranks, in turn, travel in the
same round (one 8-byte get each) and serve the next draw. So a draw costs at most (records
drawn on other nodes) + 2 remote operations. A sample stored elsewhere becomes drawable
within size / REFRESH_PER_DRAW + 1 draws. All totals are read afresh by ``refresh()`` (at the
start of every task) and whenever the snapshot holds fewer than r samples, so a small or
newly filled buffer is seen at once.
"""

from __future__ import annotations

import numpy as np

from hpccl.continual.rehearsal.shard import TOTAL_OFFSET, Shard

REFRESH_PER_DRAW = 2
_POOL = 4096


class GlobalSampler:
    def __init__(self, shard: Shard, rng: np.random.Generator):
        self.shard, self.rng = shard, rng
        self.layout = shard.layout
        w = shard.windows
        self.totals = np.zeros(w.size, dtype=np.int64)
        local = np.flatnonzero(w.same_node)    # this node's ranks: lo..hi-1 usually
        contiguous = local[-1] - local[0] + 1 == len(local)
        self._local = slice(int(local[0]), int(local[-1]) + 1) if contiguous else local
        self._remote = np.flatnonzero(~w.same_node)
        self._cursor = 0
        self._fetched: dict = {}
        # Uniform doubles are drawn _POOL at a time (one RNG call instead of one per draw);
        # the RNG state that made the pool and the next unused position resume it exactly.
        self._pool, self._pool_at, self._pool_state = np.empty(0), 0, None

    def state(self) -> dict:
        """The snapshot of totals, where the refresh turn stands and the pool of uniforms
        (for an exact resume)."""
        return {"totals": self.totals.tolist(), "cursor": self._cursor,
                "pool": {"state": self._pool_state, "at": self._pool_at, "size": len(self._pool)}}

    def load_state(self, state: dict) -> None:
        if len(state["totals"]) == len(self.totals):
            self.totals[:] = state["totals"]
            self._cursor = state["cursor"]
        pool = state.get("pool")
        if pool and pool["state"] is not None:
            now = self.rng.bit_generator.state
            self.rng.bit_generator.state = pool["state"]
            self._pool, self._pool_state = self.rng.random(pool["size"]), pool["state"]
            self._pool_at = pool["at"]
            self.rng.bit_generator.state = now
        else:       # saved before any draw: no pool yet, the next draw makes it from the RNG
            self._pool, self._pool_at, self._pool_state = np.empty(0), 0, None

    def _uniforms(self, k: int) -> np.ndarray:
        if self._pool_at + k > len(self._pool):
            self._pool_state = self.rng.bit_generator.state
            self._pool, self._pool_at = self.rng.random(max(_POOL, k)), 0
        self._pool_at += k
        return self._pool[self._pool_at - k:self._pool_at]

    def refresh(self, ranks=None) -> None:
        """Read the totals of ``ranks`` (default: all)."""
        ranks = np.arange(len(self.totals)) if ranks is None else np.asarray(ranks, dtype=np.int64)
        if len(ranks):
            self.totals[ranks] = self.shard.windows.read_totals(ranks)

    def _refresh_turn(self) -> np.ndarray:
        """The other nodes' ranks whose totals the next read brings, in turn."""
        if not len(self._remote):
            return self._remote
        n = min(REFRESH_PER_DRAW, len(self._remote))
        turn = self._remote[(self._cursor + np.arange(n)) % len(self._remote)]
        self._cursor = (self._cursor + n) % len(self._remote)
        return turn

    def _refresh_local(self) -> None:
        if isinstance(self._local, slice):
            self.shard.windows.read_node_u64(TOTAL_OFFSET, self.totals[self._local])
        else:
            local = np.empty(len(self._local), dtype=np.int64)
            self.shard.windows.read_node_u64(TOTAL_OFFSET, local)
            self.totals[self._local] = local

    def draw(self, r: int):
        """(rank, record) of min(r, snapshot size) distinct samples, uniformly at random,
        sorted by rank, then record.

        Written for few numpy calls: a draw runs right after the previous draw's copy has
        pushed the interpreter out of the caches, where every call costs several
        microseconds, whatever its size."""
        self._refresh_local()
        ends = np.cumsum(self.totals)
        if ends[-1] < r:
            self.refresh()
            ends = np.cumsum(self.totals)
        total = int(ends[-1])
        k = min(int(r), total)
        if k == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        positions = self._distinct(total, k)     # sorted: rank by rank, record by record
        rank = np.searchsorted(ends, positions, side="right")
        record = positions - (ends - self.totals)[rank]
        return rank, record

    def _distinct(self, n: int, k: int) -> np.ndarray:
        """k distinct integers of 0..n-1, uniformly at random, sorted. Drawing with
        replacement and topping up what collided is uniform over k-subsets (the procedure
        treats every integer alike); for k much smaller than n it is several times cheaper
        than ``Generator.choice``, which shuffles an array of n. floor(u * n) of a uniform
        double u is uniform on 0..n-1 up to n / 2**53."""
        if 4 * k > n:
            return np.sort(self.rng.choice(n, size=k, replace=False))
        found = (self._uniforms(k) * n).astype(np.int64)
        found.sort()
        if np.count_nonzero(found[1:] == found[:-1]):
            found = np.unique(found)
            while len(found) < k:
                found = np.union1d(found, (self._uniforms(k - len(found)) * n).astype(np.int64))
        return found

    def new_output(self, r: int) -> np.ndarray:
        """A reusable output for ``sample(r, out=...)``."""
        return np.empty((r, self.layout.record_bytes), dtype=np.uint8)

    def sample(self, r: int, out: np.ndarray | None = None):
        """Fetch r representatives: (x [k, *sample_shape], y [k] int64), k <= r; x has the
        buffer's dtype and is a view into ``out``.

        The draw is a random set, so its order is free: sorted by owner and record, each
        owner's samples land in one contiguous slice of the result and adjacent records
        come in one transfer. ``out`` (from ``new_output``) is filled and viewed instead of
        allocating: fresh pages for every draw cost as much as the copy itself."""
        rank, record = self.draw(r)
        lay = self.layout
        fresh = out is None
        if fresh:
            out = self.new_output(len(rank))
        totals = self.shard.windows.read_records(lay.table, rank, record, out[:len(rank)],
                                                 totals_of=self._refresh_turn())
        if totals:
            self.totals[list(totals)] = list(totals.values())
        if fresh:
            return lay.fetched(out)
        key = (id(out), len(rank))
        if key not in self._fetched:        # views of a reused output: made once (kept alive here)
            self._fetched[key] = (out, *lay.fetched(out[:len(rank)], copy_labels=False))
        _, x, y = self._fetched[key]
        return x, y.copy()
