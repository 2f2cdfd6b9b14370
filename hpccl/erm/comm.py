"""A thin, counting wrapper around the few MPI collectives the ERM solvers use.

``comm`` is an mpi4py communicator (hpccl's World exposes it as ``world.comm``) or None
for a single process.  With one process nothing is sent, but calls are still *counted*:
the counters describe the algorithm's communication (allreduces and payload bytes per
rank), so they are the same whatever the number of ranks and can be checked in a
single-process test.

Only the solver's own allreduces go through :meth:`Collective.allreduce_sum`; set-up
(shard sizes, smoothness constants) and monitoring use the ``*_untracked`` variants so
that the per-stage records report exactly what the method itself needs.
"""
from __future__ import annotations

import numpy as np


class Collective:
    def __init__(self, comm=None):
        self.comm = comm
        self.size = 1 if comm is None else comm.Get_size()
        self.rank = 0 if comm is None else comm.Get_rank()
        self.allreduces = 0
        self.bytes = 0  # payload per rank (what one rank contributes), not wire traffic
        self._mpi = None
        if self.size > 1:
            from mpi4py import MPI  # imported lazily: single-process use needs no MPI

            self._mpi = MPI

    # -- tracked: the algorithm's communication -------------------------------------
    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        """Sum of ``buf`` over ranks (float64, contiguous), counted as one allreduce.

        MPI_Allreduce delivers the same reduced buffer to every rank (OpenMPI's
        algorithms reduce each element in one order and then distribute it), which is
        what keeps the iterates of all ranks bit-identical; the tests assert it.
        """
        self.allreduces += 1
        self.bytes += buf.nbytes
        if self.size == 1:
            return buf
        out = np.empty_like(buf)
        self.comm.Allreduce(np.ascontiguousarray(buf), out, op=self._mpi.SUM)
        return out

    # -- untracked: set-up and monitoring --------------------------------------------
    def sum_untracked(self, buf: np.ndarray) -> np.ndarray:
        if self.size == 1:
            return buf
        out = np.empty_like(buf)
        self.comm.Allreduce(np.ascontiguousarray(buf), out, op=self._mpi.SUM)
        return out

    def max_untracked(self, value: float) -> float:
        if self.size == 1:
            return float(value)
        return float(self.comm.allreduce(float(value), op=self._mpi.MAX))

    def min_untracked(self, value: float) -> float:
        if self.size == 1:
            return float(value)
        return float(self.comm.allreduce(float(value), op=self._mpi.MIN))

    def allgather_untracked(self, obj) -> list:
        if self.size == 1:
            return [obj]
        return self.comm.allgather(obj)

    def bcast_untracked(self, obj, root: int = 0):
        if self.size == 1:
            return obj
        return self.comm.bcast(obj, root=root)
