#!/usr/bin/env python
"""Ensembles on rank groups vs one data-parallel group (ALMA, ``learner.groups``).

A fixed ensemble of G members trained on every update of a mega-batch stream, on N ranks:

  one group   every member in turn, data-parallel over all N ranks (an allreduce per step)
  G groups    member i trained by group i alone (N/G ranks), the G members side by side

Same members, seeds, data and samples processed (early stopping is disabled: patience =
epochs, so every update runs all its epochs, and the training FLOPs are equal). One group
takes N/G times fewer steps of an N/G times larger global batch, at an lr scaled linearly
with its ranks (``train.lr_scaling: linear``), so the final errors differ a little. Printed: training time (slowest rank, summed over updates) of each layout, the
speed-up one-group / G-groups, training FLOPs (equal by construction) and final error.

    python benchmarks/alma_bench.py [-n 2] [--members 2] [--hidden 256,256] [--repeats 3]
    python benchmarks/alma_bench.py --smoke     # seconds: MLP 16, 2 updates x 1 epoch, once
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import yaml  # noqa: E402

from hpccl.core.launch import mpirun_command  # noqa: E402
from hpccl.core.logs import read_h5  # noqa: E402


def run(job: dict, ranks: int, out: str) -> dict:
    path = out + ".yaml"
    with open(path, "w") as f:
        yaml.safe_dump(job, f)
    cmd = mpirun_command(ranks, ["run", path, "--out", out])
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"benchmark run failed:\n{done.stdout}\n{done.stderr}")
    a = read_h5(os.path.join(out, "log.h5"))["attrs"]
    return {"train_time_s": float(a["train_time_s"]), "train_flops": float(a["train_flops"]),
            "final_error": float(a["final_error"]), "parameters": int(a["parameters"])}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--ranks", type=int, default=2)
    p.add_argument("--members", type=int, default=2, help="ensemble size = number of groups")
    p.add_argument("--hidden", default="256,256")
    p.add_argument("--megabatches", type=int, default=6)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="seconds: hidden 16, 2 updates x 1 epoch, 1 repeat "
                   "(the test suite: both layouts, the same table)")
    args = p.parse_args()
    if args.smoke:
        args.hidden, args.megabatches, args.epochs, args.repeats = "16", 2, 1, 1
    if args.ranks % args.members:
        sys.exit("--ranks must be a multiple of --members")
    job = {"name": "alma_bench", "seed": 0, "data": {"builtin": "digits"},
           "scenario": {"kind": "megabatch", "num_megabatches": args.megabatches, "wait": 1,
                        "patience": args.epochs},
           "model": {"kind": "mlp", "hidden": [int(h) for h in args.hidden.split(",")]},
           "train": {"epochs": args.epochs, "batch_size": 16, "lr": 0.02, "lr_scaling": "linear"},
           "log": {"progress": "off"}}
    layouts = {"one group": 1, f"{args.members} groups": args.members}
    results = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):       # interleaved, so drifting machine load hits both
            for name, groups in layouts.items():
                job["learner"] = {"kind": "fixed_ensemble", "size": args.members, "train": "all", "groups": groups}
                job["log"]["dir"] = tmp
                results[name].append(run(job, args.ranks, os.path.join(tmp, f"{groups}-{rep}")))
    print(f"fixed ensemble of {args.members} MLPs {args.hidden}, {args.megabatches} updates x {args.epochs} "
          f"epochs, {args.ranks} ranks; median of {args.repeats}")
    med = {}
    for name, rs in results.items():
        med[name] = statistics.median(r["train_time_s"] for r in rs)
        print(f"  {name:10s}  train time {med[name]:7.2f} s   train FLOPs {rs[0]['train_flops']:.3g}   "
              f"final error {statistics.mean(r['final_error'] for r in rs) * 100:.1f}%   "
              f"params {rs[0]['parameters']}")
    one, many = med["one group"], med[f"{args.members} groups"]
    print(f"speed-up of {args.members} groups over one group: {one / many:.2f}x")
    print(json.dumps({"ranks": args.ranks, "members": args.members, "one_group_s": one,
                      "groups_s": many, "speedup": one / many}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
