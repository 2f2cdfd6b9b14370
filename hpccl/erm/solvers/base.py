"""Common solver machinery: per-stage records, the result, and the stopping rules.

A solver is a class whose constructor resolves its options (the defaults depend on n,
the smoothness constants, ...) into ``self.params`` and whose :meth:`Solver.stages`
generator runs the method, yielding ``(x, objective, info)`` once per *stage* (an outer
iteration: a DASVRDA/SVRG/Katyusha epoch, one SGD epoch, one FISTA iteration).  The
objective is the one computed as part of the method when that is free (SVRG-type
methods get P(x~) with the snapshot gradient), or None, in which case the driver
evaluates it outside the timed region and outside the pass count.

The driver (:func:`hpccl.erm.solvers.solve`) turns those into :class:`StageRecord`s,
calls the callback and stops.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from hpccl.erm.oracle import Oracle


@dataclass
class StageRecord:
    stage: int  # 0 = the starting point
    objective: float  # P(x) at the end of the stage
    subopt: Optional[float]  # P(x) - f_star, when f_star is given
    passes: float  # per-sample gradient evaluations / n, global, cumulative
    wall_time: float  # seconds in the solver (monitoring and callbacks excluded)
    allreduces: int  # cumulative allreduces of the method
    allreduce_bytes: int  # cumulative payload bytes per rank
    info: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class Result:
    x: np.ndarray
    history: List[StageRecord]
    solver: str
    params: Dict[str, Any]
    stop_reason: str

    @property
    def objective(self) -> float:
        return self.history[-1].objective

    @property
    def subopt(self) -> Optional[float]:
        return self.history[-1].subopt

    @property
    def passes(self) -> float:
        return self.history[-1].passes

    @property
    def wall_time(self) -> float:
        return self.history[-1].wall_time

    def history_arrays(self) -> Dict[str, np.ndarray]:
        """Columns of the history as arrays (what an HDF5 log wants)."""
        cols = ("stage", "objective", "subopt", "passes", "wall_time", "allreduces",
                "allreduce_bytes")
        out = {}
        for c in cols:
            vals = [getattr(r, c) for r in self.history]
            out[c] = np.array([np.nan if v is None else v for v in vals], dtype=float)
        return out

    def first_reaching(self, subopt: float) -> Optional[StageRecord]:
        """The first record with suboptimality <= subopt (None if never)."""
        for r in self.history:
            if r.subopt is not None and r.subopt <= subopt:
                return r
        return None


class Solver:
    name = "solver"

    def __init__(self, oracle: Oracle, x0: np.ndarray, seed: int = 0):
        self.oracle = oracle
        self.x0 = np.array(x0, dtype=np.float64)
        self.seed = int(seed)
        self.params: Dict[str, Any] = {}

    def stages(self) -> Iterator[Tuple[np.ndarray, Optional[float], Dict[str, Any]]]:
        raise NotImplementedError


class MinibatchSolver(Solver):
    """A stochastic method whose stages are ``m`` steps on mini-batches of ``b`` samples
    (options ``batch_size``, default 1, and ``m``, default ``stage_passes`` passes over the
    data), drawn uniformly or, with option ``importance``, in proportion to the L_i.

    ``L`` is the smoothness constant the mini-batch gradients obey under that sampling: the
    mean L_i with importance sampling, the largest L_i without; step sizes derive from it."""
    OPTIONS: Tuple[str, ...] = ()

    def __init__(self, oracle: Oracle, x0: np.ndarray, seed: int, options: Dict[str, Any],
                 stage_passes: int):
        super().__init__(oracle, x0, seed)
        check_options(self.name, options, self.OPTIONS)
        self.importance = bool(options.get("importance", False))
        self.L = oracle.L_mean if self.importance else oracle.L_max
        self.b = int(options.get("batch_size") or 1)
        self.m = int(options.get("m") or max(1, math.ceil(stage_passes * oracle.n / self.b)))


def default_batch_size(n: int) -> int:
    """b = floor(sqrt(n)), the DASVRDA paper's mini-batch size."""
    return max(1, int(np.floor(np.sqrt(n))))


def step_size(options: Dict[str, Any], default: float) -> float:
    """Option ``eta`` (else ``default``) times option ``step_scale`` (default 1)."""
    eta = options.get("eta")
    return (default if eta is None else float(eta)) * float(options.get("step_scale", 1.0))


def check_options(name: str, options: Dict[str, Any], allowed) -> None:
    unknown = set(options) - set(allowed)
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {sorted(unknown)}; "
                        f"accepted: {sorted(allowed)}")
