#!/usr/bin/env python
"""Checkpoint cost and recovery accuracy, on a job (default: jobs/quickstart.yaml).

--part stall     the job three times on N ranks: checkpoints off (baseline), one checkpoint
                 every epoch written asynchronously (default) and synchronously. Printed: the
                 stall per checkpoint (median, rank 0: training waits this long), the
                 background write, the checkpoint size per rank, the training time against
                 the baseline of the same run, and the stall as a share of training time at
                 the default interval (30 min) and at 'every: task'.
--part recovery  final average accuracy of: an uninterrupted run on N ranks; a run with one
                 rank SIGKILLed mid-task (periodic checkpoints every epoch) resumed on N
                 ranks; a copy of the same killed run resumed on N/2 ranks (both resumes
                 start from one state, so they differ only in the ranks).

    python benchmarks/checkpoint_bench.py --part stall [-n 4] [--set model.hidden=[1024,1024]]
    python benchmarks/checkpoint_bench.py --part recovery [-n 4]
    python benchmarks/checkpoint_bench.py --part stall|recovery --smoke   # seconds: the test suite
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hpccl.core.logs import read_h5  # noqa: E402


def hpccl(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpccl", *args], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})


def run(job, ranks, out, sets, env=None, expect=0) -> dict:
    args = ["run", job, "-n", str(ranks), "--out", out]
    for s in sets:
        args += ["--set", s]
    done = hpccl(*args, env=env)
    if expect is not None and done.returncode != expect:
        sys.exit(f"benchmark run failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return read_h5(os.path.join(out, "log.h5"))


def checkpoint_sizes(path, ranks) -> tuple[float, float]:
    """MiB written by rank 0 (its files, the model and state.json) and by each other rank (mean)."""
    size = {name: os.path.getsize(os.path.join(path, name)) for name in os.listdir(path)}
    mine = [n for n in size if n.endswith(f"{0:05d}.pt") or n.endswith(f"{0:05d}.h5")]
    rank0 = sum(size[n] for n in mine) + size.get("model.pt", 0) + size.get("state.json", 0)
    others = (sum(size.values()) - rank0) / max(ranks - 1, 1)
    return rank0 / 2**20, others / 2**20


def stall(args, tmp) -> None:
    base = run(args.job, args.ranks, os.path.join(tmp, "off"), args.set + ["checkpoint.every=off"])
    rows = []
    for mode in ("true", "false"):
        out = os.path.join(tmp, f"async-{mode}")
        log = run(args.job, args.ranks, out, args.set + ["checkpoint.every=1", f"checkpoint.async={mode}"])
        stalls = log["checkpoints/stall_s"]
        rows.append((mode, log, stalls, out))
    t_base = float(base["attrs"]["train_time_s"])
    tasks = len(base["tasks/index"])
    print(f"{args.job} on {args.ranks} ranks {' '.join(args.set)}; baseline (no checkpoints) "
          f"training time {t_base:.2f} s")
    print(f"{'write':6} {'checkpoints':>11} {'stall ms (median)':>18} {'write ms (median)':>18} "
          f"{'train time x baseline':>22} {'MiB rank 0':>11} {'MiB other ranks':>16}")
    for mode, log, stalls, out in rows:
        rank0, others = checkpoint_sizes(os.path.join(out, "checkpoint"), args.ranks)
        print(f"{'async' if mode == 'true' else 'sync':6} {len(stalls):11d} "
              f"{statistics.median(stalls) * 1e3:18.2f} {statistics.median(log['checkpoints/write_s']) * 1e3:18.2f} "
              f"{float(log['attrs']['train_time_s']) / t_base:22.3f} {rank0:11.3f} {others:16.3f}")
    async_stall = statistics.median(rows[0][2])
    print(f"stall share of training time (async): at the default 30 min {async_stall / 1800 * 100:.4f}%; "
          f"at 'every: task' ({tasks - 1} checkpoints) {async_stall * (tasks - 1) / t_base * 100:.2f}%")
    print(f"stall async / sync: {async_stall / statistics.median(rows[1][2]):.3f}")


def recovery(args, tmp) -> None:
    half = max(1, args.ranks // 2)
    full = run(args.job, args.ranks, os.path.join(tmp, "full"), args.set)
    results = [(f"uninterrupted, {args.ranks} ranks", full)]
    killed = os.path.join(tmp, "killed")
    kill = {"HPCCL_INJECT_FAILURE": f"rank={args.ranks - 1},task={args.kill_task},epoch={args.kill_epoch},how=sigkill"}
    run(args.job, args.ranks, killed, args.set + ["checkpoint.every=1"], env=kill, expect=None)
    for resume_on in (args.ranks, half):
        out = os.path.join(tmp, f"killed-{resume_on}")
        shutil.copytree(killed, out)
        done = hpccl("run", "--resume", out, "-n", str(resume_on))
        if done.returncode != 0:
            sys.exit(f"resume failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        results.append((f"rank {args.ranks - 1} SIGKILLed in task {args.kill_task}, resumed on {resume_on}",
                        read_h5(os.path.join(out, "log.h5"))))
    print(f"{args.job}: final average accuracy")
    for name, log in results:
        top1 = log["eval/top1"]
        print(f"  {name:55} {top1[-1].mean() * 100:6.2f}%   status {log['attrs']['status']}")


def run_or_exit(fn, args):
    with tempfile.TemporaryDirectory(prefix="hpccl-ckpt-bench-") as tmp:
        fn(args, tmp)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("stall", "recovery"), required=True)
    p.add_argument("--job", default="jobs/quickstart.yaml")
    p.add_argument("-n", "--ranks", type=int, default=None, help="default 4 (--smoke: 2)")
    p.add_argument("--set", action="append", default=[], help="job overrides, as for hpccl run")
    p.add_argument("--kill-task", type=int, default=2)
    p.add_argument("--kill-epoch", type=int, default=4)
    p.add_argument("--smoke", action="store_true", help="seconds: 2 ranks unless -n, 2 tasks of 2 epochs, "
                   "MLP 16, the torch backend, a rank killed in task 1 after epoch 1 (the test suite: every "
                   "run of the part, the same table)")
    args = p.parse_args()
    if args.smoke:
        args.ranks, args.kill_task, args.kill_epoch = args.ranks or 2, 1, 1
        args.set += ["scenario.num_tasks=2", "train.epochs=2", "model.hidden=[16]", "runtime.backend=torch",
                     "log.progress=off"]
    args.ranks = args.ranks or 4
    run_or_exit(stall if args.part == "stall" else recovery, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
