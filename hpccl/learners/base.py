"""What a learner is: given the tasks as they arrive, decide what to train on and how.

A learner owns its model and optimizer. The runner calls ``learn_task`` for each task and
``predict`` to evaluate. New learners (rehearsal, ensembles, growing models, adapters)
register a name in ``LEARNERS`` and reuse ``loop.fit`` for the training step.
"""

from __future__ import annotations

import torch

from hpccl.learners.loop import make_optimizer
from hpccl.models import build_model
from hpccl.seeding import derive_seed

LEARNERS: dict[str, type] = {}


def register(name: str):
    def deco(cls):
        LEARNERS[name] = cls
        cls.kind = name
        return cls
    return deco


class Learner:
    kind = "?"

    def __init__(self, cfg, world, input_shape, num_classes, loop_ctx):
        self.cfg, self.world, self.loop = cfg, world, loop_ctx
        self.input_shape, self.num_classes = tuple(input_shape), num_classes
        self.model = None
        self.optimizer = None

    def reset_model(self, purpose="init"):
        """A freshly initialised model and its distributed optimizer.

        The optimizer is made once per model: Horovod hooks every parameter when it wraps an
        optimizer, and a second wrapper on the same parameters would count each gradient
        twice. Between tasks, ``reset_optimizer`` clears its state instead.
        """
        # Same seed on every rank, and rank 0's parameters are broadcast anyway.
        torch.manual_seed(derive_seed(self.cfg.seed, "model", purpose))
        model = build_model(self.cfg.model.kind, self.input_shape, self.num_classes, **self.cfg.model.options)
        self.model = model.to(self.world.device)
        self.optimizer = make_optimizer(self.model, self.cfg.train, self.world)

    def reset_optimizer(self):
        """Start a task with fresh optimizer state (no momentum carried over)."""
        self.optimizer.state.clear()

    def learn_task(self, task, tasks_so_far) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x)

    def close(self):
        """Release resources (threads, MPI windows); called also when a run fails."""


def make_learner(cfg, world, input_shape, num_classes, loop_ctx) -> Learner:
    # Import the learner modules so that they register themselves.
    from hpccl.learners import incremental, scratch  # noqa: F401
    try:
        from hpccl.learners import rehearsal  # noqa: F401
    except ImportError:
        pass
    return LEARNERS[cfg.learner.kind](cfg, world, input_shape, num_classes, loop_ctx)
