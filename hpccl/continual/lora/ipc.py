"""IPC: importance-based constraints on critical (layer, matrix) pairs.

While a task trains, each pair's importance is tracked AdaLoRA-style:

    s     = mean over the pair's trainable adapter elements of |theta * grad|    (this step)
    S     = beta1 * S + (1 - beta1) * s                                           (sensitivity)
    U     = beta2 * U + (1 - beta2) * |s - S|                                     (uncertainty)
    score = S * U

At the task's end the top ``fraction`` of the pairs trained in that task, by score, are frozen
for all later tasks (``LoRACViT.freeze_pairs``): no new adapter there, omegas fixed.

theta: the current task's adapter parameters A_t, B_t (and the pair's trainable omegas), not
the frozen pretrained weight. Reasons: (1) the frozen weight has no gradient by design;
getting one means a dense [out, in] weight gradient per pair and step, the compute and memory
LoRA exists to avoid; (2) |theta * grad| of the adapter is the first-order loss change if this
task's update at the pair were removed, i.e. how much the task relies on changing that matrix,
which is what freezing protects; (3) it is the sensitivity AdaLoRA defines, which IPC builds on.
Element means (not sums) make matrices of different sizes (fc1 vs q) comparable. Early steps
have B_t = 0, so s = 0 until the adapter moves; the EMAs absorb that.

Distributed use: call ``update()`` after ``optimizer.step()``; both backends leave the
rank-averaged gradients in ``.grad``, so every rank computes the same scores and freezes the
same pairs without communication. (Called before the step, pass the scores through an
allreduce-mean before ``freeze_top``.)
"""

from __future__ import annotations

import math

import torch

__all__ = ["IPCTracker"]


class IPCTracker:
    def __init__(self, model, fraction: float = 0.1, beta1: float = 0.85, beta2: float = 0.85):
        if not 0 <= fraction <= 1:
            raise ValueError(f"IPC fraction must be in [0, 1], got {fraction}")
        self.model, self.fraction, self.beta1, self.beta2 = model, float(fraction), float(beta1), float(beta2)
        self.reset()

    def reset(self) -> None:
        """Forget the scores (call at the start of every task)."""
        self.sensitivity: dict[str, float] = {}
        self.uncertainty: dict[str, float] = {}
        self.steps = 0

    @torch.no_grad()
    def instant(self) -> dict[str, float]:
        """This step's |theta * grad| per pair of the active task (pairs with gradients)."""
        m = self.model
        task = m.tasks[m.active]
        out = {}
        for key in task.lora_A:
            total, count = 0.0, 0
            params = [task.lora_A[key], task.lora_B[key]]
            if key in task.omega and task.omega[key].requires_grad:
                params.append(task.omega[key])
            for p in params:
                if p.grad is not None:
                    total += (p * p.grad).abs().sum().item()
                    count += p.numel()
            if count:
                out[key] = total / count
        return out

    def update(self, instant: dict[str, float] | None = None) -> None:
        s_now = self.instant() if instant is None else instant
        for key, s in s_now.items():
            sens = self.beta1 * self.sensitivity.get(key, 0.0) + (1 - self.beta1) * s
            self.sensitivity[key] = sens
            self.uncertainty[key] = self.beta2 * self.uncertainty.get(key, 0.0) + (1 - self.beta2) * abs(s - sens)
        self.steps += 1

    def scores(self) -> dict[str, float]:
        return {k: self.sensitivity[k] * self.uncertainty.get(k, 0.0) for k in self.sensitivity}

    def select(self) -> list[str]:
        """The keys to freeze: top ``fraction`` (rounded, at least one if fraction > 0) of the
        pairs trained this task, by score; pairs with a zero score are never picked."""
        candidates = list(self.model.tasks[self.model.active].lora_A) if self.model.active >= 0 else []
        if not candidates or self.fraction == 0:
            return []
        n = max(1, int(math.floor(self.fraction * len(candidates) + 0.5)))
        scores = self.scores()
        ranked = sorted((k for k in candidates if scores.get(k, 0.0) > 0), key=lambda k: (-scores[k], k))
        return ranked[:n]

    def freeze_top(self) -> list[str]:
        """At a task's end: freeze the selected pairs in the model; returns their keys."""
        keys = self.select()
        self.model.freeze_pairs(keys, task=self.model.active)
        return keys
