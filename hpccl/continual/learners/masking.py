"""Class-incremental heads without a task id: a task trains on its own classes' logits, and
prediction takes the argmax over every class seen so far (``finetune`` and ``lorac``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_mask(classes, num_classes: int, device=None) -> torch.Tensor:
    """Boolean [num_classes], True for ``classes``."""
    mask = torch.zeros(num_classes, dtype=torch.bool, device=device)
    mask[torch.as_tensor(list(classes), dtype=torch.long, device=device)] = True
    return mask


def mask_logits(logits: torch.Tensor, classes) -> torch.Tensor:
    """Logits of classes outside ``classes`` set to -inf (no gradient reaches their head rows)."""
    mask = class_mask(classes, logits.shape[-1], logits.device)
    return logits.masked_fill(~mask, float("-inf"))


def masked_cross_entropy(logits, y, task_classes) -> torch.Tensor:
    """Training loss of a task: cross-entropy over the current task's classes only."""
    return F.cross_entropy(mask_logits(logits, task_classes), y)
