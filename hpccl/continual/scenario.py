"""Class-incremental scenario: the classes are split into T tasks that arrive one after the
other; each task's training data is split into disjoint per-rank shards.

Every rank computes the same class order and the same per-task shuffles from the job seed,
then reads only its own rows of the file. Evaluation after task t uses the test data of
every class seen so far, also sharded over ranks (counts are summed across ranks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hpccl.data.checks import scenario_classes
from hpccl.core.seeding import numpy_rng


@dataclass
class Task:
    index: int
    classes: np.ndarray
    x: torch.Tensor          # this rank's shard of the task's training data
    y: torch.Tensor
    global_size: int         # training samples of this task over all ranks


def split_classes(scenario_cfg, info, seed: int, source: str = "job") -> list[np.ndarray]:
    """The classes of each task, as every rank computes them from the job seed."""
    # scenario.classes: a subset (e.g. the classes a backbone was not pre-trained on).
    pool = scenario_classes(scenario_cfg, info, source)
    order = pool if scenario_cfg.class_order == "natural" else numpy_rng(seed, "class_order").permutation(pool)
    return [np.sort(c) for c in np.array_split(order, scenario_cfg.num_tasks)]


class ClassIncremental:
    def __init__(self, dataset, scenario_cfg, seed: int, rank: int, size: int, source: str = "job"):
        self.dataset, self.seed, self.rank, self.size = dataset, seed, rank, size
        info = dataset.info
        self.num_classes = info.num_classes
        self.sample_shape = info.sample_shape
        self.dtype = info.dtype          # the samples keep it (data/pipeline.py converts on the device)
        num_tasks = scenario_cfg.num_tasks
        self.task_classes = split_classes(scenario_cfg, info, seed, source)
        self.num_tasks = num_tasks
        self.class_to_task = np.empty(info.num_classes, dtype=np.int64)
        for t, classes in enumerate(self.task_classes):
            self.class_to_task[classes] = t
        self._train_y = dataset.labels("train")
        self._test_y = dataset.labels("test")
        self._test_cache: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _shard(self, indices: np.ndarray, purpose) -> np.ndarray:
        # The same permutation on every rank, then every size-th element: disjoint shards
        # whose sizes differ by at most one.
        perm = numpy_rng(self.seed, *purpose).permutation(indices)
        return perm[self.rank::self.size]

    def task(self, t: int) -> Task:
        """Task t with this rank's shard of its training data, read from the file."""
        indices = np.flatnonzero(np.isin(self._train_y, self.task_classes[t]))
        mine = self._shard(indices, ("train_shard", t))
        x, y = self.dataset.read("train", mine, native=True)
        return Task(index=t, classes=self.task_classes[t], x=torch.from_numpy(x),
                    y=torch.from_numpy(y), global_size=len(indices))

    def test_upto(self, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """This rank's shard of the test data of tasks 0..t: (x, y, task id of each sample)."""
        while len(self._test_cache) <= t:
            k = len(self._test_cache)
            indices = np.flatnonzero(np.isin(self._test_y, self.task_classes[k]))
            x, y = self.dataset.read("test", self._shard(indices, ("test_shard", k)), native=True)
            self._test_cache.append((torch.from_numpy(x), torch.from_numpy(y)))
        xs, ys = zip(*self._test_cache[:t + 1])
        y = torch.cat(ys)
        return torch.cat(xs), y, torch.from_numpy(self.class_to_task[y.numpy()])
