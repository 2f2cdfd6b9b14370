"""The gradient backends' allreduce of a ResNet-18-sized gradient (Horovod, torch.distributed
with gloo, hpccl's ``mpi`` backend: the World's collectives, packed through mpi4py) next to a
raw MPI.Allreduce of the same bytes on the same ranks, as ratios.

    python benchmarks/allreduce_bench.py -n 4          # re-launches itself under mpirun
    mpirun -np 8 python benchmarks/allreduce_bench.py  # or inside any MPI launch
    python benchmarks/allreduce_bench.py -n 2 --smoke  # seconds: 10,000 elements, 2 repetitions

Times are medians over repetitions after warm-up; the baseline (raw MPI) is measured in the
same run on the same ranks, because the absolute numbers on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

RESNET18_PARAMS = 11_689_512  # torchvision's resnet18 (ImageNet head)


def bench(fn, reps, comm):
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    # the slowest rank defines the collective's time
    return max(comm.allgather(statistics.median(times)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=None, help="ranks to start under local mpirun")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--elements", type=int, default=RESNET18_PARAMS, help="float32 elements")
    p.add_argument("--smoke", action="store_true", help="seconds: 10,000 elements, 2 repetitions "
                   "(the test suite: every backend, the same table)")
    args = p.parse_args()
    if args.smoke:
        args.elements, args.reps = 10_000, 2
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from hpccl.core.launch import mpirun_prefix, under_mpi_launch
    if args.n and not under_mpi_launch():
        cmd = mpirun_prefix(args.n) + [sys.executable, os.path.abspath(__file__),
                                       "--reps", str(args.reps), "--elements", str(args.elements)]
        cmd += ["--smoke"] if args.smoke else []
        raise SystemExit(subprocess.call(cmd))

    import numpy as np
    import torch

    from hpccl.config import RuntimeConfig
    from hpccl.core.runtime import init_world, mpi
    MPI = mpi()
    world = init_world(RuntimeConfig(backend="horovod", device="cpu"))
    comm = world.comm
    n = args.elements
    send = np.random.default_rng(world.rank).standard_normal(n).astype(np.float32)
    recv = np.empty_like(send)
    t_mpi = bench(lambda: comm.Allreduce(send, recv, op=MPI.SUM), args.reps, comm)

    import horovod.torch as hvd
    tensor = torch.from_numpy(send.copy())
    t_hvd = bench(lambda: hvd.allreduce(tensor, op=hvd.Sum, name="bench"), args.reps, comm)
    world.backend.shutdown()
    world.backend = None

    grads = [torch.from_numpy(send.copy())]
    t_coll = bench(lambda: world.collectives.sum_tensors(grads, exact=False), args.reps, comm)

    from hpccl.core.backends import TorchDistBackend
    tb = TorchDistBackend(world)
    t_gloo = bench(lambda: tb.dist.all_reduce(tensor), args.reps, comm)
    tb.shutdown()

    if world.rank == 0:
        mb = n * 4 / 1e6
        what = "a ResNet-18 gradient" if n == RESNET18_PARAMS else "smoke" if args.smoke else "--elements"
        print(f"allreduce of {n:,} float32 ({mb:.1f} MB, {what}) on {world.size} ranks, "
              f"{world.num_nodes} node(s); median of {args.reps}, slowest rank")
        print(f"{'method':<28}{'time (ms)':>12}{'algbw (GB/s)':>14}{'ratio to MPI':>14}")
        for name, t in (("MPI.Allreduce (baseline)", t_mpi), ("horovod.allreduce", t_hvd),
                        ("torch.distributed (gloo)", t_gloo), ("hpccl mpi backend", t_coll)):
            print(f"{name:<28}{t * 1e3:12.2f}{mb / 1e3 / t:14.2f}{t / t_mpi:14.2f}")


if __name__ == "__main__":
    main()
