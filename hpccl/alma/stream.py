"""The ALMA stream: the training set, permuted with the job seed, split into M mega-batches
that arrive one per time step (i.i.d., since the permutation ignores labels), and the
schedule telling the learner at each arrival whether to update and on which samples.

Everything here is index arithmetic on global row numbers, identical on every rank (same
seed, no communication); a rank then reads only its own rows (``shard``), as in
``hpccl.continual.scenario``.

Conventions (decided here, documented for the integration):

* Sizes: ``np.array_split`` of the permutation: the M mega-batches have equal sizes when M
  divides N, else sizes differ by at most one (the first ``N % M`` are one larger). No
  sample is dropped, so the mega-batches partition the training set.
* Waiting ``w`` (1 <= w <= M): the learner updates at arrival ``t`` (0-based) when
  ``(t + 1) % w == 0``, on the mega-batches that arrived since its last update. ``w = 1``
  updates at every arrival, ``w = M`` once, at the end (offline). When w does not divide M,
  the last arrival also triggers an update (``flush=True``, the default) so that no data
  goes unused; ``flush=False`` leaves the tail untrained, as a strict "every w" reading.
* Replay ``p`` in [0, 1]: each update adds, from every mega-batch that arrived *before*
  this update's new ones, ``round(p * size)`` of its samples drawn uniformly without
  replacement (a fresh draw per update, seeded by (seed, "replay", update, mega-batch)).
  Stratified per mega-batch, so the proportion holds for each past mega-batch exactly up to
  rounding; ``p = 0`` trains on the new data only, ``p = 1`` on everything seen so far.
* Per-rank shards: ``shard(indices, rank, size) = indices[rank::size]``: disjoint, union is
  ``indices``, sizes within one. ``Update.local(rank, size)`` shards the update's whole
  index list (new + replay) the same way, so the per-rank training sets of an update are
  balanced within one sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hpccl.core.seeding import numpy_rng


def shard(indices: np.ndarray, rank: int, size: int) -> np.ndarray:
    """This rank's part of ``indices``: every ``size``-th element from ``rank``."""
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} out of range for {size} ranks")
    return np.asarray(indices)[rank::size]


class MegaBatchStream:
    """The training set's rows ``0..num_samples-1`` in M mega-batches."""

    def __init__(self, num_samples: int, num_megabatches: int, seed: int):
        if not 1 <= num_megabatches <= num_samples:
            raise ValueError(f"need 1 <= num_megabatches <= num_samples, got {num_megabatches} "
                             f"mega-batches for {num_samples} samples")
        self.num_samples, self.num_megabatches, self.seed = int(num_samples), int(num_megabatches), seed
        order = numpy_rng(seed, "megabatch_order").permutation(self.num_samples)
        self._megabatches = [np.sort(mb) for mb in np.array_split(order, self.num_megabatches)]

    def __len__(self) -> int:
        return self.num_megabatches

    def megabatch(self, t: int) -> np.ndarray:
        """Global row indices (sorted, for contiguous reads) of mega-batch ``t``."""
        return self._megabatches[t]

    def shard(self, t: int, rank: int, size: int) -> np.ndarray:
        """This rank's rows of mega-batch ``t``."""
        return shard(self._megabatches[t], rank, size)


@dataclass
class Update:
    """One update of the learner: triggered at ``arrival``, the ``index``-th update."""
    index: int
    arrival: int
    new: list            # mega-batch ids arrived since the previous update
    past: list           # mega-batch ids before those (replay candidates)
    new_indices: np.ndarray
    replay_indices: np.ndarray
    replay_per_megabatch: dict = field(default_factory=dict)   # past id -> drawn indices

    @property
    def indices(self) -> np.ndarray:
        """All global rows to train on: new data, then replayed data."""
        return np.concatenate([self.new_indices, self.replay_indices])

    def local(self, rank: int, size: int) -> np.ndarray:
        return shard(self.indices, rank, size)

    def split(self, val_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) global rows: a ``val_share`` of the update's rows held out,
        the same on every rank (shard both with ``shard``). At least one sample stays on
        each side when the update has two or more samples."""
        idx = self.indices
        n = len(idx)
        n_val = int(round(val_share * n))
        if val_share > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        perm = numpy_rng(seed, "validation", self.index).permutation(idx)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@dataclass
class Arrival:
    t: int
    megabatch: np.ndarray
    update: Update | None   # None: the learner waits


class Schedule:
    """At each arrival, whether the learner updates and on which rows."""

    def __init__(self, stream: MegaBatchStream, wait: int = 1, replay: float = 0.0, seed: int | None = None,
                 flush: bool = True):
        m = stream.num_megabatches
        if not 1 <= wait <= m:
            raise ValueError(f"wait must be in [1, {m}] (number of mega-batches), got {wait}")
        if not 0.0 <= replay <= 1.0:
            raise ValueError(f"replay must be in [0, 1], got {replay}")
        self.stream, self.wait, self.replay, self.flush = stream, int(wait), float(replay), flush
        self.seed = stream.seed if seed is None else seed

    def update_arrivals(self) -> list[int]:
        m = self.stream.num_megabatches
        ts = [t for t in range(m) if (t + 1) % self.wait == 0]
        if self.flush and (not ts or ts[-1] != m - 1):
            ts.append(m - 1)
        return ts

    def __len__(self) -> int:
        return self.stream.num_megabatches

    def __iter__(self):
        updates = set(self.update_arrivals())
        last, k = -1, 0   # last mega-batch trained on as new data; updates so far
        for t in range(self.stream.num_megabatches):
            upd = None
            if t in updates:
                upd = self._make_update(k, t, list(range(last + 1, t + 1)), list(range(0, last + 1)))
                last, k = t, k + 1
            yield Arrival(t=t, megabatch=self.stream.megabatch(t), update=upd)

    def _make_update(self, k, t, new, past) -> Update:
        new_idx = np.concatenate([self.stream.megabatch(j) for j in new])
        drawn = {}
        for j in past:
            mb = self.stream.megabatch(j)
            n = int(round(self.replay * len(mb)))
            drawn[j] = np.sort(numpy_rng(self.seed, "replay", k, j).choice(mb, size=n, replace=False))
        rep = np.concatenate(list(drawn.values())) if drawn else np.empty(0, dtype=new_idx.dtype)
        return Update(index=k, arrival=t, new=new, past=past, new_indices=new_idx,
                      replay_indices=rep.astype(new_idx.dtype), replay_per_megabatch=drawn)
