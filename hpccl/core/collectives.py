"""The collectives every job kind uses, on one MPI communicator: sums of small numpy buffers
(metrics, counts, ERM gradients), means and sums of lists of tensors packed into one call
(ALMA's and the online RNN's gradients, a backend's allreduce), max and min, allgather and
broadcast.

One class for all kinds, so a collective behaves the same everywhere (same reduction, same
dtype rules, same single-process shortcut) and can be counted where a kind reports its
communication (``counted=True``: ERM's solvers count the allreduces and bytes of the method
itself, apart from set-up and monitoring).

With ``comm=None`` (one process, no MPI) every call returns its input: tests and the
single-rank paths of the solvers run without mpi4py.
"""

from __future__ import annotations

import numpy as np

from hpccl.core.mpi import mpi


class Collectives:
    def __init__(self, comm=None):
        self.comm = comm
        self.size = 1 if comm is None else comm.Get_size()
        self.rank = 0 if comm is None else comm.Get_rank()
        self.allreduces = 0     # counted calls only
        self.bytes = 0          # their payload per rank (what one rank contributes), not wire traffic

    def _count(self, nbytes: int) -> None:
        self.allreduces += 1
        self.bytes += nbytes

    # -- numpy buffers ------------------------------------------------------------------------
    def sum(self, values, counted: bool = False) -> np.ndarray:
        """Sum over ranks of a float64 buffer, one MPI_Allreduce. MPI delivers the same reduced
        buffer to every rank, which keeps replicated iterates (ERM) bit-identical."""
        arr = np.ascontiguousarray(values, dtype=np.float64)
        if counted:
            self._count(arr.nbytes)
        if self.size == 1:
            return arr.copy()
        out = np.empty_like(arr)
        self.comm.Allreduce(arr, out, op=mpi().SUM)
        return out

    def max(self, value: float) -> float:
        return float(value) if self.size == 1 else float(self.comm.allreduce(float(value), op=mpi().MAX))

    def min(self, value: float) -> float:
        return float(value) if self.size == 1 else float(self.comm.allreduce(float(value), op=mpi().MIN))

    def allgather(self, obj) -> list:
        return [obj] if self.size == 1 else self.comm.allgather(obj)

    def bcast(self, obj, root: int = 0):
        return obj if self.size == 1 else self.comm.bcast(obj, root=root)

    # -- lists of tensors, packed into one call -----------------------------------------------
    def mean_tensors(self, tensors: list) -> list:
        """Each tensor replaced in place by its mean over ranks; one collective for the list."""
        return self._packed(tensors, None, self.size)

    def sum_tensors(self, tensors: list, exact: bool = True) -> list:
        """Each tensor replaced in place by its sum over ranks; ``exact``: reduced in float64
        (counts and logit sums stay exact whatever the tensors' dtype), else in the first
        tensor's dtype (gradients: half the bytes of float64 for float32)."""
        import torch
        return self._packed(tensors, torch.float64 if exact else None, 1)

    def _packed(self, tensors, dtype, divide_by: int) -> list:
        """Packed into one CPU buffer of ``dtype`` (default: the first tensor's), reduced in place
        through a numpy view, copied back into each tensor (its own dtype and device)."""
        import torch
        tensors = list(tensors)
        if self.size == 1 or not tensors:
            return tensors
        only = tensors[0]
        if (len(tensors) == 1 and only.device.type == "cpu" and only.is_contiguous()
                and (dtype is None or only.dtype == dtype)):
            # One contiguous CPU buffer (the mpi backend's flattened gradients): reduced where
            # it lies, with no packing copy in and out on every step.
            self.comm.Allreduce(mpi().IN_PLACE, only.detach().numpy(), op=mpi().SUM)
            if divide_by != 1:
                only.div_(divide_by)
            return tensors
        flat = torch.cat([t.detach().reshape(-1).to("cpu", dtype or tensors[0].dtype) for t in tensors])
        self.comm.Allreduce(mpi().IN_PLACE, flat.numpy(), op=mpi().SUM)   # the view shares memory
        if divide_by != 1:
            flat /= divide_by
        off = 0
        for t in tensors:
            t.copy_(flat[off:off + t.numel()].view_as(t))
            off += t.numel()
        return tensors
