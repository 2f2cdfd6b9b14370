"""Gradient averaging for data-parallel online learning.

The trainer only needs a callable ``allreduce_mean(list_of_tensors)`` that averages each
tensor over ranks (in place, or by returning the averaged list). hpccl's runtime provides
its own; :func:`mpi_allreduce_mean` is a plain mpi4py implementation (used by the tests).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def mpi_allreduce_mean(comm=None) -> Callable[[Sequence[torch.Tensor]], list]:
    """Return ``allreduce_mean`` over ``comm`` (default ``MPI.COMM_WORLD``).

    All tensors are packed into one contiguous CPU buffer (one collective per update, not
    one per tensor), reduced in place through a numpy view, and copied back.
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm

    def allreduce_mean(tensors: Sequence[torch.Tensor]) -> list:
        tensors = list(tensors)
        if comm.Get_size() == 1 or not tensors:
            return tensors
        dtype = tensors[0].dtype
        flat = torch.cat([t.detach().reshape(-1).to("cpu", dtype) for t in tensors])
        buf = flat.numpy()  # shares memory with ``flat``
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        flat /= comm.Get_size()
        off = 0
        for t in tensors:
            k = t.numel()
            t.copy_(flat[off:off + k].view_as(t))
            off += k
        return tensors

    return allreduce_mean
