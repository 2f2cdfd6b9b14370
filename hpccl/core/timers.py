"""One timer utility for everything measured, so the HDF5 log, the progress bar and the
benchmarks agree on what a number means.

Each training iteration is split into named phases; whatever is not inside a phase is
'other'. On CUDA, kernels run asynchronously, so host clocks would charge them to whichever
phase happens to wait. By default the phases are timed with CUDA events recorded on the
stream, read once an epoch (when the loop synchronises anyway for its metrics): no
synchronisation in the step. ``sync=True`` (``runtime.profile_sync``) synchronises at the
end of every phase instead: exact host-side attribution, at the cost of the overlap.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

# torch is imported where a CUDA timer needs it: hpccl analyze reads PHASES without torch.
PHASES = ("data_load", "rehearsal_wait", "forward_backward", "allreduce_step")


class IterationTimers:
    def __init__(self, device: torch.device | None = None, phases=PHASES, sync: bool = False):
        self.phases = tuple(phases)
        cuda = device is not None and device.type == "cuda"
        self._sync = cuda and sync
        self._events = cuda and not sync
        self._current = dict.fromkeys(self.phases, 0.0)
        self._start = None
        self._pending = []       # (iteration start event, end event, [(phase, start, end)]) not read yet
        self.columns = {name: [] for name in self.phases + ("other", "total", "task", "epoch")}

    def _event(self):
        import torch
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start_iteration(self):
        self._current = dict.fromkeys(self.phases, 0.0)
        self._marks = []
        self._start = self._event() if self._events else time.perf_counter()

    @contextmanager
    def phase(self, name: str):
        t0 = self._event() if self._events else time.perf_counter()
        try:
            yield
        finally:
            if self._events:
                self._marks.append((name, t0, self._event()))
            else:
                if self._sync:
                    import torch
                    torch.cuda.synchronize()  # a CPU-GPU sync point, on purpose: see module doc
                self._current[name] += time.perf_counter() - t0

    def end_iteration(self, task: int, epoch: int):
        self.columns["task"].append(task)
        self.columns["epoch"].append(epoch)
        if self._events:
            self._pending.append((self._start, self._event(), self._marks))
            return
        self._append(time.perf_counter() - self._start, self._current)

    def _append(self, total: float, phases: dict) -> None:
        for name in self.phases:
            self.columns[name].append(phases[name])
        self.columns["other"].append(max(0.0, total - sum(phases.values())))
        self.columns["total"].append(total)

    def _resolve(self) -> None:
        """Read the recorded events (one synchronisation for all iterations since the last)."""
        if not self._pending:
            return
        self._pending[-1][1].synchronize()
        for start, end, marks in self._pending:
            phases = dict.fromkeys(self.phases, 0.0)
            for name, t0, t1 in marks:
                phases[name] += t0.elapsed_time(t1) / 1e3
            self._append(start.elapsed_time(end) / 1e3, phases)
        self._pending = []

    def preload(self, arrays: dict) -> None:
        """Continue the columns of an earlier process (resume)."""
        for name in self.columns:
            if name in arrays:
                self.columns[name] = list(arrays[name])

    def arrays(self, since: int = 0) -> dict[str, np.ndarray]:
        """The columns from iteration ``since`` on (a log appends only what is new)."""
        self._resolve()
        return {k: np.asarray(v[since:], dtype=np.int32 if k in ("task", "epoch") else np.float64)
                for k, v in self.columns.items()}

    def totals(self, since: int = 0) -> dict[str, float]:
        self._resolve()
        return {k: float(sum(v[since:])) for k, v in self.columns.items() if k not in ("task", "epoch")}

    def __len__(self):
        return len(self.columns["task"])      # also the iterations whose events are not read yet


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
