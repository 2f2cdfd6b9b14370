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


# What Open MPI's singleton init (MPI_Init in a process no launcher started: a notebook or a
# script that imported mpi4py) exports with setenv() about the PMIx server it started for
# itself. A process it then starts inherits them: its PMIX_RANK looks like a launch, and an
# mpirun started with them hands ess=singleton to its ranks, so N ranks run as N one-rank
# jobs writing the same files.
_SINGLETON_MARK = ("OMPI_MCA_ess", "singleton")
_SINGLETON_VARS = ("OMPI_MCA_ess", "OMPI_MCA_orte_ess_num_procs", "OMPI_MCA_orte_launch",
                   "OMPI_MCA_orte_precondition_transports", "OMPI_MCA_pmix",
                   "OMPI_APP_CTX_NUM_PROCS", "ORTE_SCHIZO_DETECTION")


def singleton_leftovers(env=os.environ) -> list[str]:
    """The variables an MPI singleton in a parent process left in ``env`` (none when a
    launcher started this process: it sets OMPI_COMM_WORLD_SIZE)."""
    if env.get(_SINGLETON_MARK[0]) != _SINGLETON_MARK[1] or "OMPI_COMM_WORLD_SIZE" in env:
        return []
    return sorted(k for k in env if k in _SINGLETON_VARS or k.startswith("PMIX_"))


def drop_singleton_leftovers(env=os.environ) -> list[str]:
    """Remove :func:`singleton_leftovers` from ``env`` (os.environ: also from the C
    environment that MPI_Init and child processes read); returns their names."""
    names = singleton_leftovers(env)
    for name in names:
        del env[name]
    return names


def under_mpi_launch(env=os.environ) -> bool:
    if singleton_leftovers(env):
        return False
    if any(v in env for v in _LAUNCH_VARS):
        return True
    return "SLURM_PROCID" in env and "SLURM_STEP_ID" in env


def launched_size(env=os.environ) -> int | None:
    """The number of ranks the launcher says it started (see :func:`launched_size_var`)."""
    var = launched_size_var(env)
    return None if var is None else int(env[var])


def launched_size_var(env=os.environ) -> str | None:
    """The launcher's variable that holds the number of ranks it started, if any."""
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PALS_SIZE", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"):
        if env.get(var, "").isdigit():
            return var
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
