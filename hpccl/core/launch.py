"""Starting ranks: detect an existing MPI launch, or re-launch ourselves under local mpirun.

Inside a launch by mpirun/mpiexec/srun (detected from the variables every launcher exports
to its ranks) ``hpccl run`` just runs. Outside one, ``-n N`` with N > 1 re-executes the same
command under the local ``mpirun`` with N ranks (oversubscribed, so a laptop or CI machine
can stand in for N GPUs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from hpccl.core.errors import HpcclError
from hpccl.core import env as hpccl_env

# Set for every rank by: OpenMPI (OMPI_*), PMIx (PMIX_RANK), MPICH/Hydra and Intel MPI
# (PMI_RANK), Cray/PALS (PALS_RANKID), Slurm's srun (SLURM_PROCID inside a job step).
_LAUNCH_VARS = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "PALS_RANKID",
                "MPI_LOCALNRANKS")


def under_mpi_launch(env=os.environ) -> bool:
    if any(v in env for v in _LAUNCH_VARS):
        return True
    return "SLURM_PROCID" in env and "SLURM_STEP_ID" in env


def launched_size(env=os.environ) -> int | None:
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PALS_SIZE", "SLURM_NTASKS"):
        if var in env:
            try:
                return int(env[var])
            except ValueError:
                pass
    return None


def mpirun_command(nprocs: int, argv: list[str], env=os.environ) -> list[str]:
    """``mpirun ... python -m hpccl ARGV`` on ``nprocs`` local ranks."""
    return mpirun_prefix(nprocs, env) + [sys.executable, "-m", "hpccl"] + argv


def mpirun_prefix(nprocs: int, env=os.environ) -> list[str]:
    """The local ``mpirun -np N`` with the flags this machine needs, before the program."""
    mpirun = shutil.which(hpccl_env.read("HPCCL_MPIRUN", env))
    if mpirun is None:
        raise HpcclError("hpccl run -n N needs 'mpirun' on PATH to start N ranks, and none was "
                         "found. HINT: run scripts/setup.sh (installs OpenMPI) or load your "
                         "site's MPI module; under a batch scheduler use srun/mpiexec instead.")
    cmd = [mpirun, "-np", str(nprocs)]
    if _is_openmpi(mpirun):
        cmd += ["--oversubscribe", *openmpi_liveness_flags()]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd += ["--allow-run-as-root"]
    return cmd


# Open MPI's mpirun learns that a node is gone only when the TCP connection to that node's
# daemon fails. A node that loses power or its link closes nothing, and with Open MPI's
# defaults (first keepalive after 300 s idle, then 9 probes 20 s apart) mpirun waits 8
# minutes, then longer still behind retransmissions once it has sent the abort: the job holds
# its allocation though every rank it can reach has ended. Probing after 10 s idle, 3 probes
# 5 s apart, mpirun ends the job ~25 s after a node goes silent (measured on the test bed:
# 22 s after a partition). A probe is one empty segment per daemon every 5-10 s.
OPENMPI_LIVENESS = {"oob_tcp_keepalive_time": "10", "oob_tcp_keepalive_intvl": "5",
                    "oob_tcp_keepalive_probes": "3"}


def openmpi_liveness_flags(env=os.environ) -> list[str]:
    """``--mca`` flags for :data:`OPENMPI_LIVENESS`, except what the environment already sets."""
    flags = []
    for key, value in OPENMPI_LIVENESS.items():
        if f"OMPI_MCA_{key}" not in env:
            flags += ["--mca", key, value]
    return flags


def _is_openmpi(mpirun: str) -> bool:
    try:
        out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30)
        return "Open MPI" in out.stdout + out.stderr or "OpenRTE" in out.stdout + out.stderr
    except (OSError, subprocess.TimeoutExpired):
        return False


def relaunch(nprocs: int, argv: list[str]) -> int:
    """Run ``hpccl <argv>`` on ``nprocs`` local ranks; returns mpirun's exit code.

    SIGUSR1 and SIGTERM sent to this process reach mpirun as SIGUSR1 (which it passes to the
    ranks), so a scheduler's warning or a plain ``kill`` makes every rank checkpoint at the
    next epoch and exit with code 99, as in a batch job. mpirun itself would end the ranks
    on SIGTERM without a checkpoint. If this process dies (even by SIGKILL), the kernel sends
    mpirun SIGTERM, which ends the ranks: no orphans.
    """
    import signal
    cmd = mpirun_command(nprocs, argv)
    env = dict(os.environ, HPCCL_RELAUNCHED="1")
    child = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)

    def forward(signum, frame):
        child.send_signal(signal.SIGUSR1)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _die_with_parent():
    """In the child before exec: ask Linux to send it SIGTERM when its parent dies."""
    try:
        import ctypes
        import signal
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):   # not Linux: the launcher's death leaves mpirun running
        pass
