"""Training helpers for LoRAC-IPC: what a task trains (and at which lr), and its loss."""

from __future__ import annotations

import torch

from hpccl.continual.learners.masking import masked_cross_entropy
from hpccl.continual.lora.ortho import orthogonality_penalty


def trainable_parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    """(name, parameter) of what the current task trains: its adapters, the trainable omegas
    and the head. What a distributed optimizer should be built over, per task."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def param_groups(model, lr: float, omega_lr_scale: float = 1.0, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer groups: adapters + head at ``lr``; omegas at ``lr * omega_lr_scale``, no decay."""
    named = trainable_parameters(model)
    omegas = [p for n, p in named if ".omega." in n]
    rest = [p for n, p in named if ".omega." not in n]
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "adapters_head"}]
    if omegas:
        groups.append({"params": omegas, "lr": lr * omega_lr_scale, "weight_decay": 0.0,
                       "name": "omegas", "lr_scale": omega_lr_scale})
    return groups


def task_loss(model, task_classes, ortho_weight: float = 0.0):
    """A task's training loss as ``loss_fn(logits, y)``: cross-entropy over the task's classes,
    plus ``ortho_weight`` x the orthogonality penalty of the model's current adapter."""
    def loss_fn(logits, y):
        loss = masked_cross_entropy(logits, y, task_classes)
        return loss + ortho_weight * orthogonality_penalty(model) if ortho_weight else loss
    return loss_fn
