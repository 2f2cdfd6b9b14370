"""Globally unbiased sampling from all ranks' shards with one-sided reads.

A draw of r representatives is uniform, without replacement, over a *snapshot* of the
stored samples: rank q's records 0..T[q]-1, where T[q] is rank q's total as this rank last
read it. Totals only grow and records below a total always hold a stored sample (shard.py),
so every position of the snapshot is a valid sample, and a draw needs no per-class counts.

Per-draw work does not grow with the number of ranks: each draw refreshes the totals of its
own node (plain loads) and of ``REFRESH_PER_DRAW`` other ranks in turn (one 8-byte get each),
then reads only the records it drew, from all owners at once (windows.py: three rounds:
sequence numbers, records, sequence numbers).
A sample stored elsewhere becomes drawable within size / REFRESH_PER_DRAW draws. All totals
are read afresh by ``refresh()`` (at the start of every task) and whenever the snapshot holds
fewer than r samples, so a small or newly filled buffer is seen at once.
"""

from __future__ import annotations

import numpy as np

from hpccl.rehearsal.shard import TOTAL_OFFSET, Shard

REFRESH_PER_DRAW = 4


class GlobalSampler:
    def __init__(self, shard: Shard, rng: np.random.Generator):
        self.shard, self.rng = shard, rng
        self.layout = shard.layout
        w = shard.windows
        self.totals = np.zeros(w.size, dtype=np.int64)
        self._local = np.flatnonzero(w.same_node)
        self._remote = np.flatnonzero(~w.same_node)
        self._cursor = 0

    def state(self) -> dict:
        """The snapshot of totals and where the refresh turn stands (for an exact resume)."""
        return {"totals": self.totals.tolist(), "cursor": self._cursor}

    def load_state(self, state: dict) -> None:
        if len(state["totals"]) == len(self.totals):
            self.totals[:] = state["totals"]
            self._cursor = state["cursor"]

    def refresh(self, ranks=None) -> None:
        """Read the totals of ``ranks`` (default: all)."""
        ranks = np.arange(len(self.totals)) if ranks is None else np.asarray(ranks, dtype=np.int64)
        if len(ranks):
            self.totals[ranks] = self.shard.windows.read_u64(ranks, TOTAL_OFFSET)

    def _refresh_step(self, r: int) -> None:
        n = min(REFRESH_PER_DRAW, len(self._remote))
        turn = self._remote[(self._cursor + np.arange(n)) % max(1, len(self._remote))]
        self._cursor = (self._cursor + n) % max(1, len(self._remote))
        self.refresh(np.r_[self._local, turn])
        if self.totals.sum() < r:
            self.refresh()

    def draw(self, r: int):
        """(rank, record) of min(r, snapshot size) distinct samples, uniformly at random."""
        self._refresh_step(r)
        totals = self.totals
        total = int(totals.sum())
        k = min(int(r), total)
        if k == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        positions = self.rng.choice(total, size=k, replace=False)
        ends = np.cumsum(totals)
        rank = np.searchsorted(ends, positions, side="right")
        record = positions - (ends[rank] - totals[rank])
        return rank, record

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
        order = np.lexsort((record, rank))
        rank, record = rank[order], record[order]
        lay = self.layout
        out = self.new_output(len(rank)) if out is None else out[:len(rank)]
        self.shard.windows.read_records(lay.table, rank, record, out)
        return lay.fetched(out)
