"""Rehearsal: incremental training where every mini-batch of b new samples also carries r
representatives of past data drawn uniformly from the distributed buffer (all ranks'
shards), and offers c of its samples to the local shard. Loss is on the b + r samples."""

import os

from hpccl.continual.learners.base import register
from hpccl.continual.learners.incremental import IncrementalLearner
from hpccl.continual.learners.loop import fit
from hpccl.continual.rehearsal.buffer import RehearsalBuffer
from hpccl.continual.rehearsal.shard import write_snapshot
from hpccl.core.checkpoint import rank_file


@register("rehearsal")
class RehearsalLearner(IncrementalLearner):
    holds_buffer = True

    def __init__(self, cfg, world, data, loop_ctx):
        super().__init__(cfg, world, data, loop_ctx)
        self.buffer = RehearsalBuffer(world, cfg.rehearsal, data.num_classes, data.stored_shape,
                                      data.num_train, cfg.seed, dtype=data.dtype)

    def learn_task(self, task, tasks_so_far, resume=None):
        if resume is None:
            self.reset_optimizer()
            self.buffer.begin_task(task.index)
        stats = fit(self.model, self.optimizer, task.x, task.y, task.global_size, self.loop,
                    task.index, self.cfg.train.epochs, rehearsal=self.buffer, resume=resume)
        if "stopped_at" not in stats:
            path = os.path.join(self.loop.run_dir, "buffer", f"rank{self.world.rank:05d}.h5")
            self.buffer.end_task(path, task=task.index)
        return stats

    def local_state(self):
        return {"buffer": self.buffer.state()}

    def checkpoint_files(self):
        snap = self.buffer.shard.snapshot()
        return {rank_file("", self.world.rank, "buffer_rank", "h5"): lambda path: write_snapshot(path, snap)}

    def restore(self, shared, local, directory):
        super().restore(shared, local, directory)
        if "rescaled_from" in local:
            files = [rank_file(directory, r, "buffer_rank", "h5") for r in range(local["rescaled_from"])]
            return self.buffer.redistribute(files, local["old_rank0"]["buffer"]["active"], self.cfg.seed)
        self.buffer.shard.load(rank_file(directory, self.world.rank, "buffer_rank", "h5"))
        self.buffer.load_state(local["buffer"])
        return None

    def rank_facts(self):
        return self.buffer.footprint()

    def close(self, ok=True):
        self.buffer.close(ok)
