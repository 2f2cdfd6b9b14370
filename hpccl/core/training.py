"""What the training of every job kind shares: how the learning rate scales with the number
of ranks, the check that a model's weights are still finite, and mixed precision.

The kinds keep their own loops (docs/architecture.md says why): continual learners train
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


class Precision:
    """``train.precision``: the forward pass and loss under autocast (bf16 or fp16; fp32 is a
    no-op), and for fp16 a gradient scaler, so small gradients survive the half range.

    A step under a gradient backend: ``backward(loss)``, then ``step(optimizer, clip)``, which
    awaits the allreduce (``synchronize``), unscales, clips the rank-averaged gradient and
    steps without a second allreduce (``skip_synchronize``): Horovod's protocol, which the
    torch and mpi backends mirror. The scaler skips a step whose gradients overflowed, on
    every rank alike, since all see the same averaged gradients."""

    def __init__(self, kind: str, device):
        self.kind = kind
        self.device_type = torch.device(device).type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(kind)
        self.scaler = torch.amp.GradScaler(self.device_type) if kind == "fp16" else None

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def backward(self, loss):
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer, params, clip_norm=None):
        if not (clip_norm or self.scaler):
            optimizer.step()
            return
        optimizer.synchronize()
        if self.scaler:
            self.scaler.unscale_(optimizer)
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        with optimizer.skip_synchronize():
            if self.scaler:
                self.scaler.step(optimizer)
                self.scaler.update()
            else:
                optimizer.step()
