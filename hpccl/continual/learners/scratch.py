"""From scratch: re-initialise and train on all tasks seen so far (the upper bound, and the
most expensive: its training set grows with every task)."""

import torch

from hpccl.continual.learners.base import Learner, register
from hpccl.continual.learners.loop import fit


@register("scratch")
class ScratchLearner(Learner):
    needs_past_tasks = True

    def learn_task(self, task, tasks_so_far, resume=None):
        if resume is None:  # a resumed task continues the restored model
            self.reset_model()
        x = torch.cat([t.x for t in tasks_so_far])
        y = torch.cat([t.y for t in tasks_so_far])
        global_size = sum(t.global_size for t in tasks_so_far)
        return fit(self.model, self.optimizer, x, y, global_size, self.loop, task.index,
                   self.cfg.train.epochs, resume=resume)
