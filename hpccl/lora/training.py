"""Training helpers for LoRAC-IPC: logit masking, class-incremental evaluation, what is
trained and what it costs to allreduce, and one training step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hpccl.lora.ortho import orthogonality_penalty

__all__ = ["class_mask", "mask_logits", "masked_cross_entropy", "predict_seen", "evaluate_class_incremental",
           "trainable_parameters", "param_groups", "allreduce_bytes", "train_step"]


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


@torch.no_grad()
def predict_seen(model, x, seen_classes, batch_size: int = 256) -> torch.Tensor:
    """Class-incremental prediction: argmax over all classes seen so far (no task id)."""
    was_training = model.training
    model.eval()
    preds = [mask_logits(model(x[i:i + batch_size]), seen_classes).argmax(1) for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=x.device)


@torch.no_grad()
def evaluate_class_incremental(model, x, y, seen_classes, batch_size: int = 256) -> dict:
    """Accuracy over all seen classes, overall and per class (a dict class -> accuracy)."""
    pred = predict_seen(model, x, seen_classes, batch_size)
    correct = pred == y
    per_class = {int(c): float(correct[y == c].float().mean()) for c in torch.unique(y).tolist()}
    return {"accuracy": float(correct.float().mean()) if len(y) else 0.0, "per_class": per_class, "n": len(y)}


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


def allreduce_bytes(model) -> dict:
    """Gradient bytes allreduced per step: trainable (this task) vs full fine-tuning of the
    backbone (every parameter of the ViT, head included)."""
    named = trainable_parameters(model)
    train_params = sum(p.numel() for _, p in named)
    train_bytes = sum(p.numel() * p.element_size() for _, p in named)
    full = list(model.backbone.parameters())
    full_params = sum(p.numel() for p in full)
    full_bytes = sum(p.numel() * p.element_size() for p in full)
    return {"trainable_params": train_params, "trainable_bytes": train_bytes,
            "full_params": full_params, "full_bytes": full_bytes,
            "fraction": train_bytes / full_bytes if full_bytes else 0.0,
            "tensors": len(named)}


def train_step(model, optimizer, x, y, task_classes, ortho_weight: float = 0.0, tracker=None) -> dict:
    """One step: masked cross-entropy (+ ``ortho_weight`` x orthogonality penalty), backward,
    step, then the IPC tracker update (on the gradients the step used)."""
    optimizer.zero_grad()
    logits = model(x)
    ce = masked_cross_entropy(logits, y, task_classes)
    loss = ce
    ortho = None
    if ortho_weight:
        ortho = orthogonality_penalty(model)
        loss = loss + ortho_weight * ortho
    loss.backward()
    optimizer.step()
    if tracker is not None:
        tracker.update()
    return {"loss": float(loss.detach()), "ce": float(ce.detach()),
            "ortho": None if ortho is None else float(ortho.detach())}
