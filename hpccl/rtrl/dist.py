"""Gradient averaging for data-parallel online learning.

The trainer only needs a callable ``allreduce_mean(list_of_tensors)`` that averages each
tensor over ranks (in place, or by returning the averaged list); hpccl's runtime provides
:func:`hpccl.core.runtime.mpi_allreduce_mean`, shared with the ALMA learners.
"""
from hpccl.core.runtime import mpi_allreduce_mean

__all__ = ["mpi_allreduce_mean"]
