"""One timer utility for everything measured, so the HDF5 log, the progress bar and the
benchmarks agree on what a number means.

Each training iteration is split into named phases; whatever is not inside a phase is
'other'. On CUDA a phase ends with a device synchronisation, otherwise asynchronous kernels
would be charged to whichever phase happens to wait for them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import torch

PHASES = ("data_load", "rehearsal_wait", "forward_backward", "allreduce_step")


class IterationTimers:
    def __init__(self, device: torch.device | None = None, phases=PHASES):
        self.phases = tuple(phases)
        self._sync = device is not None and device.type == "cuda"
        self._current = dict.fromkeys(self.phases, 0.0)
        self._start = None
        self.columns = {name: [] for name in self.phases + ("other", "total", "task", "epoch")}

    def start_iteration(self):
        self._current = dict.fromkeys(self.phases, 0.0)
        self._start = time.perf_counter()

    @contextmanager
    def phase(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self._sync:
                torch.cuda.synchronize()  # a CPU-GPU sync point, on purpose: see module doc
            self._current[name] += time.perf_counter() - t0

    def end_iteration(self, task: int, epoch: int):
        total = time.perf_counter() - self._start
        for name in self.phases:
            self.columns[name].append(self._current[name])
        self.columns["other"].append(max(0.0, total - sum(self._current.values())))
        self.columns["total"].append(total)
        self.columns["task"].append(task)
        self.columns["epoch"].append(epoch)

    def preload(self, arrays: dict) -> None:
        """Continue the columns of an earlier process (resume)."""
        for name in self.columns:
            if name in arrays:
                self.columns[name] = list(arrays[name])

    def arrays(self, since: int = 0) -> dict[str, np.ndarray]:
        """The columns from iteration ``since`` on (a log appends only what is new)."""
        return {k: np.asarray(v[since:], dtype=np.int32 if k in ("task", "epoch") else np.float64)
                for k, v in self.columns.items()}

    def totals(self, since: int = 0) -> dict[str, float]:
        return {k: float(sum(v[since:])) for k, v in self.columns.items() if k not in ("task", "epoch")}

    def __len__(self):
        return len(self.columns["total"])


class Stopwatch:
    """Wall time of a block: ``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self):
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0


def flush_timers(rank_log, timers) -> None:
    """Append the iterations timed since the last flush to the rank log, and flush it."""
    done = rank_log.lengths().get("timers/total", 0)
    if len(timers) > done:
        rank_log.extend("timers", **timers.arrays(since=done))
    rank_log.flush()
