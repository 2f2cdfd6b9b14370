"""Two real MPI ranks: gradients are averaged and the replicas stay identical."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _mpirun(np_: int, script: str) -> list[str]:
    mpirun = shutil.which("mpirun")
    cmd = [mpirun, "-np", str(np_)]
    out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30)
    if "Open MPI" in out.stdout + out.stderr:
        cmd += ["--oversubscribe", "--mca", "btl_vader_single_copy_mechanism", "none"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd += ["--allow-run-as-root"]
    return cmd + [sys.executable, script]


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun on PATH")
def test_two_ranks_average_gradients_and_stay_in_sync():
    pytest.importorskip("mpi4py")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(_mpirun(2, os.path.join(HERE, "mpi_worker.py")), capture_output=True,
                         text=True, timeout=180, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "MPI-RTRL OK" in res.stdout
