"""What the training of every job kind shares: how the learning rate scales with the number
of ranks, and the check that a model's weights are still finite.

The kinds keep their own loops (README "Architecture" says why): continual learners train
epochs over a task (``hpccl.continual.learners.loop.fit``), ALMA trains ensembles on rank
groups with early stopping, online RNNs learn one sequence step at a time.
"""

from __future__ import annotations

import torch


def lr_multiplier(train, world_size: int) -> float:
    """How much the single-rank lr is scaled on ``world_size`` ranks (Goyal et al., 2017)."""
    if train.lr_scaling == "none":
        return 1.0
    factor = float(world_size)
    return min(factor, train.lr_scaling_cap) if train.lr_scaling_cap else factor


def lr_at(train, world_size: int, epoch_progress: float) -> float:
    """Linear warm-up from lr to the scaled lr over ``warmup_epochs``, then constant."""
    target = train.lr * lr_multiplier(train, world_size)
    if train.warmup_epochs and epoch_progress < train.warmup_epochs:
        return train.lr + (target - train.lr) * epoch_progress / train.warmup_epochs
    return target


def parameters_finite(model) -> bool:
    """Once an epoch (one sync): an overflowing step can leave a finite loss and broken weights."""
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(flags).all()) if flags else True
