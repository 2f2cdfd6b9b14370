"""LoRAC-IPC (Ling et al., arXiv 2504.13407) as a learner: a frozen pre-trained ViT with one
LoRA adapter per task composed over the past ones, an orthogonality penalty, and IPC freezing
of the most important (layer, matrix) pairs at each task's end (see :mod:`hpccl.continual.lora`).

Per task: ``begin_task`` adds the task's adapters and omegas; a NEW distributed optimizer is
built over what trains now (the task's adapters, its trainable omegas at ``lr x
omega_lr_scale``, the head), so only those gradients are allreduced; the loss is cross-entropy
over the task's classes + ``ortho_weight`` x the orthogonality penalty; the IPC tracker reads
the rank-averaged gradients after every step; at the end, ``end_task`` and ``freeze_top``.
Prediction is argmax over every class seen so far (no task id).

``lora.shared: true`` is the "one LoRA adapter fine-tuned across tasks" baseline: task 0's
adapter is trained on and on (no omegas, no orthogonality, no IPC). ``ipc_fraction: 0`` and
``ortho_weight: 0`` are the two ablations.
"""

from __future__ import annotations

import contextlib
import hashlib
import os

import torch
from torch import nn

from hpccl.continual.learners.base import register
from hpccl.continual.learners.finetune import FinetuneLearner
from hpccl.continual.learners.loop import fit
from hpccl.continual.lora.composed import LoRACViT
from hpccl.continual.lora.ipc import IPCTracker
from hpccl.continual.lora.training import param_groups, task_loss
from hpccl.models import build_model
from hpccl.core.optim import make_local_optimizer
from hpccl.core.seeding import derive_seed


def state_digest(state: dict, exclude=("head.",)) -> str:
    """sha256 over the names and bytes of a state dict's tensors (sorted by name), without
    ``exclude`` prefixes: equal digests mean bit-for-bit equal weights."""
    h = hashlib.sha256()
    for name in sorted(k for k in state if not k.startswith(tuple(exclude))):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _fresh_parameters(module: nn.Module) -> None:
    """Replace every trainable parameter by a new Parameter with the same values.

    Horovod's DistributedOptimizer hooks the gradient accumulator of each parameter it wraps,
    for good; a second wrapper over the same head would allreduce its gradient twice (and
    Horovod refuses the second backward). Fresh Parameter objects have fresh accumulators,
    so the previous task's optimizer and its hooks are simply left behind.
    """
    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is not None and p.requires_grad:
                mod.register_parameter(name, nn.Parameter(p.detach().clone()))


@register("lorac")
class LoRACLearner(FinetuneLearner):
    def reset_model(self, purpose="init"):
        lc, world = self.cfg.lora, self.world
        torch.manual_seed(derive_seed(self.cfg.seed, "model", purpose))
        # model.pretrained is loaded here (the head is the job's own, freshly initialised).
        backbone = build_model(self.cfg.model.kind, self.input_shape, self.num_classes, **self.cfg.model.options)
        self.model = LoRACViT(backbone, rank=lc.rank, alpha=lc.alpha, matrices=lc.matrices,
                              omega_init=lc.omega_init, train_head=lc.train_head).to(world.device)
        self.tracker = IPCTracker(self.model, fraction=0.0 if lc.shared else lc.ipc_fraction,
                                  beta1=lc.ipc_beta, beta2=lc.ipc_beta)
        self.optimizer = None   # one per task, built in _begin_task
        self.frozen_per_task: list[list[str]] = []

    def _full_model(self):
        return self.model.backbone

    def _adapter_rng(self, task: int):
        """Seeded adapter initialisation that leaves the global RNG streams alone."""
        devices = [self.world.device.index or 0] if self.world.device.type == "cuda" else []
        stack = contextlib.ExitStack()
        stack.enter_context(torch.random.fork_rng(devices=devices))
        torch.manual_seed(derive_seed(self.cfg.seed, "lora", task))
        return stack

    def _make_optimizer(self):
        train, lc = self.cfg.train, self.cfg.lora
        groups = param_groups(self.model, train.lr, lc.omega_lr_scale, train.weight_decay)
        # Weight decay is set per group (the omegas take none).
        opt = make_local_optimizer(groups, train.optimizer, train.lr, momentum=train.momentum)
        return self.world.backend.distributed_optimizer(self.model, opt)

    def _begin_task(self, task: int):
        model = self.model
        if self.cfg.lora.shared and model.num_tasks:
            for p in model.tasks[0].parameters():   # the one adapter trains on
                p.requires_grad_(True)
        else:
            with self._adapter_rng(task):
                model.begin_task(task)
        self.tracker.reset()
        _fresh_parameters(model)
        self.optimizer = self._make_optimizer()

    def learn_task(self, task, tasks_so_far, resume=None):
        lc = self.cfg.lora
        if resume is None:
            self._begin_task(task.index)
            self._note_task(task)
        self._facts = self._step_facts()
        loss_fn = task_loss(self.model, [int(c) for c in task.classes],
                            lc.ortho_weight if not lc.shared else 0.0)
        track = self.tracker.fraction > 0
        stats = fit(self.model, self.optimizer, task.x, task.y, task.global_size, self.loop, task.index,
                    self.cfg.train.epochs, resume=resume, loss_fn=loss_fn,
                    after_step=self.tracker.update if track else None)
        if "stopped_at" in stats:
            return stats
        self.model.end_task()
        frozen = self.tracker.freeze_top() if track else []
        self.frozen_per_task.append(sorted(frozen))
        self._facts.update(ipc_frozen_pairs=len(frozen), ipc_frozen_total=len(self.model.frozen_keys()),
                           ipc_frozen_keys=" ".join(sorted(frozen)), adapter_tasks=self.model.num_tasks)
        if self.world.is_root:
            self._save_adapters(task.index)
        return stats

    def _save_adapters(self, task: int) -> None:
        """``RUN_DIR/adapters/taskNNN.pt``: everything but the frozen backbone (adapters, omegas,
        head, IPC state) after ``task``; with the pretrained file it is the whole model."""
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()
                 if not k.startswith("backbone.") or k.startswith("backbone.head.")}
        path = os.path.join(self.loop.run_dir, "adapters", f"task{task:03d}.pt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save({"structure": self.model.structure(), "state": state, "seen_classes": self.seen_classes,
                    "pretrained": self.cfg.model.options.get("pretrained")}, path + ".tmp")
        os.replace(path + ".tmp", path)

    def rank_facts(self) -> dict:
        # Every rank's frozen weights, digested: the tests compare them with the pretrained file.
        return {"backbone_sha256": state_digest(self.model.backbone.state_dict())}

    def task_facts(self) -> dict:
        return dict(self._facts)

    # -- checkpoints: the adapter structure first, then the values -----------------------------------
    def shared_state(self):
        training = self.optimizer is not None and self.model.structure()["training"]
        return {"structure": self.model.structure(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict() if training else None,
                "ipc": {"sensitivity": self.tracker.sensitivity, "uncertainty": self.tracker.uncertainty,
                        "steps": self.tracker.steps},
                "seen_classes": self.seen_classes, "frozen_per_task": self.frozen_per_task}

    def restore(self, shared, local, directory):
        with self._adapter_rng(-1):  # values come from the state dict
            self.model.rebuild(shared["structure"])
        if shared["optimizer"] is not None:   # stopped mid-task: continue with its optimizer
            # Built before the values are loaded: Horovod initialises a new optimizer's state
            # with one zero-gradient step, which weight decay would turn into a real one.
            self.optimizer = self._make_optimizer()
        self.model.load_state_dict(shared["model"])
        self.seen_classes = list(shared["seen_classes"])
        self.frozen_per_task = [list(k) for k in shared["frozen_per_task"]]
        ipc = shared["ipc"]
        self.tracker.sensitivity, self.tracker.uncertainty = dict(ipc["sensitivity"]), dict(ipc["uncertainty"])
        self.tracker.steps = ipc["steps"]
        if shared["optimizer"] is not None:
            self.optimizer.load_state_dict(shared["optimizer"])
