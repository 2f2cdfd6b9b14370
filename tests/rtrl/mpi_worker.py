"""Run under ``mpirun -np 2``: data-parallel online RTRL keeps the replicas identical.

Checks (exit code 1 on failure, "MPI-RTRL OK" on rank 0 on success):
1. one SGD update with allreduce applies exactly -lr * (mean of the ranks' local grads);
2. after a few dozen sparse-RTRL Adam updates every rank holds bit-identical parameters.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from mpi4py import MPI

from hpccl.core.collectives import Collectives
from hpccl.rtrl import EGRUNet, OnlineTrainer, RTRLLearner, spiral_task


def flat_params(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def main() -> int:
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    task = spiral_task(256, seed=0)
    stream = lambda n: task.stream(n, seed=7, rank=rank, world_size=size, dtype=torch.float64)
    make = lambda: EGRUNet(2, 10, 2, seed=0, dtype=torch.float64, weight_sparsity=0.5,
                           input_gain=3.0)
    lr = 0.1

    # 1. local gradient of this rank's first sequence, without any averaging
    local = make()
    x, y = next(iter(stream(1)))
    L = RTRLLearner(local, sparse=True)
    L.reset()
    for t in range(x.shape[0]):
        L.step(x[t], y if t == x.shape[0] - 1 else None)
    L.flush()
    g_local = torch.cat([p.grad.reshape(-1) for p in local.parameters()])
    g_all = np.array(comm.allgather(g_local.numpy()))
    ok = True
    if np.abs(g_all[0] - g_all[1]).max() < 1e-8:
        print(f"rank {rank}: local gradients do not differ, the test is vacuous", flush=True)
        ok = False
    expected = flat_params(local) - lr * torch.from_numpy(g_all.mean(0))

    net = make()
    tr = OnlineTrainer(net, "rtrl_sparse", lr=lr, optimizer="sgd",
                       allreduce_mean=Collectives(comm).mean_tensors)
    tr.run(stream(1))
    err = float((flat_params(net) - expected).abs().max())
    if err > 1e-12:
        print(f"rank {rank}: averaged SGD step off by {err:.3e}", flush=True)
        ok = False

    # 2. longer run: parameters stay identical across ranks
    net = make()
    tr = OnlineTrainer(net, "rtrl_sparse", update_every=5, lr=0.01,
                       allreduce_mean=Collectives(comm).mean_tensors)
    tr.run(stream(30))
    p = flat_params(net).numpy()
    ps = comm.allgather(p)
    if not all(np.array_equal(ps[0], q) for q in ps[1:]):
        print(f"rank {rank}: replicas diverged by {np.abs(ps[0] - ps[1]).max():.3e}", flush=True)
        ok = False
    if tr.updates == 0 or np.array_equal(p, flat_params(make()).numpy()):
        print(f"rank {rank}: no update happened", flush=True)
        ok = False
    ok = comm.allreduce(int(ok), op=MPI.MIN)
    if rank == 0 and ok:
        print("MPI-RTRL OK", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
