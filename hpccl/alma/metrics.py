"""ALMA's metrics: anytime error, cumulative error rate, size, training compute.

Anytime error. After arrival t (0-based, t = 0..M-1) the "model available at that moment"
is the learner's state once arrival t is processed, i.e. *after* the update that arrival t
triggered, if any. Before the first update that is the untrained initial model (its error
is measured like any other, about chance). ``e_t`` is its 0-1 error rate on the full test
set: wrong predictions / test samples (argmax of the logits), in [0, 1].

Cumulative error rate (CER):

    CER = sum_{t=0}^{M-1} e_t                       in [0, M]

the area under the error-vs-arrival curve with unit time steps (Caccia et al. 2022, eq. for
CER: the 0-1 loss on the test set summed over the time steps). A learner that waits pays for
the steps where it has no good model yet. Final error = e_{M-1}. ``cer_normalized`` = CER / M
(mean error over time) is given for comparing streams with different M.

Compute. FLOPs of the training steps as counted by ``torch.utils.flop_counter.FlopCounterMode``
on the actual model and a batch of actual inputs: forward (model + loss) plus backward.
That counter counts matrix products and convolutions only (e.g. 2*B*in*out for a Linear's
forward; the bias add, activations, softmax/cross-entropy and the optimizer step count 0),
and the backward counts only the gradients autograd really computes (no input gradient for
the first layer when the input does not require grad). Total = FLOPs per sample x samples
processed (every sample of every training step, on every rank: sum the ranks' totals).
Validation and test forwards are not training compute and are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode


def cumulative_error_rate(errors) -> float:
    """CER = sum of the per-arrival test error rates (each in [0, 1])."""
    errors = [float(e) for e in errors]
    for e in errors:
        if not 0.0 <= e <= 1.0:
            raise ValueError(f"error rates must lie in [0, 1], got {e}")
    return float(sum(errors))


def num_parameters(module_or_modules) -> int:
    """Parameters of a module, or of all members (e.g. an ensemble's list of models)."""
    if isinstance(module_or_modules, torch.nn.Module):
        return sum(p.numel() for p in module_or_modules.parameters())
    return sum(num_parameters(m) for m in module_or_modules)


@torch.no_grad()
def error_count(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                batch_size: int = 4096) -> tuple[int, int]:
    """(wrong, total) of ``predict``'s argmax on (x, y). Per-rank test shards: sum both over
    ranks before dividing."""
    wrong = 0
    for i in range(0, len(y), batch_size):
        wrong += int((predict(x[i:i + batch_size]).argmax(1) != y[i:i + batch_size]).sum())
    return wrong, len(y)


def flops_per_sample(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(forward, backward) FLOPs per sample of one cross-entropy training step of ``model`` on
    the batch (x, y), counted by FlopCounterMode. Leaves ``.grad`` untouched (restored)."""
    saved = [p.grad for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    try:
        with FlopCounterMode(display=False) as fwd:
            loss = F.cross_entropy(model(x), y)
        with FlopCounterMode(display=False) as bwd:
            loss.backward()
    finally:
        for p, g in zip(model.parameters(), saved):
            p.grad = g
    n = len(x)
    return fwd.get_total_flops() / n, bwd.get_total_flops() / n


class FlopMeter:
    """Training FLOPs of one rank: FLOPs per sample x samples processed, accumulated."""

    def __init__(self):
        self.total = 0.0
        self.samples = 0

    def add(self, per_sample: float, samples: int):
        self.total += float(per_sample) * int(samples)
        self.samples += int(samples)


@dataclass
class AnytimeMetrics:
    """The anytime error after every arrival, and what ALMA reports from it."""
    errors: list = field(default_factory=list)        # e_t, one per arrival
    updated: list = field(default_factory=list)       # whether arrival t triggered an update
    parameters: list = field(default_factory=list)    # model size after arrival t
    flops: list = field(default_factory=list)         # cumulative training FLOPs after arrival t

    def record(self, wrong: int, total: int, updated: bool = False, parameters: Optional[int] = None,
               flops: Optional[float] = None):
        if total <= 0 or not 0 <= wrong <= total:
            raise ValueError(f"need 0 <= wrong <= total, total > 0; got {wrong}/{total}")
        self.errors.append(wrong / total)
        self.updated.append(bool(updated))
        self.parameters.append(parameters)
        self.flops.append(flops)

    @property
    def cer(self) -> float:
        return cumulative_error_rate(self.errors)

    @property
    def cer_normalized(self) -> float:
        return self.cer / len(self.errors)

    @property
    def final_error(self) -> float:
        return self.errors[-1]

    def summary(self) -> dict:
        return {"cer": self.cer, "cer_normalized": self.cer_normalized, "final_error": self.final_error,
                "errors": list(self.errors), "updates": int(sum(self.updated)),
                "parameters": self.parameters[-1], "train_flops": self.flops[-1]}
