"""Evaluation after a task: top-1 and top-5 accuracy on each task seen so far.

Every rank scores its shard of the test data; per-task counts are summed over ranks in one
allreduce, so the result is exact (not an average of per-rank accuracies).
"""

from __future__ import annotations

import numpy as np
import torch

from hpccl.continual.metrics import topk_correct
from hpccl.data.pipeline import InputPipeline


def evaluate(predict, x, y, task_ids, num_tasks: int, world, batch_size: int,
             inputs=None) -> tuple[np.ndarray, np.ndarray]:
    """``inputs``: stored samples -> the model's input (default: InputPipeline on the device)."""
    inputs = inputs or InputPipeline(world.device)
    counts = np.zeros((3, num_tasks))  # top-1 hits, top-5 hits, samples; per task
    for start in range(0, len(x), batch_size):
        xb = inputs(x[start:start + batch_size])
        yb = y[start:start + batch_size].to(world.device)
        hits = topk_correct(predict(xb), yb)
        tb = task_ids[start:start + batch_size]
        for row, k in ((0, 1), (1, 5)):
            counts[row] += torch.bincount(tb, weights=hits[k].float().cpu(), minlength=num_tasks).numpy()[:num_tasks]
        counts[2] += torch.bincount(tb, minlength=num_tasks).numpy()[:num_tasks]
    total = world.allreduce_sum(counts.ravel(), what="the evaluation allreduce").reshape(counts.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total[0] / total[2], total[1] / total[2]
