"""One optimizer factory for every job kind (``train.optimizer``: sgd | adam).

The gradient averaging over ranks is not here: continual learners wrap the result with
their backend's distributed optimizer (``learners.loop.make_optimizer``), ALMA and the
online RNN average gradients over MPI themselves.
"""

from __future__ import annotations

import torch

OPTIMIZERS = ("sgd", "adam")


def make_local_optimizer(params, name: str, lr: float, momentum: float = 0.0,
                         weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """``params``: tensors, or parameter groups (a group's own lr or weight decay wins)."""
    name = str(name).lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r} ({' | '.join(OPTIMIZERS)})")
