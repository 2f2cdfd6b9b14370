"""Composed LoRA adapters on a frozen ViT (the LoRAC part of LoRAC-IPC, Ling et al., arXiv 2504.13407).

Targets: in every block, q, k and v (the three row blocks of ``attn.qkv``), ``attn.proj``,
``mlp.fc1`` and ``mlp.fc2``; each is a "pair" (layer, matrix), keyed ``"{layer}_{matrix}"``.

One adapter (A_t: [r, in], B_t: [out, r]) per task and pair. While task t trains, a pair's
weight update is

    dW = s * (sum_{i<t} omega_{t,i} B_i A_i + B_t A_t),   s = alpha / r

with past A_i, B_i frozen and the scalars omega_{t,i} (per task t, per pair, per past task i)
trainable. omega_t is stored with task t's adapter; inference composes with the omegas of the
latest task (``set_active`` picks another). The pretrained weights never change. Pairs frozen
by IPC (:mod:`hpccl.continual.lora.ipc`) get no adapter in later tasks and keep their omegas fixed.

The frozen ViT keeps its timm state-dict names (it is ``self.backbone``); the adapters are
applied by forward hooks, computed low-rank (x A^T, scaled, then B^T): per token that costs
(in + out) * (ranks so far) instead of in * out for a dense delta.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MATRICES", "LoRACViT", "TaskAdapter", "pair_key"]

MATRICES = ("q", "k", "v", "proj", "fc1", "fc2")


def pair_key(layer: int, matrix: str) -> str:
    return f"{layer}_{matrix}"


class TaskAdapter(nn.Module):
    """Task t's adapters (``lora_A``, ``lora_B``, keyed by pair; absent on IPC-frozen pairs)
    and its composition weights ``omega[key]`` over the past adapters at that pair."""

    def __init__(self):
        super().__init__()
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.omega = nn.ParameterDict()


class LoRACViT(nn.Module):
    """A frozen :class:`~hpccl.models.vit.VisionTransformer` with composed per-task LoRA adapters.

    ``train_head``: the classifier stays trainable (masked to the task's classes while training;
    see :mod:`hpccl.continual.lora.training`). Call ``begin_task(t)`` before training task t and
    ``end_task()`` after it (before ``IPCTracker.freeze_top``).
    """

    def __init__(self, backbone: nn.Module, rank: int = 4, alpha: float | None = None,
                 matrices=MATRICES, omega_init: float = 1.0, train_head: bool = True):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        unknown = set(matrices) - set(MATRICES)
        if unknown:
            raise ValueError(f"unknown LoRA target matrices {sorted(unknown)}; known: {MATRICES}")
        self.backbone = backbone
        self.rank = int(rank)
        self.alpha = float(rank if alpha is None else alpha)
        self.scaling = self.alpha / self.rank
        self.omega_init = float(omega_init)
        self.matrices = tuple(m for m in MATRICES if m in matrices)
        for p in backbone.parameters():
            p.requires_grad_(False)
        for p in backbone.head.parameters():
            p.requires_grad_(train_head)
        width = backbone.width
        self.shapes = {}  # key -> (out, in)
        for layer, blk in enumerate(backbone.blocks):
            hidden = blk.mlp.fc1.out_features
            dims = {"q": (width, width), "k": (width, width), "v": (width, width),
                    "proj": (width, width), "fc1": (hidden, width), "fc2": (width, hidden)}
            for m in self.matrices:
                self.shapes[pair_key(layer, m)] = dims[m]
        self.pairs = [(layer, m) for layer in range(len(backbone.blocks)) for m in self.matrices]
        self.keys = [pair_key(*p) for p in self.pairs]
        self.tasks = nn.ModuleList()
        # Task at whose end IPC froze each pair (-1: not frozen); saved with the state dict.
        self.register_buffer("frozen_at", torch.full((len(self.keys),), -1, dtype=torch.long))
        self.active = -1  # whose omegas compose; the task being trained, else the latest
        self._hooks = []
        for layer, blk in enumerate(backbone.blocks):
            self._hooks.append(blk.attn.qkv.register_forward_hook(self._qkv_hook(layer)))
            for name, mod in (("proj", blk.attn.proj), ("fc1", blk.mlp.fc1), ("fc2", blk.mlp.fc2)):
                if name in self.matrices:
                    self._hooks.append(mod.register_forward_hook(self._single_hook(layer, name)))

    # -- structure ---------------------------------------------------------------------------------
    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def is_frozen(self, key: str) -> bool:
        return bool(self.frozen_at[self.keys.index(key)] >= 0)

    def frozen_keys(self) -> list[str]:
        return [k for k, f in zip(self.keys, self.frozen_at.tolist()) if f >= 0]

    def adapter_tasks(self, key: str, upto: int) -> list[int]:
        """Tasks j <= upto that have an adapter at ``key``."""
        return [j for j in range(min(upto + 1, self.num_tasks)) if key in self.tasks[j].lora_A]

    def begin_task(self, task: int) -> TaskAdapter:
        """Add task ``task``'s adapters (not on IPC-frozen pairs) and omegas; freeze the past."""
        if task != self.num_tasks:
            raise ValueError(f"begin_task({task}) but {self.num_tasks} task(s) exist; tasks start in order from 0")
        for p in self.tasks.parameters():
            p.requires_grad_(False)
        ref = next(self.backbone.parameters())
        new = TaskAdapter().to(ref.device)
        for key in self.keys:
            past = self.adapter_tasks(key, task - 1)
            if past:
                if task > 0 and key in self.tasks[task - 1].omega:
                    prev = self.tasks[task - 1].omega[key].detach().clone()
                else:
                    prev = torch.empty(0, device=ref.device, dtype=ref.dtype)
                # Learnt values carry over; the just-finished adapter starts at omega_init.
                extra = len(past) - len(prev)
                init = torch.cat([prev, torch.full((extra,), self.omega_init, device=ref.device, dtype=ref.dtype)])
                new.omega[key] = nn.Parameter(init, requires_grad=not self.is_frozen(key))
            if self.is_frozen(key):
                continue
            out_f, in_f = self.shapes[key]
            a = torch.empty(self.rank, in_f, device=ref.device, dtype=ref.dtype)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as in LoRA (loralib / peft)
            new.lora_A[key] = nn.Parameter(a)
            new.lora_B[key] = nn.Parameter(torch.zeros(out_f, self.rank, device=ref.device, dtype=ref.dtype))
        self.tasks.append(new)
        self.active = task
        return new

    def end_task(self) -> None:
        """Freeze the finished task's adapters and omegas (they are now the past)."""
        for p in self.tasks.parameters():
            p.requires_grad_(False)

    def freeze_pairs(self, keys, task: int | None = None) -> None:
        """IPC: no adapter on these pairs in later tasks, and their omegas stay fixed."""
        task = self.num_tasks - 1 if task is None else task
        for key in keys:
            i = self.keys.index(key)
            if self.frozen_at[i] < 0:
                self.frozen_at[i] = task

    def set_active(self, task: int) -> None:
        """Compose with task ``task``'s omegas (default after begin_task: the latest task)."""
        if not -1 <= task < self.num_tasks:
            raise ValueError(f"no task {task}; {self.num_tasks} exist")
        self.active = task

    # -- the composed update -----------------------------------------------------------------------
    def _terms(self, key: str, task: int | None = None):
        """(A stacked [R, in], B stacked [out, R], coefficient per rank [R]) or None."""
        task = self.active if task is None else task
        if task < 0:
            return None
        tasks = self.adapter_tasks(key, task)
        if not tasks:
            return None
        coefs = []
        omega = self.tasks[task].omega[key] if key in self.tasks[task].omega else None
        n_past = 0
        for j in tasks:
            if j < task:
                coefs.append(omega[n_past].expand(self.rank))
                n_past += 1
            else:
                coefs.append(torch.ones(self.rank, device=omega.device if omega is not None else
                                        self.tasks[j].lora_A[key].device))
        a = torch.cat([self.tasks[j].lora_A[key] for j in tasks], 0)
        b = torch.cat([self.tasks[j].lora_B[key] for j in tasks], 1)
        return a, b, torch.cat(coefs) * self.scaling

    def _delta_out(self, key, x):
        terms = self._terms(key)
        if terms is None:
            return None
        a, b, c = terms
        return F.linear(F.linear(x, a) * c, b)

    def _single_hook(self, layer, name):
        key = pair_key(layer, name)

        def hook(module, inputs, output):
            d = self._delta_out(key, inputs[0])
            return output if d is None else output + d
        return hook

    def _qkv_hook(self, layer):
        keys = [pair_key(layer, m) for m in ("q", "k", "v")]

        def hook(module, inputs, output):
            deltas = [self._delta_out(k, inputs[0]) if m in self.matrices else None
                      for k, m in zip(keys, ("q", "k", "v"))]
            if all(d is None for d in deltas):
                return output
            width = output.shape[-1] // 3
            parts = [d if d is not None else output.new_zeros(*output.shape[:-1], width) for d in deltas]
            return output + torch.cat(parts, -1)
        return hook

    def delta_weight(self, layer: int, matrix: str, task: int | None = None) -> torch.Tensor:
        """The dense composed update dW [out, in] of a pair (with ``task``'s omegas)."""
        key = pair_key(layer, matrix)
        out_f, in_f = self.shapes[key]
        terms = self._terms(key, task)
        ref = next(self.backbone.parameters())
        if terms is None:
            return torch.zeros(out_f, in_f, device=ref.device, dtype=ref.dtype)
        a, b, c = terms
        return (b * c) @ a

    def frozen_weight(self, layer: int, matrix: str) -> torch.Tensor:
        blk = self.backbone.blocks[layer]
        if matrix in ("q", "k", "v"):
            w = blk.attn.qkv.weight
            i = ("q", "k", "v").index(matrix)
            return w[i * self.backbone.width:(i + 1) * self.backbone.width]
        return {"proj": blk.attn.proj, "fc1": blk.mlp.fc1, "fc2": blk.mlp.fc2}[matrix].weight

    def composed_weight(self, layer: int, matrix: str, task: int | None = None) -> torch.Tensor:
        return self.frozen_weight(layer, matrix) + self.delta_weight(layer, matrix, task)

    def forward(self, x):
        return self.backbone(x)

    # -- checkpoints -------------------------------------------------------------------------------
    def structure(self) -> dict:
        """What ``rebuild`` needs before ``load_state_dict`` (which keys each task has)."""
        training = bool(self.num_tasks) and any(p.requires_grad for p in self.tasks[-1].parameters())
        return {"num_tasks": self.num_tasks, "frozen_at": self.frozen_at.tolist(), "active": self.active,
                "training": training}

    def rebuild(self, structure: dict) -> None:
        """Recreate the task adapters of ``structure`` (values then come from load_state_dict)."""
        frozen = structure["frozen_at"]
        self.tasks = nn.ModuleList()
        self.frozen_at.fill_(-1)
        for t in range(structure["num_tasks"]):
            self.begin_task(t)
            self.freeze_pairs([k for k, f in zip(self.keys, frozen) if f == t], task=t)
        if not structure.get("training", False):
            self.end_task()
        self.active = structure["active"]
