"""Streaming sequence-classification tasks that need no download.

* :func:`spiral_task` -- rotation direction of a decaying 2-D spiral (the toy task of the
  sparse-RTRL paper's code): ``x_t = (+-sin(t + phi), cos(t + phi)) / (1 + t)``,
  ``t in linspace(0, 2 pi, T)``; label 1 = one rotation sense, 0 = the other (x1 negated).
* :func:`digits_task` -- scikit-learn's bundled 8x8 digits read row by row (T=8, D=8, 10
  classes).
* :func:`from_arrays` -- any ``x [N, T, D]``, ``y [N]`` arrays.

A task is a :class:`SequenceTask`; :meth:`SequenceTask.stream` yields ``(x [T, D], y)``
one sequence at a time, from this rank's shard of the examples, reshuffled each pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch


@dataclass
class SequenceTask:
    """N labelled sequences of T steps of D inputs; ``seq_len`` (T) and ``input_size`` (D) are
    read off ``x`` when the task is made."""
    x: np.ndarray          # [N, T, D] float
    y: np.ndarray          # [N] int
    num_classes: int
    name: str = "arrays"

    def __post_init__(self):
        self.x = np.asarray(self.x, dtype=np.float32)
        self.y = np.asarray(self.y).astype(np.int64)
        if self.x.ndim != 3:
            raise ValueError(f"x must be [N, T, D], got shape {self.x.shape}")
        if self.y.shape != (self.x.shape[0],):
            raise ValueError(f"y must be [N] with N={self.x.shape[0]}, got {self.y.shape}")
        if self.y.min() < 0 or self.y.max() >= self.num_classes:
            raise ValueError("labels must lie in [0, num_classes)")
        _, self.seq_len, self.input_size = self.x.shape

    def __len__(self) -> int:
        return self.x.shape[0]

    def split(self, test_fraction: float = 0.2, seed: int = 0):
        """(train, test) tasks from a seeded permutation."""
        perm = np.random.default_rng(seed).permutation(len(self))
        n_test = int(round(test_fraction * len(self)))
        te, tr = perm[:n_test], perm[n_test:]
        return (SequenceTask(self.x[tr], self.y[tr], self.num_classes, self.name),
                SequenceTask(self.x[te], self.y[te], self.num_classes, self.name))

    def stream(self, num_sequences: int | None = None, *, seed: int = 0, rank: int = 0,
               world_size: int = 1, dtype: torch.dtype = torch.float32,
               device=None) -> Iterator[tuple[torch.Tensor, int]]:
        """Yield ``num_sequences`` (or endless) sequences from shard ``rank`` of
        ``world_size`` (examples i with i % world_size == rank), shuffled per pass with a
        seed that also depends on the rank, so data-parallel ranks see different data."""
        idx = np.arange(rank, len(self), world_size)
        if idx.size == 0:
            raise ValueError(f"rank {rank} of {world_size} gets no examples from {len(self)}")
        rng = np.random.default_rng([seed, rank])
        xt = torch.as_tensor(self.x, dtype=dtype, device=device)
        done = 0
        while num_sequences is None or done < num_sequences:
            for i in rng.permutation(idx):
                if num_sequences is not None and done >= num_sequences:
                    return
                yield xt[i], int(self.y[i])
                done += 1


def from_arrays(x, y, num_classes: int | None = None, name: str = "arrays") -> SequenceTask:
    y = np.asarray(y).astype(np.int64)
    k = int(y.max()) + 1 if num_classes is None else int(num_classes)
    return SequenceTask(np.asarray(x), y, k, name)


def spiral_task(num_examples: int = 4096, seq_len: int = 17, seed: int = 0) -> SequenceTask:
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 2 * math.pi, seq_len)
    phase = rng.uniform(0.0, 2 * math.pi, size=(num_examples, 1))
    y = rng.integers(0, 2, size=num_examples)
    x1 = np.sin(t + phase) / (1 + t)
    x2 = np.cos(t + phase) / (1 + t)
    x1 = np.where(y[:, None] == 1, x1, -x1)  # negating one coordinate reverses the rotation
    return SequenceTask(np.stack([x1, x2], -1), y, 2, "spiral")


def digits_task() -> SequenceTask:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0  # [1797, 8, 8]: 8 steps of one 8-pixel row
    return SequenceTask(x, d.target, 10, "digits")
