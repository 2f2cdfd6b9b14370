"""Incremental fine-tuning: train on the current task only (the lower bound; it forgets)."""

from hpccl.continual.learners.base import Learner, register
from hpccl.continual.learners.loop import fit


@register("incremental")
class IncrementalLearner(Learner):
    def learn_task(self, task, tasks_so_far, resume=None):
        if resume is None:
            self.reset_optimizer()
        return fit(self.model, self.optimizer, task.x, task.y, task.global_size, self.loop,
                   task.index, self.cfg.train.epochs, resume=resume)
