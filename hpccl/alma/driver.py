"""The ALMA arrival loop: for each arrival, update if scheduled, then score the model.

``run`` is what a ``scenario: megabatch`` wrapper calls once per rank. It needs only
callables, so it stays free of MPI and of the file format:

    read_rows(global_indices) -> (x, y)   this rank's rows of the training set
    x_test, y_test                       this rank's shard of the test set
    allreduce_sum(list_of_floats)        sums over ranks (None: one process)
"""

from __future__ import annotations

from typing import Callable, Optional

from hpccl.alma.learners import AlmaLearner
from hpccl.alma.metrics import AnytimeMetrics, error_count
from hpccl.alma.stream import Schedule, shard


def run(schedule: Schedule, learner: AlmaLearner, read_rows: Callable, x_test, y_test, val_share: float = 0.1,
        rank: int = 0, size: int = 1, allreduce_sum: Optional[Callable[[list], list]] = None,
        on_arrival: Callable[[dict], None] = lambda record: None) -> AnytimeMetrics:
    metrics = AnytimeMetrics()
    reduce = allreduce_sum or (lambda values: values)
    for arrival in schedule:
        upd = arrival.update
        info = None
        if upd is not None:
            train_idx, val_idx = upd.split(val_share, schedule.seed)
            x_tr, y_tr = read_rows(shard(train_idx, rank, size))
            x_val, y_val = read_rows(shard(val_idx, rank, size))
            info = learner.update(x_tr, y_tr, x_val, y_val, upd.index)
        wrong, total = error_count(learner.predict, x_test, y_test)
        wrong, total, flops = reduce([float(wrong), float(total), learner.flops.total])
        metrics.record(int(wrong), int(total), updated=upd is not None, parameters=learner.num_parameters(),
                       flops=flops)
        on_arrival({"arrival": arrival.t, "updated": upd is not None, "error": metrics.errors[-1],
                    "update": info, "train_flops": flops, "parameters": metrics.parameters[-1]})
    return metrics
