"""Orthogonality of the tasks' LoRA subspaces.

Formulation chosen: for each pair, stack the A matrices (their rows span the input subspace
each task writes through) of all tasks so far, past ones detached, normalise every row to
unit length, and penalise ``||R R^T - I||_F^2`` (R: [sum of ranks, in]). It is zero exactly
when all rows are orthonormal, i.e. the current task's subspace is orthogonal to every past
one and its own rows are orthogonal to each other.

The paper describes keeping the composed subspaces orthogonal through a QR decomposition.
We use the soft Gram penalty instead because (1) it is differentiable everywhere and cheap:
a [R, R] Gram with R = tasks x rank (tens), no QR backward, whose gradient is ill-conditioned
for near-dependent rows; (2) it only moves the current task's rows (past rows detached), so
past adapters stay bit-for-bit fixed, which a hard re-orthogonalisation of the stack would
break; (3) it is a plain loss term, so rank-averaged gradients over MPI need nothing special.
Normalising rows makes it a penalty on directions only; the scale of an update is left to B
and omega. The diagonal terms vanish after normalisation, so only the overlaps count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gram_penalty", "orthogonality_penalty"]


def gram_penalty(rows: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``||G - I||_F^2`` for the Gram matrix G of the row-normalised ``rows`` [n, d]."""
    r = F.normalize(rows, dim=1, eps=eps)
    g = r @ r.t()
    return (g - torch.eye(len(r), device=r.device, dtype=r.dtype)).pow(2).sum()


def orthogonality_penalty(model, task: int | None = None) -> torch.Tensor:
    """Sum of :func:`gram_penalty` over the pairs where ``task`` (default: the active task) has
    an adapter: its A rows stacked under the detached A rows of every earlier task."""
    task = model.active if task is None else task
    ref = next(model.backbone.parameters())
    total = torch.zeros((), device=ref.device, dtype=ref.dtype)
    if task < 0:
        return total
    current = model.tasks[task].lora_A
    for key in current:
        past = [model.tasks[j].lora_A[key].detach() for j in model.adapter_tasks(key, task - 1)]
        total = total + gram_penalty(torch.cat(past + [current[key]], 0))
    return total
