"""What a rank learns from the environment it was started in: the number of ranks must be the
one asked for, whatever a parent process or a mismatched launcher left behind.

Two ways a multi-rank run used to become N one-rank runs, exit 0, all writing the same files:
- the process that starts ``hpccl run -n N`` had initialised MPI itself (a notebook or script
  that imported mpi4py: Open MPI's singleton init exports OMPI_MCA_ess=singleton and PMIX_*);
- a launcher of another MPI than mpi4py's started the ranks (MPICH's mpiexec with an Open MPI
  mpi4py, or the other way round).
"""

import glob
import os
import subprocess
import sys

import pytest

from hpccl.core.launch import singleton_leftovers, under_mpi_launch
from hpccl.core.logs import read_h5

from helpers import MPICH_PYTHON, ROOT, write_job

SMALL = {"scenario": {"num_tasks": 2}, "train": {"epochs": 1, "batch_size": 32, "lr": 0.05}}


def _ranks_written(run_dir):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(run_dir, "ranks", "*.h5")))


def test_hpccl_run_started_by_a_process_that_initialised_mpi_runs_on_every_rank(tmp_path):
    """The parent initialises MPI as a singleton, then starts `hpccl run -n 2` the plain way
    (subprocess, inheriting its environment as the C library holds it)."""
    job = write_job(tmp_path / "job.yaml", **SMALL)
    out = tmp_path / "run"
    parent = (
        "import os, subprocess, sys\n"
        "from mpi4py import MPI\n"
        "assert MPI.COMM_WORLD.Get_size() == 1\n"
        # the precondition of the bug: the child sees the singleton's variables
        "env = subprocess.run(['env'], capture_output=True, text=True).stdout\n"
        "assert 'OMPI_MCA_ess=singleton' in env and 'PMIX_RANK=0' in env, env\n"
        f"r = subprocess.run([sys.executable, '-m', 'hpccl', 'run', {job!r}, '-n', '2', '--out', {str(out)!r}],"
        " capture_output=True, text=True, timeout=240)\n"
        "print(r.stdout, r.stderr)\n"
        "sys.exit(r.returncode)\n")
    r = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "launching 2 ranks" in r.stdout
    assert _ranks_written(out) == ["rank00000.h5", "rank00001.h5"], r.stdout
    assert read_h5(str(out / "log.h5"))["attrs"]["world_size"] == 2


@pytest.mark.parametrize("launcher, python, size_var", [
    (["mpiexec.mpich", "-n", "2"], sys.executable, "PMI_SIZE"),     # MPICH's launcher, Open MPI's mpi4py
    (["mpirun", "--oversubscribe", "--allow-run-as-root", "-np", "2"], MPICH_PYTHON,
     "OMPI_COMM_WORLD_SIZE"),                                        # the other way round
], ids=["mpich-launcher-openmpi-library", "openmpi-launcher-mpich-library"])
def test_a_launcher_of_another_mpi_is_refused_before_anything_is_written(tmp_path, launcher, python, size_var):
    job = write_job(tmp_path / "job.yaml", **SMALL)
    out = tmp_path / "run"
    r = subprocess.run(launcher + [python, "-m", "hpccl", "run", job, "--out", str(out)],
                       capture_output=True, text=True, timeout=240, cwd=ROOT)
    text = r.stdout + r.stderr
    assert r.returncode != 0, text
    assert f"the launcher started 2 ranks (environment variable {size_var}=2) but MPI here sees a world of 1" in text
    assert "Traceback" not in text
    assert not os.path.exists(out / "log.h5") and _ranks_written(out) == [], os.listdir(out)


def test_singleton_leftovers_are_told_from_a_launch():
    leftovers = {"OMPI_MCA_ess": "singleton", "PMIX_RANK": "0", "PMIX_NAMESPACE": "1",
                 "OMPI_APP_CTX_NUM_PROCS": "1", "PATH": "/usr/bin", "OMPI_MCA_btl": "self,tcp"}
    assert singleton_leftovers(leftovers) == ["OMPI_APP_CTX_NUM_PROCS", "OMPI_MCA_ess", "PMIX_NAMESPACE", "PMIX_RANK"]
    assert not under_mpi_launch(leftovers)
    # a rank that mpirun started has OMPI_COMM_WORLD_SIZE: nothing of its own is dropped
    launched = dict(leftovers, OMPI_COMM_WORLD_SIZE="2")
    assert singleton_leftovers(launched) == [] and under_mpi_launch(launched)
    # srun --mpi=pmix sets PMIX_RANK without any singleton
    assert singleton_leftovers({"PMIX_RANK": "3"}) == [] and under_mpi_launch({"PMIX_RANK": "3"})
