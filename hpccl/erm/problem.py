"""The regularized ERM problem  min_x  P(x) = (1/n) sum_i phi(a_i^T x, y_i) + R(x).

A :class:`Problem` holds one rank's *shard* of the samples (rows of X and entries of y)
together with what is global: the total number of samples n, the loss and the
regularizer weights.  With a single process the shard is the whole data set.

Samples are numbered globally by rank order: rank r's local row j is global sample
``offset_r + j`` where offset_r is the number of samples on ranks < r.  The offsets are
computed when the problem is bound to a communicator (:class:`hpccl.erm.oracle.Oracle`),
unless given.  The numbering is what lets every rank draw the same global mini-batch
(:mod:`hpccl.erm.sampling`).

X may be a dense ndarray or a scipy.sparse CSR matrix (CSR keeps row slicing cheap;
other sparse formats are converted).  No intercept is modelled; add a constant column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import scipy.sparse as sp

from hpccl.core.errors import HpcclError
from hpccl.erm.losses import Loss, get_loss
from hpccl.erm.prox import ElasticNet


class ProblemError(HpcclError):
    """The ERM problem description is inconsistent (shapes, labels, n)."""


@dataclass
class Problem:
    X: Union[np.ndarray, sp.csr_matrix]
    y: np.ndarray
    n: Optional[int] = None  # global number of samples; None = sum of shard sizes
    loss: Union[str, Loss] = "logistic"
    l1: float = 0.0
    l2: float = 0.0
    offset: Optional[int] = None  # global index of local row 0; None = by rank order
    name: str = ""
    _row_sq_norms: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if sp.issparse(self.X):
            self.X = sp.csr_matrix(self.X, dtype=np.float64)
            self.X.sort_indices()
        else:
            self.X = np.ascontiguousarray(self.X, dtype=np.float64)
            if self.X.ndim != 2:
                raise ProblemError(f"X must be 2-D, got shape {self.X.shape}")
        self.y = np.ascontiguousarray(self.y, dtype=np.float64).ravel()
        if self.y.shape[0] != self.X.shape[0]:
            raise ProblemError(
                f"X has {self.X.shape[0]} rows but y has {self.y.shape[0]} entries")
        self.loss = get_loss(self.loss)
        if self.loss.name in ("logistic", "smoothed_hinge") and self.y.size:
            bad = ~np.isin(self.y, (-1.0, 1.0))
            if bad.any():
                raise ProblemError(
                    f"{self.loss.name} loss needs labels in {{-1, +1}}, found "
                    f"{np.unique(self.y[bad])[:5]}; map them first (libsvm.read_libsvm does)")
        self.regularizer = ElasticNet(self.l1, self.l2)

    @property
    def n_local(self) -> int:
        return self.X.shape[0]

    @property
    def dim(self) -> int:
        return self.X.shape[1]

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.X)

    def row_sq_norms(self) -> np.ndarray:
        if self._row_sq_norms is None:
            if self.is_sparse:
                self._row_sq_norms = np.asarray(self.X.multiply(self.X).sum(axis=1)).ravel()
            else:
                self._row_sq_norms = np.einsum("ij,ij->i", self.X, self.X)
        return self._row_sq_norms

    def sample_smoothness(self) -> np.ndarray:
        """L_i = sup phi'' * ||a_i||^2 for the local samples."""
        return self.loss.curvature * self.row_sq_norms()

    def shard(self, lo: int, hi: int) -> "Problem":
        """The sub-problem of local rows [lo, hi) (for tests and single-host sharding)."""
        return Problem(self.X[lo:hi], self.y[lo:hi], n=self.n, loss=self.loss,
                       l1=self.l1, l2=self.l2, offset=None, name=self.name)



