"""Rehearsal buffer benchmark: (1) global sampling against a private gather of the same rows,
with the RMA operations and bytes each draw costs, and (2) the exposed cost of rehearsal in
training, against incremental training at the same b, per MPI stack.

    python benchmarks/rehearsal_bench.py --part sampling --ranks 2 4 8
    python benchmarks/rehearsal_bench.py --part training --stacks openmpi openmpi-ucx:2 mpich mpich:2

Part 1 runs under MPI (it re-launches itself) for each rank count: every rank fills its shard
with CIFAR-sized samples (3x32x32 float32, 12 KiB) and draws r representatives at a time from
the global buffer. The baseline, measured by the same ranks right after, is a private gather:
r distinct random rows (Generator.choice, sorted) taken with np.take from a private array of
the shard's size into the same reusable output ('ratio'). 'to copy' compares with the np.take
alone, rows drawn beforehand: the pure memory cost, with no sampling at all. Two layouts: 'shared' (all ranks one node: shared-memory loads) and
'remote' (every rank its own node: contiguous MPI gets). RMA operations and bytes are counted
per draw, by kind: total reads (at most REFRESH_PER_DRAW, whatever the ranks), sequence-number
gets (2 per owner drawn from) and record gets (one per run of adjacent records on another
node); the last two grow with the share of a draw that lies on other nodes, up to 3r.

Part 2 runs `hpccl run` on a synthetic CIFAR-shaped dataset with the reference's b = 56,
c = 14, r = 7 (incremental, rehearsal async, rehearsal sync) under each MPI stack: 'openmpi'
(shared memory), 'openmpi-ucx' (pml/osc UCX over its TCP transport), 'mpich' (.venv-mpich);
':2' adds rehearsal.ranks_per_node=2 (2 x 2 pseudo-nodes). It prints the share of iteration
time spent waiting for representatives and the epoch-time ratio to incremental, next to the
ideal (b + r) / b. Machines here are shared and noisy: each cell is the best epoch of a run.
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
sys.path.insert(0, os.path.join(ROOT, "tests"))


def sampling_worker(args):
    import numpy as np

    from hpccl.continual.rehearsal.sampler import GlobalSampler
    from hpccl.continual.rehearsal.shard import Shard, ShardLayout
    from hpccl.core.runtime import mpi
    MPI = mpi()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    shape, classes, slots = (3, 32, 32), 100, 20
    results = []
    for mode in ("shared", "remote"):
        group = comm.Split(rank, rank) if mode == "remote" else comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        layout = ShardLayout(classes, slots, shape)
        shard = Shard(comm, group, layout, np.random.default_rng(rank))
        rng = np.random.default_rng(rank)
        n = classes * slots
        shard.insert(rng.standard_normal((n,) + shape).astype(np.float32), np.repeat(np.arange(classes), slots))
        comm.Barrier()
        sampler = GlobalSampler(shard, np.random.default_rng(100 + rank))
        sampler.refresh()
        private = rng.standard_normal((layout.capacity, layout.record_bytes // 4)).astype(np.float32).view(np.uint8)
        for r in args.reps:
            outputs = [sampler.new_output(r) for _ in range(2)]  # as RehearsalBuffer does
            sampler.sample(r, out=outputs[0])
            comm.Barrier()
            ops0, bytes0 = shard.windows.ops, shard.windows.bytes
            kinds0 = dict(shard.windows.ops_by_kind)
            t0 = time.perf_counter()
            draws = 0
            while time.perf_counter() - t0 < args.seconds:
                sampler.sample(r, out=outputs[draws % 2])
                draws += 1
            elapsed = time.perf_counter() - t0
            ops, moved_rma = shard.windows.ops - ops0, shard.windows.bytes - bytes0
            kinds = {k: v - kinds0[k] for k, v in shard.windows.ops_by_kind.items()}
            comm.Barrier()
            t0 = time.perf_counter()
            gathers = 0
            while time.perf_counter() - t0 < args.seconds:
                rows = rng.choice(layout.capacity, size=r, replace=False)
                rows.sort()
                np.take(private, rows, axis=0, out=outputs[gathers % 2])
                gathers += 1
            gather_elapsed = time.perf_counter() - t0
            # The copy alone: rows drawn beforehand, so only np.take is timed.
            row_sets = [np.sort(rng.choice(layout.capacity, size=r, replace=False)) for _ in range(256)]
            comm.Barrier()
            t0 = time.perf_counter()
            copies = 0
            while time.perf_counter() - t0 < args.seconds:
                np.take(private, row_sets[copies % 256], axis=0, out=outputs[copies % 2])
                copies += 1
            copy_rate = comm.allreduce(copies * r * layout.sample_bytes / (time.perf_counter() - t0))
            sample_rate = comm.allreduce(draws * r * layout.sample_bytes / elapsed)
            gather_rate = comm.allreduce(gathers * r * layout.sample_bytes / gather_elapsed)
            total_draws = comm.allreduce(draws)
            results.append({"path": mode, "ranks": size, "r": r, "draws_per_s_rank": total_draws / size / elapsed,
                            "sampling_MBps": sample_rate / 1e6, "gather_MBps": gather_rate / 1e6,
                            "ratio": sample_rate / gather_rate, "ratio_to_copy": sample_rate / copy_rate,
                            "rma_ops_per_draw": comm.allreduce(ops) / total_draws,
                            **{f"{k}_gets_per_draw": comm.allreduce(v) / total_draws for k, v in kinds.items()},
                            "rma_KB_per_draw": comm.allreduce(moved_rma) / total_draws / 1e3})
        shard.free()
        group.Free()
    if rank == 0:
        print(json.dumps(results))


def sampling_part(args):
    from hpccl.core.launch import mpirun_prefix
    rows = []
    for n in args.ranks:
        cmd = mpirun_prefix(n) + [sys.executable, os.path.abspath(__file__), "--worker",
                                  "--seconds", str(args.seconds), "--reps", *map(str, args.reps)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows += json.loads(out.strip().splitlines()[-1])
    print(f"global sampling of CIFAR-sized samples (12 KiB), {args.seconds:.1f}s per point; rates summed "
          "over ranks; baseline: private np.take of the same number of rows, same ranks, same run")
    print(f"{'path':<8}{'ranks':>6}{'r':>5}{'draws/s/rank':>14}{'sampling MB/s':>15}{'gather MB/s':>13}"
          f"{'ratio':>7}{'to copy':>8}{'RMA ops/draw':>14}{'totals':>8}{'seqs':>6}{'records':>9}{'RMA KB/draw':>13}")
    for x in sorted(rows, key=lambda x: (x["path"], x["r"], x["ranks"])):
        print(f"{x['path']:<8}{x['ranks']:>6}{x['r']:>5}{x['draws_per_s_rank']:14.0f}{x['sampling_MBps']:15.0f}"
              f"{x['gather_MBps']:13.0f}{x['ratio']:7.2f}{x['ratio_to_copy']:8.2f}{x['rma_ops_per_draw']:14.1f}{x['word_gets_per_draw']:8.1f}"
              f"{x['seqs_gets_per_draw']:6.1f}{x['records_gets_per_draw']:9.1f}{x['rma_KB_per_draw']:13.1f}")
    print(json.dumps(rows))


def training_part(args):
    import numpy as np

    from helpers import mpi_stack
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
runtime: {{backend: torch}}
log: {{progress: off}}
""")
    table = []
    for spec in args.stacks:
        name, _, rpn = spec.partition(":")
        stack = mpi_stack(name, int(rpn) if rpn else None)
        rows = {}
        for label, sets in (("incremental", ["learner=incremental"]),
                            ("rehearsal async", ["learner=rehearsal", "rehearsal.async=true"]),
                            ("rehearsal sync", ["learner=rehearsal", "rehearsal.async=false"])):
            out = os.path.join(work, f"{spec.replace(':', '_')}-{label.replace(' ', '_')}")
            cmd = stack.hpccl("run", job, "-n", str(args.n), "--out", out)
            for s in sets + ([f"rehearsal.ranks_per_node={rpn}"] if rpn else []):
                cmd += ["--set", s]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=dict(os.environ, **stack.env), timeout=1800)
            run, ranks = load_run(out)
            epoch_times = [t for t, task in zip(run["epochs/time_s"], run["epochs/task"]) if task == 1]
            wait = total = 0.0
            for r in ranks:
                mask = r["timers/task"] == 1
                wait += float(r["timers/rehearsal_wait"][mask].sum())
                total += float(r["timers/total"][mask].sum())
            rows[label] = (min(epoch_times), float(np.median(epoch_times)), wait / total,
                           time.perf_counter() - t0)
        base = rows["incremental"][0]
        layout = f"2 x {args.n // 2}" if rpn else "1 node"
        for label, (best, median, frac, wall) in rows.items():
            table.append((name, layout, label, best, median, best / base, frac))
    print(f"\nexposed rehearsal cost, {args.n} ranks, torch backend, CNN width {args.width} on 3x32x32, "
          f"b = 56, c = 14, r = 7 (ideal epoch-time ratio (b + r) / b = {63 / 56:.3f}); task 1 epochs")
    print(f"{'stack':<13}{'layout':<8}{'learner':<17}{'best epoch s':>13}{'median s':>10}{'x incremental':>15}"
          f"{'rehearsal_wait':>16}")
    for name, layout, label, best, median, ratio, frac in table:
        print(f"{name:<13}{layout:<8}{label:<17}{best:13.3f}{median:10.3f}{ratio:15.3f}{frac * 100:15.2f}%")
    print(json.dumps(table))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=4, help="ranks for the training part")
    p.add_argument("--ranks", type=int, nargs="+", default=[2, 4, 8], help="rank counts for sampling")
    p.add_argument("--part", choices=("sampling", "training", "both"), default="both")
    p.add_argument("--reps", type=int, nargs="+", default=[7, 64], help="representatives per draw")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--stacks", nargs="+", default=["openmpi", "openmpi:2", "openmpi-ucx:2", "mpich", "mpich:2"])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--train-per-class", type=int, default=600)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return sampling_worker(args)
    if args.part in ("sampling", "both"):
        sampling_part(args)
    if args.part in ("training", "both"):
        training_part(args)


if __name__ == "__main__":
    main()
