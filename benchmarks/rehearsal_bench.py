"""Rehearsal buffer benchmark: (1) global sampling throughput next to memcpy bandwidth, and
(2) the exposed cost of rehearsal in training, against incremental training at the same b.

    python benchmarks/rehearsal_bench.py -n 4            # both parts, 4 local ranks
    python benchmarks/rehearsal_bench.py -n 4 --part sampling

Part 1 runs under MPI (it re-launches itself): every rank fills its shard with CIFAR-sized
samples (3x32x32 float32, 12 KiB) and draws r representatives at a time from the global
buffer, while memcpy bandwidth is measured by the same ranks at the same time on buffers
of the same size (the baseline). Reported for same-node ranks (shared-memory windows) and,
for reference, with every rank its own node (MPI_Get path).

Part 2 runs `hpccl run` on a synthetic CIFAR-shaped dataset with the reference's b = 56,
c = 14, r = 7: incremental, rehearsal (async) and rehearsal (sync). It prints the share of
iteration time spent waiting for representatives, and the epoch time of rehearsal divided
by incremental's, next to the ideal (b + r) / b.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def sampling_part(args):
    import numpy as np

    from hpccl.rehearsal.sampler import GlobalSampler
    from hpccl.rehearsal.shard import Shard, ShardLayout
    from hpccl.runtime import mpi
    MPI = mpi()
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    shape, classes, slots = (3, 32, 32), 100, 20
    results = []
    for mode in ("shared", "remote"):
        group = comm.Split(rank, rank) if mode == "remote" else comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        shard = Shard(comm, group, ShardLayout(classes, slots, shape), np.random.default_rng(rank))
        rng = np.random.default_rng(rank)
        n = classes * slots
        shard.insert(rng.standard_normal((n,) + shape).astype(np.float32), np.repeat(np.arange(classes), slots))
        sampler = GlobalSampler(shard, np.random.default_rng(100 + rank))
        for r in args.reps:
            outputs = [sampler.new_output(r) for _ in range(2)]  # as RehearsalBuffer does
            sampler.sample(r, out=outputs[0])
            comm.Barrier()
            t0 = time.perf_counter()
            draws = 0
            while time.perf_counter() - t0 < args.seconds:
                x, _ = sampler.sample(r, out=outputs[draws % 2])
                draws += 1
            elapsed = time.perf_counter() - t0
            moved = comm.allreduce(draws * x.nbytes)
            slowest = comm.allreduce(elapsed, op=MPI.MAX)
            # memcpy baseline: the same ranks copy the same number of bytes between buffers of
            # the shard's size, all at once (they share the node's memory bandwidth too).
            src = np.frombuffer(rng.bytes(shard.layout.nbytes), dtype=np.uint8)
            dst = np.empty_like(src)
            comm.Barrier()
            t0 = time.perf_counter()
            copied = 0
            while time.perf_counter() - t0 < args.seconds:
                np.copyto(dst, src)
                copied += src.nbytes
            copy_elapsed = time.perf_counter() - t0
            copy_rate = comm.allreduce(copied / copy_elapsed)
            sample_rate = moved / slowest
            results.append((mode, r, sample_rate, copy_rate, draws / elapsed))
        shard.free()
        group.Free()
    if rank == 0:
        print(f"global sampling of CIFAR-sized samples (12 KiB) on {comm.Get_size()} ranks, "
              f"{args.seconds:.1f}s per point; rates summed over ranks")
        print(f"{'path':<8}{'r':>6}{'draws/s/rank':>14}{'sampling GB/s':>15}{'memcpy GB/s':>13}{'ratio':>8}")
        for mode, r, rate, copy, dps in results:
            print(f"{mode:<8}{r:>6}{dps:14.0f}{rate / 1e9:15.2f}{copy / 1e9:13.2f}{rate / copy:8.2f}")


def training_part(args):
    import numpy as np

    from hpccl.analysis.report import load_run
    from hpccl.data.convert import convert_synthetic
    work = tempfile.mkdtemp(prefix="hpccl-rehearsal-bench-")
    data = os.path.join(work, "synthetic.h5")
    convert_synthetic(data, num_classes=10, shape=(3, 32, 32), train_per_class=args.train_per_class,
                      test_per_class=20, seed=0)
    job = os.path.join(work, "job.yaml")
    with open(job, "w") as f:
        f.write(f"""name: bench
data: {{path: {data}}}
scenario: {{num_tasks: 2}}
model: {{kind: cnn, width: {args.width}}}
train: {{epochs: {args.epochs}, batch_size: 56, lr: 0.01, momentum: 0.5}}
rehearsal: {{candidates: 14, representatives: 7, buffer_ratio: 0.1, start_task: 1}}
runtime: {{backend: {args.backend}}}
log: {{progress: off}}
""")
    rows = {}
    for label, sets in (("incremental", ["learner=incremental"]),
                        ("rehearsal async", ["learner=rehearsal", "rehearsal.async=true"]),
                        ("rehearsal sync", ["learner=rehearsal", "rehearsal.async=false"])):
        out = os.path.join(work, label.replace(" ", "_"))
        cmd = [sys.executable, "-m", "hpccl", "run", job, "-n", str(args.n), "--out", out]
        for s in sets:
            cmd += ["--set", s]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        run, ranks = load_run(out)
        # task 1 only: rehearsal is active from start_task = 1
        epoch_times = [t for t, task in zip(run["epochs/time_s"], run["epochs/task"]) if task == 1]
        wait = total = 0.0
        for r in ranks:
            mask = r["timers/task"] == 1
            wait += float(r["timers/rehearsal_wait"][mask].sum())
            total += float(r["timers/total"][mask].sum())
        # best epoch: the machine is shared and noisy; the minimum is the least disturbed
        rows[label] = (min(epoch_times), float(np.median(epoch_times)), wait / total)
    base = rows["incremental"][0]
    print(f"\nexposed rehearsal cost, {args.n} ranks, backend {args.backend}, CNN width {args.width} on "
          f"3x32x32, b = 56, c = 14, r = 7 (ideal epoch-time ratio (b + r) / b = {63 / 56:.3f})")
    print(f"{'learner':<18}{'best epoch s':>13}{'median s':>10}{'x incremental':>15}{'rehearsal_wait':>16}")
    for label, (best, median, frac) in rows.items():
        print(f"{label:<18}{best:13.3f}{median:10.3f}{best / base:15.3f}{frac * 100:15.2f}%")
    print(json.dumps({k: {"best_epoch_s": v[0], "median_epoch_s": v[1], "wait_fraction": v[2]}
                      for k, v in rows.items()}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=4, help="ranks")
    p.add_argument("--part", choices=("sampling", "training", "both"), default="both")
    p.add_argument("--reps", type=int, nargs="+", default=[7, 64, 512], help="representatives per draw")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--backend", default="horovod")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--train-per-class", type=int, default=600)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return sampling_part(args)
    if args.part in ("sampling", "both"):
        from hpccl.launch import mpirun_prefix
        cmd = mpirun_prefix(args.n) + [sys.executable, os.path.abspath(__file__), "--worker",
                                       "--seconds", str(args.seconds), "--reps", *map(str, args.reps)]
        subprocess.run(cmd, check=True)
    if args.part in ("training", "both"):
        training_part(args)


if __name__ == "__main__":
    main()
