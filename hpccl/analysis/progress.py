"""What ``hpccl status`` asks of a job kind: each kind's ``progress`` (hpccl.core.kinds) reads a
:class:`LogView` of its run log and returns a :class:`Progress`. Kept apart from
hpccl.sched.status (which reaches the schedulers) so that a kind's report imports nothing
beyond this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass
class Progress:
    """How far a run is, as its kind counts: ``text`` e.g. "task 3/5 epoch 1/2"; ``done`` and
    ``total`` in the kind's unit; ``samples_per_s`` over the last records; ``eta_s`` for what is
    left at the recent pace (None where the log does not tell)."""
    text: str
    done: float
    total: Optional[float]
    samples_per_s: Optional[float] = None
    eta_s: Optional[float] = None


class LogView:
    """What a kind's ``progress`` reads: the root attributes, the job (from ``config_yaml``),
    and the last rows of table columns, cut like ``read_h5`` cuts a torn last row (to the
    shortest column of the table)."""

    def __init__(self, f):
        self._f = f
        self.attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        self._config = None

    @property
    def config(self) -> dict:
        if self._config is None:
            import yaml
            self._config = yaml.safe_load(self.attrs.get("config_yaml") or "{}") or {}
        return self._config

    def setting(self, dotted: str, default=None):
        node = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def rows(self, table: str) -> int:
        """Complete rows of ``table`` (0 where it does not exist yet)."""
        group = self._f.get(table)
        if group is None:
            return 0
        lengths = [len(ds) for ds in group.values() if hasattr(ds, "shape") and len(ds.shape) == 1]
        return min(lengths, default=0)

    def last(self, column: str, k: int = 1) -> np.ndarray:
        """The last ``k`` complete rows of ``TABLE/COLUMN`` (fewer where there are fewer)."""
        n = self.rows(column.rsplit("/", 1)[0])
        if n == 0 or column not in self._f:
            return np.array([])
        return self._f[column][max(0, n - k):n]
