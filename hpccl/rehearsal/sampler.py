"""Globally unbiased sampling from all ranks' shards with one-sided reads.

A draw of r representatives is uniform over every sample stored in every shard at that
moment, without replacement: read each rank's per-class counts (its header), draw r distinct
positions in the concatenation of all stored samples, map each to (rank, class, slot), and
fetch each owner's samples with one read (see windows.py). Counts only grow and slots are
only overwritten by newer samples of the same class, so a slot seen as stored in the header
still holds a stored sample when its data is read.
"""

from __future__ import annotations

import numpy as np

from hpccl.rehearsal.shard import Shard


class GlobalSampler:
    def __init__(self, shard: Shard, rng: np.random.Generator):
        self.shard, self.rng = shard, rng
        self.layout = shard.layout

    def counts(self) -> np.ndarray:
        """Stored samples per (rank, class), read from every rank's header: [size, C]."""
        raw = self.shard.windows.read_headers(self.layout.header_bytes)
        return raw.view(np.int64).reshape(raw.shape[0], -1)[:, 2:].copy()

    def draw(self, r: int, counts: np.ndarray | None = None):
        """(rank, class, slot) of min(r, stored) distinct stored samples, uniformly at random."""
        counts = self.counts() if counts is None else counts
        flat = counts.ravel()                       # (rank, class) blocks, in order
        total = int(flat.sum())
        k = min(int(r), total)
        if k == 0:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        positions = self.rng.choice(total, size=k, replace=False)
        ends = np.cumsum(flat)
        block = np.searchsorted(ends, positions, side="right")
        slot = positions - (ends[block] - flat[block])
        rank, cls = np.divmod(block, counts.shape[1])
        return rank, cls, slot

    def new_output(self, r: int) -> np.ndarray:
        """A reusable output for ``sample(r, out=...)``."""
        return np.empty((r, self.layout.sample_bytes), dtype=np.uint8)

    def sample(self, r: int, out: np.ndarray | None = None):
        """Fetch r representatives: (x [k, *sample_shape] float32, y [k] int64), k <= r.

        The draw is a random set, so its order is free: grouping it by owner lets each
        owner's samples land in one contiguous slice of the result, copied once. ``out``
        (from ``new_output``) is filled and viewed instead of allocating: fresh pages for
        every draw cost as much as the copy itself.
        """
        rank, cls, slot = self.draw(r)
        order = np.argsort(rank, kind="stable")
        rank, cls, slot = rank[order], cls[order], slot[order]
        lay = self.layout
        out = (np.empty((len(rank), lay.sample_bytes), dtype=np.uint8) if out is None
               else out[:len(rank)])
        starts = np.flatnonzero(np.r_[True, rank[1:] != rank[:-1]]) if len(rank) else []
        for start, stop in zip(starts, list(starts[1:]) + [len(rank)]):
            rows = cls[start:stop] * lay.slots + slot[start:stop]
            self.shard.windows.read_rows(int(rank[start]), lay.data_offset, lay.sample_bytes, rows,
                                         out=out[start:stop])
        x = out.view(np.float32).reshape((len(rank),) + lay.sample_shape)
        return x, cls.astype(np.int64)
