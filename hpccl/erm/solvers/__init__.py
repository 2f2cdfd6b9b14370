"""Solvers for regularized ERM and the common driver :func:`solve`."""
from __future__ import annotations

import hashlib
import time
from typing import Callable, Optional

import numpy as np

from hpccl.erm.oracle import Oracle
from hpccl.erm.problem import Problem
from hpccl.erm.solvers.base import Result, Solver, StageRecord
from hpccl.erm.solvers.dasvrda import DASVRDA
from hpccl.erm.solvers.fista import FISTA
from hpccl.erm.solvers.katyusha import Katyusha
from hpccl.erm.solvers.sgd import ProxSGD
from hpccl.erm.solvers.svrg import ProxSVRG

SOLVERS = {cls.name: cls for cls in (DASVRDA, ProxSVRG, Katyusha, ProxSGD, FISTA)}


def solve(problem: Problem, solver: str = "dasvrda", comm=None, epochs: float = 100.0,
          target_subopt: Optional[float] = None, f_star: Optional[float] = None,
          seed: int = 0, callback: Optional[Callable[[StageRecord], Optional[bool]]] = None,
          x0: Optional[np.ndarray] = None, max_time: Optional[float] = None,
          max_stages: Optional[int] = None, verify_sync: bool = False,
          oracle: Optional[Oracle] = None, **solver_options) -> Result:
    """Minimize P(x) = (1/n) sum_i phi(a_i^T x, y_i) + l1 ||x||_1 + (l2/2) ||x||^2.

    problem: this rank's shard (see :class:`Problem`); comm: mpi4py communicator or None.
    Collective: every rank of ``comm`` must call it with the same arguments (``seed``
    included); they return the same ``Result``.

    Stops at the end of the first stage where passes >= ``epochs``, or P - f_star <=
    ``target_subopt`` (needs ``f_star``), or the solver time exceeds ``max_time``
    seconds, or ``max_stages`` stages ran, or ``callback(record)`` returns True.
    ``verify_sync`` checks after every stage that all ranks hold bit-identical iterates
    (an allgather of a hash, not counted).  Options of the solver go in ``**solver_options``
    (e.g. ``batch_size``, ``step_scale``, ``importance``, ``restart``); its resolved
    parameters are in ``Result.params``.
    """
    try:
        cls = SOLVERS[solver]
    except KeyError:
        raise ValueError(f"unknown solver {solver!r}; expected one of {sorted(SOLVERS)}") from None
    if target_subopt is not None and f_star is None:
        raise ValueError("target_subopt needs f_star")
    oracle = oracle or Oracle(problem, comm)
    x0 = np.zeros(oracle.dim) if x0 is None else np.asarray(x0, dtype=np.float64)
    method: Solver = cls(oracle, x0, seed=seed, **solver_options)

    def record(stage, x, P, wall, info):
        rec = StageRecord(stage=stage, objective=float(P),
                          subopt=None if f_star is None else float(P - f_star),
                          passes=oracle.passes, wall_time=wall,
                          allreduces=oracle.allreduces,
                          allreduce_bytes=oracle.allreduce_bytes, info=info)
        history.append(rec)
        return rec

    history = []
    record(0, x0, oracle.objective(x0), 0.0, {})
    gen = method.stages()
    wall = 0.0
    stage = 0
    stop_reason = "epochs"
    x = x0
    while True:
        t0 = time.perf_counter()
        x, P, info = next(gen)
        wall += time.perf_counter() - t0
        stage += 1
        if P is None:
            P = oracle.objective(x)  # monitoring only: untimed, uncounted
        if verify_sync:
            _verify_sync(oracle, x, stage)
        rec = record(stage, x, P, wall, info)
        if callback is not None and callback(rec):
            stop_reason = "callback"
            break
        if target_subopt is not None and rec.subopt <= target_subopt:
            stop_reason = "target"
            break
        if not np.isfinite(P):
            stop_reason = "diverged"
            break
        if rec.passes >= epochs:
            stop_reason = "epochs"
            break
        if max_time is not None and wall >= max_time:
            stop_reason = "max_time"
            break
        if max_stages is not None and stage >= max_stages:
            stop_reason = "max_stages"
            break
    gen.close()
    return Result(x=np.array(x), history=history, solver=solver, params=method.params,
                  stop_reason=stop_reason)


def _verify_sync(oracle: Oracle, x: np.ndarray, stage: int) -> None:
    h = hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()
    hashes = oracle.coll.allgather(h)
    if len(set(hashes)) != 1:
        raise RuntimeError(f"iterates diverged across ranks at stage {stage}: {hashes}")


__all__ = ["solve", "SOLVERS", "Result", "StageRecord", "DASVRDA", "ProxSVRG", "Katyusha",
           "ProxSGD", "FISTA"]
