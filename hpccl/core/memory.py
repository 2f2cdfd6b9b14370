"""Host memory a rank holds, measured while it runs, and the memory of a node.

Two figures per rank, kept as the run goes (a daemon thread samples every ``interval`` s)
and written to the rank log at the close:

- ``peak_rss_bytes``: the kernel's own high-water mark of resident memory (``ru_maxrss``). It
  counts every shared page a rank has touched in full, so ranks that read each other's
  rehearsal shards through a node's shared-memory window each count those pages;
- ``peak_pss_bytes``: the highest proportional set size sampled (``/proc/self/smaps_rollup``,
  Linux): a shared page counts 1/k in each of the k processes that map it, so the ranks of a
  node sum to what the node holds. Sampled every 0.25 s (longer for a large process: reading
  smaps walks its page tables, and the watch keeps that under 5 % of one core) and where a
  runner knows a peak (``sample()``: a continual job after gathering the test data and after
  a checkpoint's copy), so a shorter peak elsewhere can be missed.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time


def peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024     # Linux reports KiB


def pss_bytes() -> int | None:
    """This process's proportional set size now, or None where the kernel does not say."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def node_memory_bytes() -> int | None:
    """Physical memory of the machine this runs on."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class MemoryWatch:
    """Samples this process's PSS in the background; ``peaks()`` for the log."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self._cost = 0.0
        self.peak_pss = pss_bytes()
        self._stop = threading.Event()
        self._thread = None
        if self.peak_pss is not None:
            self._thread = threading.Thread(target=self._watch, name="hpccl-memory", daemon=True)
            self._thread.start()

    def _watch(self):
        while not self._stop.wait(max(self.interval, 20 * self._cost)):
            self.sample()

    def sample(self):
        start = time.perf_counter()
        now = pss_bytes()
        self._cost = time.perf_counter() - start
        if now is not None and (self.peak_pss is None or now > self.peak_pss):
            self.peak_pss = now

    def peaks(self) -> dict:
        self.sample()
        out = {"peak_rss_bytes": peak_rss_bytes()}
        if self.peak_pss is not None:
            out["peak_pss_bytes"] = self.peak_pss
        return out

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


GB = 1e9


class HostMemoryEstimate:
    """What one rank of a job will hold in host memory, in named parts (bytes), before it runs."""

    def __init__(self, parts: dict, notes: tuple = ()):
        self.parts = {name: float(b) for name, b in parts.items() if b}
        self.notes = tuple(notes)

    @property
    def per_rank(self) -> float:
        return sum(self.parts.values())

    def per_node(self, ranks_per_node: int) -> float:
        return self.per_rank * ranks_per_node

    def describe(self) -> str:
        return ", ".join(f"{name} {_size(b)}" for name, b in self.parts.items())


def _size(b: float) -> str:
    if b >= 0.1 * GB:
        return f"{b / GB:.2f} GB"
    return f"{b / 1e6:.1f} MB" if b >= 1e5 else f"{b / 1e3:.0f} kB"
