"""Run under mpirun by test_mpi.py (not collected by pytest: no test_ prefix).

Shards a standardized breast-cancer problem over the ranks with deliberately *unequal*
shard sizes (rank r gets a share proportional to r + 1), runs every solver for a few
stages with ``verify_sync``, checks on every rank that the final iterates of all ranks
are bit-identical, and has rank 0 write the iterates and histories to OUT/np{size}.npz.

usage: mpirun -np P python mpi_worker.py OUT_DIR
"""
import sys

import numpy as np
import scipy.sparse as sp
from mpi4py import MPI

from hpccl.erm import Problem, solve

RUNS = [
    ("dasvrda", {}),
    ("dasvrda", {"importance": True, "restart": "gradient"}),
    ("svrg", {"batch_size": 16}),
    ("katyusha", {"batch_size": 16}),
    ("sgd", {"batch_size": 16}),
    ("fista", {}),
]


def data():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    return X, np.where(y == 1, 1.0, -1.0)


def main(out_dir):
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    X, y = data()
    n = X.shape[0]
    w = np.arange(1, size + 1, dtype=float)
    cuts = np.concatenate([[0], np.round(np.cumsum(w) / w.sum() * n).astype(int)])
    lo, hi = cuts[rank], cuts[rank + 1]
    results = {}
    for sparse in (False, True):
        Xs = sp.csr_matrix(X[lo:hi]) if sparse else X[lo:hi]
        prob = Problem(Xs, y[lo:hi], n=n, loss="logistic", l1=1e-3, l2=1e-2)
        for name, opts in RUNS:
            if sparse and name not in ("dasvrda",):
                continue
            res = solve(prob, name, comm=comm, epochs=1e9, max_stages=3, seed=7,
                        verify_sync=True, **opts)
            xs = comm.allgather(res.x)
            same = all(np.array_equal(xs[0], xr) for xr in xs)
            tag = f"{name}_{'_'.join(f'{k}-{v}' for k, v in sorted(opts.items()))}_{'csr' if sparse else 'dense'}"
            results[f"{tag}/x"] = res.x
            results[f"{tag}/objective"] = np.array([h.objective for h in res.history])
            results[f"{tag}/passes"] = np.array([h.passes for h in res.history])
            results[f"{tag}/allreduces"] = np.array([h.allreduces for h in res.history])
            results[f"{tag}/same_on_all_ranks"] = np.array(same)
    if rank == 0:
        np.savez(f"{out_dir}/np{size}.npz", shard_sizes=np.diff(cuts), **results)


if __name__ == "__main__":
    main(sys.argv[1])
