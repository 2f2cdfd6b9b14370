"""What a learner is: given the tasks as they arrive, decide what to train on and how.

A learner owns its model and optimizer. The runner calls ``learn_task`` for each task and
``predict`` to evaluate. New learners (rehearsal, ensembles, growing models, adapters)
register a name in ``LEARNERS`` and reuse ``loop.fit`` for the training step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hpccl.continual.learners.loop import make_optimizer
from hpccl.models import build_model, place_model
from hpccl.core.seeding import derive_seed

LEARNERS: dict[str, type] = {}


@dataclass(frozen=True)
class DataSpec:
    """What a learner may know of the data before it arrives."""
    input_shape: tuple
    num_classes: int
    num_train: int
    dtype: str = "float32"          # of the samples as stored (uint8 images stay uint8)
    sample_shape: tuple | None = None   # as stored, when the model sees another (a crop)

    @property
    def stored_shape(self) -> tuple:
        return tuple(self.sample_shape or self.input_shape)


def register(name: str):
    def deco(cls):
        LEARNERS[name] = cls
        cls.kind = name
        return cls
    return deco


class Learner:
    kind = "?"
    # Whether learn_task reads the past tasks' training data (``tasks_so_far``). If not, the
    # runner keeps only the current task resident: a rehearsal learner's past lives in its
    # buffer, and an ImageNet run holding every task's shard would need ~96 GB a rank.
    needs_past_tasks = False
    holds_buffer = False      # a rehearsal buffer shard (host memory estimates count it)

    def __init__(self, cfg, world, data: DataSpec, loop_ctx):
        self.cfg, self.world, self.loop = cfg, world, loop_ctx
        self.data = data
        self.input_shape, self.num_classes = tuple(data.input_shape), data.num_classes
        # Built here, before any task is timed: the first optimizer of a process pays for
        # torch's lazy imports (over a second), which is not training time.
        self.reset_model()

    def reset_model(self, purpose="init"):
        """A freshly initialised model and its distributed optimizer.

        The optimizer is made once per model: Horovod hooks every parameter when it wraps an
        optimizer, and a second wrapper on the same parameters would count each gradient
        twice. Between tasks, ``reset_optimizer`` clears its state instead.
        """
        # Same seed on every rank, and rank 0's parameters are broadcast anyway.
        torch.manual_seed(derive_seed(self.cfg.seed, "model", purpose))
        model = build_model(self.cfg.model.kind, self.input_shape, self.num_classes, **self.cfg.model.options)
        self.model = place_model(model, self.world.device)
        self.optimizer = make_optimizer(self.model, self.cfg.train, self.world)

    def reset_optimizer(self):
        """Start a task with fresh optimizer state (no momentum carried over)."""
        self.optimizer.state.clear()

    def learn_task(self, task, tasks_so_far, resume=None) -> dict:
        """Train on a task. ``resume``: the ``stopped_at`` of an interrupted ``fit`` of this
        task (the learner's state was restored with ``restore`` first)."""
        raise NotImplementedError

    # -- checkpoints -------------------------------------------------------------------------------
    def shared_state(self) -> dict:
        """State identical on every rank (written once, by rank 0)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def local_state(self) -> dict:
        """This rank's own state."""
        return {}

    def checkpoint_files(self) -> dict:
        """Extra per-rank checkpoint files (e.g. buffer shards): {file name: write(path)},
        each writing a copy taken now (the checkpoint writer thread calls it later)."""
        return {}

    def restore(self, shared: dict, local: dict, directory: str) -> dict | None:
        """Continue from a checkpoint. When it was written by another number of ranks,
        ``local`` is ``{"rescaled_from": N, "old_rank0": old rank 0's local state}`` and a
        learner with per-rank state redistributes it; it returns facts for the log (what
        was kept and dropped), or None."""
        self.model.load_state_dict(shared["model"])
        self.optimizer.load_state_dict(shared["optimizer"])
        return None

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x)

    def rank_facts(self) -> dict:
        """Numbers about this rank's state to log after each task (e.g. buffer footprint)."""
        return {}

    def task_facts(self) -> dict:
        """Numbers about the task just learnt, the same on every rank, for the run log (e.g.
        gradient bytes allreduced per step); the same keys after every task."""
        return {}

    def close(self, ok: bool = True):
        """Release resources (threads, MPI windows). ``ok`` is False when the run failed:
        then nothing collective may be called, since MPI_Abort follows."""
