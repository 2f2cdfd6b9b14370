"""Sequential full fine-tuning of a pre-trained ViT (the LoRAC-IPC paper's lower baseline):
every weight trains on each task in turn, with the same loss and prediction as ``lorac`` --
cross-entropy over the current task's classes, argmax over all classes seen so far (no task
id) -- so the two differ only in what is trained and allreduced."""

from __future__ import annotations

import torch

from hpccl.continual.learners.base import Learner, register
from hpccl.continual.learners.loop import fit
from hpccl.continual.learners.masking import mask_logits, masked_cross_entropy


@register("finetune")
class FinetuneLearner(Learner):
    def __init__(self, cfg, world, data, loop_ctx):
        self.seen_classes: list[int] = []   # every class trained on so far (prediction mask)
        self._facts: dict = {}
        super().__init__(cfg, world, data, loop_ctx)

    def _note_task(self, task):
        self.seen_classes = sorted(set(self.seen_classes) | {int(c) for c in task.classes})

    def _step_facts(self) -> dict:
        """What one step of this task allreduces, from the backend's own list of hooked
        parameters, next to what fine-tuning every weight of the model would."""
        params = self.world.backend.allreduced_parameters(self.optimizer)
        full = self._full_model().parameters()
        return {"allreduce_bytes_per_step": self.world.backend.step_bytes(self.optimizer),
                "allreduce_tensors": len(params),
                "trainable_params": sum(p.numel() for p in params),
                "full_finetune_bytes_per_step": sum(p.numel() * p.element_size() for p in full)}

    def _full_model(self):
        return self.model

    def learn_task(self, task, tasks_so_far, resume=None):
        if resume is None:
            self.reset_optimizer()
            self._note_task(task)
        self._facts = self._step_facts()
        classes = [int(c) for c in task.classes]
        return fit(self.model, self.optimizer, task.x, task.y, task.global_size, self.loop, task.index,
                   self.cfg.train.epochs, resume=resume,
                   loss_fn=lambda logits, y: masked_cross_entropy(logits, y, classes))

    @torch.no_grad()
    def predict(self, x):
        self.model.eval()
        return mask_logits(self.model(x), self.seen_classes)

    def task_facts(self) -> dict:
        return dict(self._facts)

    def shared_state(self):
        return {**super().shared_state(), "seen_classes": self.seen_classes}

    def restore(self, shared, local, directory):
        super().restore(shared, local, directory)
        self.seen_classes = list(shared["seen_classes"])
