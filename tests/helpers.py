"""Helpers for tests: run hpccl and real `mpirun` processes, write small job files."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mpirun_cmd(np: int, args: list[str]) -> list[str]:
    """`mpirun -np N python -m hpccl ARGS...`, with the same flags `hpccl run -n` uses."""
    from hpccl.launch import mpirun_command
    return mpirun_command(np, args)


def run_cmd(cmd, timeout=300, env=None, cwd=None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd or ROOT)


def hpccl_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "hpccl", *args]


def write_job(path, **sections) -> str:
    """A small digits job; keyword arguments replace whole sections."""
    import yaml
    job = {"name": "t", "seed": 0, "data": {"builtin": "digits"},
           "scenario": {"num_tasks": 5}, "model": {"kind": "mlp", "hidden": [64]},
           "learner": {"kind": "incremental"},
           "train": {"epochs": 2, "batch_size": 16, "lr": 0.025},
           "runtime": {"backend": "torch"}, "log": {"dir": str(os.path.dirname(path)), "progress": "lines"}}
    job.update(sections)
    with open(path, "w") as f:
        yaml.safe_dump(job, f)
    return str(path)
