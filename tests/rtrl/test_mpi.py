"""Two real MPI ranks: gradients are averaged and the replicas stay identical."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from helpers import ROOT, mpi_stack, run_cmd  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def test_two_ranks_average_gradients_and_stay_in_sync():
    # No skip without mpirun or mpi4py: as everywhere in the suite, a missing MPI fails here.
    cmd = mpi_stack("openmpi").launch(2, [os.path.join(HERE, "mpi_worker.py")])
    res = run_cmd(cmd, timeout=180, cwd=ROOT,
                  env={"OMP_NUM_THREADS": "1",
                       "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "MPI-RTRL OK" in res.stdout
