"""The ALMA arrival loop: for each arrival, update if scheduled, then score the model.

``run`` is what a ``scenario: megabatch`` job (:mod:`hpccl.alma.job`) calls once per rank. It
needs only callables, so it stays free of MPI and of the file format:

    read_rows(global_indices) -> (x, y)   this rank's rows of the training set
    x_test, y_test                       this rank's shard of the test set
    allreduce_sum(list_of_floats)        sums over all ranks (None: one process)
    allreduce_max(float)                 the maximum over all ranks (for wall times)

``rank``/``size`` say how the update's rows are sharded: over the ranks of this rank's group
(the whole world unless an ensemble is spread over rank groups). With ``replicas`` groups,
every group holds the whole test set, so the summed counts are divided by ``replicas``.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

from hpccl.alma.learners import AlmaLearner
from hpccl.alma.metrics import AnytimeMetrics, error_count
from hpccl.alma.stream import Schedule, shard


def run(schedule: Schedule, learner: AlmaLearner, read_rows: Callable, x_test, y_test, val_share: float = 0.1,
        rank: int = 0, size: int = 1, allreduce_sum: Optional[Callable[[list], list]] = None,
        on_arrival: Callable[[dict], None] = lambda record: None, replicas: int = 1,
        allreduce_max: Optional[Callable[[float], float]] = None) -> AnytimeMetrics:
    metrics = AnytimeMetrics()
    reduce = allreduce_sum or (lambda values: values)
    train_time = 0.0
    for arrival in schedule:
        upd = arrival.update
        info, sizes, update_time = None, (0, 0), 0.0
        if upd is not None:
            t0 = time.perf_counter()
            train_idx, val_idx = upd.split(val_share, schedule.seed)
            x_tr, y_tr = read_rows(shard(train_idx, rank, size))
            x_val, y_val = read_rows(shard(val_idx, rank, size))
            info = learner.update(x_tr, y_tr, x_val, y_val, upd.index)
            update_time = time.perf_counter() - t0
            sizes = (len(train_idx), len(val_idx))
        wrong, total = error_count(learner.predict, x_test, y_test)
        wrong, total, flops = reduce([float(wrong), float(total), learner.flops.total])
        # The slowest rank's update time is the job's (the others wait for it).
        max_time = allreduce_max(update_time) if allreduce_max is not None else update_time
        train_time += max_time
        metrics.record(int(round(wrong / replicas)), int(round(total / replicas)), updated=upd is not None,
                       parameters=learner.num_parameters(), flops=flops)
        on_arrival({"arrival": arrival.t, "updated": upd is not None, "error": metrics.errors[-1],
                    "cer": metrics.cer,
                    "update": info, "update_index": None if upd is None else upd.index,
                    "new_megabatches": [] if upd is None else upd.new,
                    "replay_samples": 0 if upd is None else len(upd.replay_indices),
                    "train_samples": sizes[0], "val_samples": sizes[1], "update_time_s": max_time,
                    "train_time_s": train_time, "train_flops": flops, "parameters": metrics.parameters[-1]})
    return metrics

