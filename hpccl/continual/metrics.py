"""Continual-learning metrics from the accuracy matrix.

``acc[i, j]`` is the accuracy on task j's test data after training task i (NaN for j > i).
Definitions follow Chaudhry et al. (2018) for forgetting and Lopez-Paz & Ranzato (2017) for
backward transfer.
"""

from __future__ import annotations

import numpy as np


def average_accuracy(acc: np.ndarray) -> np.ndarray:
    """Mean accuracy over the tasks seen so far, after each task: A_i = mean_{j<=i} acc[i, j]."""
    return np.array([np.mean(acc[i, :i + 1]) for i in range(acc.shape[0])])


def forgetting(acc: np.ndarray) -> np.ndarray:
    """After each task i >= 1: mean over j < i of (max_{l<i} acc[l, j]) - acc[i, j]; 0 for i = 0."""
    out = np.zeros(acc.shape[0])
    for i in range(1, acc.shape[0]):
        out[i] = np.mean([np.nanmax(acc[:i, j]) - acc[i, j] for j in range(i)])
    return out


def backward_transfer(acc: np.ndarray) -> float:
    """BWT = mean over j < T-1 of acc[T-1, j] - acc[j, j] (negative means forgetting)."""
    t = acc.shape[0]
    if t < 2:
        return 0.0
    return float(np.mean([acc[t - 1, j] - acc[j, j] for j in range(t - 1)]))


def topk_correct(logits, targets, ks=(1, 5)):
    """Per-sample booleans for each k (k capped at the number of classes)."""
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hits = top == targets.unsqueeze(1)
    return {k: hits[:, :min(k, maxk)].any(dim=1) for k in ks}


def format_matrix(acc: np.ndarray, title: str = "accuracy matrix (row: after task i, column: task j), %") -> str:
    t = acc.shape[0]
    lines = [title, "        " + "".join(f"{f'T{j}':>8}" for j in range(t))]
    for i in range(t):
        cells = "".join(f"{acc[i, j] * 100:8.1f}" if j <= i else f"{'':>8}" for j in range(t))
        lines.append(f"{f'T{i}':>6}  " + cells)
    return "\n".join(lines)
