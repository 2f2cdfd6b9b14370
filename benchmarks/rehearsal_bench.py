"""Rehearsal buffer benchmark: (1) global sampling against a private gather of the same rows,
with the remote operations and bytes each draw costs, (2) the exposed cost of rehearsal in
training, against incremental training at the same b, per MPI stack, and (3) remote draws
against the network's own limit, per transport.

    python benchmarks/rehearsal_bench.py --part sampling --ranks 2 4 8
    python benchmarks/rehearsal_bench.py --part training --stacks openmpi openmpi-ucx:2 mpich mpich:2
    python benchmarks/rehearsal_bench.py --part remote              # this machine, then the test bed
    python benchmarks/rehearsal_bench.py --part remote --smoke      # seconds (the test suite)
    python benchmarks/rehearsal_bench.py --smoke      # sampling and training in seconds (the test suite)

Part 3 ('remote') puts every rank on its own node and, in the same run, for records of 3 KB
(CIFAR uint8) and 150 KB (ImageNet uint8) and r = 7 and 64, measures (a) a raw loop of
MPI_Rget, one per drawn record, to the same owners, waited for together (osu_get_bw's
pattern: what the network gives; polled as hpccl polls, since a spinning wait starves the
targets on shared cores), (b) hpccl's draw with 'rehearsal.transport: rma', (c) the
same with 'messages', (d) a private gather of the same number of rows. Every rank draws at
once, as in training, with the rehearsal thread that answers for it. Reported: payload
MB/s summed over ranks, ratios to (a) and (d), and per draw the remote records, the remote
operations and rounds, and the bytes moved per payload byte. It runs on this machine under
each stack ('--stacks'), then across the hosts of the multi-host test bed (needs root; one
host per rank), unlimited and with every link limited by tc tbf ('--rates').

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
import atexit
import json
import os
import shutil
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
            w = shard.windows
            ops0, bytes0, rounds0, recs0 = w.ops, w.bytes, w.rounds, w.remote_records
            t0 = time.perf_counter()
            draws = 0
            # each loop runs at least once: on a busy machine a rank descheduled for all of
            # --seconds would count no draws, and the rates would divide by zero
            while draws == 0 or time.perf_counter() - t0 < args.seconds:
                sampler.sample(r, out=outputs[draws % 2])
                draws += 1
            elapsed = time.perf_counter() - t0
            ops, moved_rma = w.ops - ops0, w.bytes - bytes0
            rounds, recs = w.rounds - rounds0, w.remote_records - recs0
            comm.Barrier()
            t0 = time.perf_counter()
            gathers = 0
            while gathers == 0 or time.perf_counter() - t0 < args.seconds:
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
            while copies == 0 or time.perf_counter() - t0 < args.seconds:
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
                            "rounds_per_draw": comm.allreduce(rounds) / total_draws,
                            "remote_records_per_draw": comm.allreduce(recs) / total_draws,
                            "rma_KB_per_draw": comm.allreduce(moved_rma) / total_draws / 1e3})
        shard.free()
        group.Free()
    if rank == 0:
        print(json.dumps(results))


SIZES = {"3KB": (3, 32, 32), "150KB": (3, 224, 224)}     # uint8 CIFAR and ImageNet records
_CAPACITY_BYTES = 12 << 20                               # per shard and transport


def remote_worker(args):
    import numpy as np

    from hpccl.continual.rehearsal.buffer import RehearsalThread, progress_function
    from hpccl.continual.rehearsal.rma import wait_polling
    from hpccl.continual.rehearsal.sampler import GlobalSampler
    from hpccl.continual.rehearsal.shard import Shard, ShardLayout
    from hpccl.core.errors import HpcclError
    from hpccl.core.runtime import mpi
    MPI = mpi()
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    group = comm.Split(rank, rank)                  # every rank its own node
    results = []
    for name in args.sizes:
        shape = SIZES[name]
        layout = ShardLayout(8, max(1, _CAPACITY_BYTES // (8 * int(np.prod(shape)))), shape, np.uint8)
        n, rb, payload = layout.capacity, layout.record_bytes, layout.sample_bytes
        rng = np.random.default_rng(rank)
        x = rng.integers(0, 256, size=(n,) + shape, dtype=np.uint8)
        shards, samplers = {}, {}
        for transport in ("rma", "messages"):
            try:
                shard = Shard(comm, group, layout, np.random.default_rng(rank), transport=transport)
            except HpcclError:          # the same on every rank: this MPI serves no gets across nodes
                continue
            shard.insert(x, np.arange(n) % 8)
            shards[transport] = shard
        serves = [f for f in (progress_function(s.windows) for s in shards.values()) if f]
        def serve_all():
            for f in serves:
                f()
        thread = RehearsalThread(serve_all, 1e-3)
        raw = MPI.Win.Allocate(n * rb, 1, comm=comm) if "rma" in shards else None
        if raw is not None:
            raw.Lock_all(MPI.MODE_NOCHECK)
        private = rng.integers(0, 256, size=(n, rb), dtype=np.uint8)
        comm.Barrier()
        for transport, shard in shards.items():
            samplers[transport] = GlobalSampler(shard, np.random.default_rng(100 + rank))
            samplers[transport].refresh()
        for r in args.reps:
            out = [np.empty((r, rb), np.uint8) for _ in range(2)]
            draws = [np.sort(rng.choice(size * n, size=r, replace=False)) for _ in range(64)]
            row = {"name": name, "ranks": size, "r": r}

            def timed(key, step):
                comm.Barrier()
                done, t0 = 0, time.perf_counter()
                while done == 0 or time.perf_counter() - t0 < args.seconds:     # at least once, as above
                    step(done)
                    done += 1
                elapsed = time.perf_counter() - t0
                # wait for the others while answering their reads: a blocking collective
                # here was seen to leave a peer's 150 KB gets unserved over UCX's TCP
                finished = comm.Ibarrier()
                wait_polling(finished.Test, serve_all)
                row[f"{key}_MBps"] = comm.allreduce(done * r * payload / elapsed) / 1e6
                return comm.allreduce(done)

            if raw is not None:
                def raw_step(i):
                    pos = draws[i % 64]
                    owners, recs = pos // n, pos % n
                    dst = out[i % 2]
                    reqs = [raw.Rget([dst[j], MPI.BYTE], int(t), target=(int(rec) * rb, rb, MPI.BYTE))
                            for j, (t, rec) in enumerate(zip(owners, recs)) if t != rank]
                    mine = np.flatnonzero(owners == rank)
                    np.take(private, recs[mine], axis=0, out=dst[:len(mine)])
                    # waited for as hpccl waits (poll, then sleep briefly): a blocking Waitall
                    # spins, and on shared cores starves the target that must serve the get
                    wait_polling(lambda: MPI.Request.Testall(reqs))
                timed("raw", raw_step)
            for transport, shard in shards.items():
                w, sampler = shard.windows, samplers[transport]
                before = (w.ops, w.rounds, w.bytes, w.remote_records)
                total = timed(transport, lambda i: sampler.sample(r, out=out[i % 2]))
                ops, rounds, moved, records = (comm.allreduce(v - b) for v, b in zip(
                    (w.ops, w.rounds, w.bytes, w.remote_records), before))
                row[transport] = {"ops": ops / total, "rounds": rounds / total,
                                  "remote_records": records / total,
                                  "bytes_per_payload": moved / max(1, records * payload)}
            timed("gather", lambda i: np.take(private, np.sort(rng.choice(n, size=r, replace=False)),
                                              axis=0, out=out[i % 2]))
            results.append(row)
        thread.shutdown()
        comm.Barrier()
        if raw is not None:
            raw.Unlock_all()
            raw.Free()
        for shard in shards.values():
            shard.free()
    group.Free()
    if rank == 0:
        print(_RESULT + json.dumps(results), flush=True)


_RESULT = "remote-results: "


def _results(stdout: str) -> list:
    """The worker's result line (other ranks' output may follow it)."""
    return json.loads(next(ln for ln in stdout.splitlines() if ln.startswith(_RESULT))[len(_RESULT):])


def remote_table(rows, title):
    print(f"\n{title}")
    head = ["record", "ranks", "r", "raw get MB/s", "rma MB/s", "msg MB/s", "gather MB/s", "rma/raw",
            "msg/raw", "rma/msg", "rma/gather", "remote recs", "rma ops", "rma rounds", "rma bytes/payload",
            "msg ops"]
    lines = []
    for x in rows:
        def ratio(a, b):
            return f"{x[a + '_MBps'] / x[b + '_MBps']:.2f}" if f"{a}_MBps" in x and f"{b}_MBps" in x else "-"
        rma, msg = x.get("rma", {}), x.get("messages", {})
        lines.append([x["name"], x["ranks"], x["r"], *(f"{x[k]:.0f}" if k in x else "-" for k in (
            "raw_MBps", "rma_MBps", "messages_MBps", "gather_MBps")),
            ratio("rma", "raw"), ratio("messages", "raw"), ratio("rma", "messages"), ratio("rma", "gather"),
            f"{(rma or msg).get('remote_records', 0):.1f}",
            *(f"{rma[k]:.2f}" if k in rma else "-" for k in ("ops", "rounds", "bytes_per_payload")),
            f"{msg['ops']:.2f}" if msg else "-"])
    widths = [max(len(str(v)) for v in col) for col in zip(head, *lines)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for line in lines:
        print("  ".join(str(v).rjust(w) for v, w in zip(line, widths)))
    sys.stdout.flush()


def _remote_argv(args):
    return [os.path.abspath(__file__), "--remote-worker", "--seconds", str(args.seconds),
            "--reps", *map(str, args.reps), "--sizes", *args.sizes]


def remote_part(args):
    """This machine under each stack, then the test bed's hosts."""
    from helpers import mpi_stack
    results = {"local": [], "testbed": []}
    for name in args.stacks_remote:
        stack = mpi_stack(name, 1)
        rows = []
        for n in args.ranks:
            r = subprocess.run(stack.launch(n, _remote_argv(args)), capture_output=True, text=True,
                               env=dict(os.environ, **stack.env), timeout=900)
            if r.returncode != 0:
                raise SystemExit(f"{name} at {n} ranks failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
            rows += _results(r.stdout)
        results["local"].append({"stack": name, "rows": rows})
        remote_table(rows, f"{name}, one machine, every rank its own node (ranks share {os.cpu_count()} cores)")
    if args.testbed_stacks:
        results["testbed"] = testbed_remote(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def testbed_remote(args):
    sys.path.insert(0, os.path.join(ROOT, "tests", "cluster"))
    from cluster_helpers import run_on_cluster
    from testbed import Testbed
    out = []
    tb = Testbed(max(args.ranks), prefix="hpcclr", subnet="10.216.0").start()
    try:
        for rate in [None, *args.rates]:
            tb.set_bandwidth(rate)
            for stack in args.testbed_stacks:
                rows = []
                for n in args.ranks:
                    # TCP only: UCX's shared-memory transports (cross-memory attach) reach the
                    # other "hosts" through the one kernel they share, past the limited links
                    r = run_on_cluster(tb, stack, 1, _remote_argv(args), hosts=tb.names[:n], timeout=900,
                                       env={"UCX_TLS": "tcp,self"})
                    if r.returncode != 0:
                        raise SystemExit(f"{stack} at {n} hosts failed:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
                    rows += _results(r.stdout)
                out.append({"stack": stack, "rate": rate or "unlimited", "rows": rows})
                remote_table(rows, f"{stack} across test-bed hosts (one rank each), links {rate or 'unlimited'}")
    finally:
        tb.stop()
    return out


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
          f"{'ratio':>7}{'to copy':>8}{'RMA ops/draw':>14}{'rounds':>8}{'remote recs':>13}{'RMA KB/draw':>13}")
    for x in sorted(rows, key=lambda x: (x["path"], x["r"], x["ranks"])):
        print(f"{x['path']:<8}{x['ranks']:>6}{x['r']:>5}{x['draws_per_s_rank']:14.0f}{x['sampling_MBps']:15.0f}"
              f"{x['gather_MBps']:13.0f}{x['ratio']:7.2f}{x['ratio_to_copy']:8.2f}{x['rma_ops_per_draw']:14.1f}"
              f"{x['rounds_per_draw']:8.2f}{x['remote_records_per_draw']:13.1f}{x['rma_KB_per_draw']:13.1f}")
    print(json.dumps(rows))


def training_part(args):
    import numpy as np

    from helpers import mpi_stack
    from hpccl.analysis.report import load_run
    from hpccl.data.convert import convert_synthetic
    work = tempfile.mkdtemp(prefix="hpccl-rehearsal-bench-")
    atexit.register(shutil.rmtree, work, True)
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
        layout = f"{args.n // int(rpn)} x {rpn}" if rpn else "1 node"
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
    p.add_argument("--part", choices=("sampling", "training", "remote", "both"), default="both",
                   help="both: sampling and training")
    p.add_argument("--reps", type=int, nargs="+", default=[7, 64], help="representatives per draw")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--stacks", nargs="+", default=["openmpi", "openmpi:2", "openmpi-ucx:2", "mpich", "mpich:2"])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--train-per-class", type=int, default=600)
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES), help="remote: record sizes")
    p.add_argument("--stacks-remote", nargs="*", default=["openmpi-ucx", "mpich"],
                   help="remote: MPI stacks on this machine (none: skip)")
    p.add_argument("--testbed-stacks", nargs="*", default=["openmpi-ucx", "mpich", "openmpi-tcp"],
                   help="remote: MPI stacks across the test bed's hosts (none: skip the test bed)")
    p.add_argument("--rates", nargs="*", default=["100mbit"], help="remote: tc tbf link limits on the test bed")
    p.add_argument("--smoke", action="store_true", help="seconds, for the test suite: sampling on 2 ranks, "
                   "r = 7, 0.1 s per point; training on 2 ranks as 2 pseudo-nodes of the openmpi stack, 1 "
                   "epoch of a small CNN; remote on 2 ranks, r = 7, 3 KB, 0.2 s per point, one stack, no "
                   "test bed")
    p.add_argument("--json", help="remote: also write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--remote-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return sampling_worker(args)
    if args.remote_worker:
        return remote_worker(args)
    if args.part == "remote":
        if args.smoke:
            args.ranks, args.reps, args.sizes, args.seconds = [2], [7], ["3KB"], 0.2
            args.stacks_remote, args.testbed_stacks = ["openmpi-ucx"], []
        return remote_part(args)
    if args.smoke:
        args.ranks, args.reps, args.seconds = [2], [7], 0.1
        args.stacks, args.n, args.epochs, args.width, args.train_per_class = ["openmpi:1"], 2, 1, 4, 60
    if args.part in ("sampling", "both"):
        sampling_part(args)
    if args.part in ("training", "both"):
        training_part(args)


if __name__ == "__main__":
    main()
