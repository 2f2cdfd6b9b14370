"""Helpers shared by the scheduler tests (imported by name: see conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from helpers import ROOT, hpccl_cmd, run_cmd

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def write_tiny_job(path, **train) -> str:
    """A digits job small enough for the suite: 2 ranks, CPU, one torch thread per rank."""
    job = {"name": "sched", "seed": 0, "data": {"builtin": "digits"}, "scenario": {"num_tasks": 5},
           "model": {"kind": "mlp", "hidden": [64]}, "learner": {"kind": "incremental"},
           "train": {"epochs": 1, "batch_size": 16, "lr": 0.025, "momentum": 0.5, **train},
           "runtime": {"backend": "torch", "threads_per_rank": 1},
           "log": {"dir": str(os.path.dirname(path)), "progress": "lines"}}
    with open(path, "w") as f:
        yaml.safe_dump(job, f)
    return str(path)


def resume_supported() -> bool:
    r = subprocess.run([sys.executable, "-m", "hpccl", "run", "--help"], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    return "--resume" in r.stdout


def hpccl(*args, env=None, timeout=300, cwd=None):
    return run_cmd(hpccl_cmd(*args), env=env, timeout=timeout, cwd=cwd)
