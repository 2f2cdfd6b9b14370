"""The MPI stacks across the test bed's hosts, and small jobs for them (imported by name)."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MPICH_PYTHON = os.path.join(ROOT, ".venv-mpich", "bin", "python")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SITES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sites")   # the test bed's site file

# Only the hosts' own interface: UCX would otherwise also offer 'lo', whose 127.0.0.1 on
# another host is that host's own loopback.
_UCX = {"UCX_TLS": "tcp,self,sm", "UCX_NET_DEVICES": "eth0"}
# The test bed's hosts share this machine's cores, but each looks to OpenMPI like a node with
# all of them: it would poll without yielding (it yields by itself only when it sees more ranks
# than cores on a node), and every waiting rank would hold a core the others need. On a real
# cluster each node's cores are its own; here the yield restores what that gives.
_OMPI_SHARED_CORES = {"OMPI_MCA_mpi_yield_when_idle": "1"}
STACK_ENV = {
    # OpenMPI over UCX's TCP transport, two-sided and one-sided (a fabric without RDMA).
    "openmpi-ucx": {**_UCX, **_OMPI_SHARED_CORES, "OMPI_MCA_pml": "ucx", "OMPI_MCA_osc": "ucx,sm",
                    "OMPI_MCA_pml_ucx_tls": "any", "OMPI_MCA_pml_ucx_devices": "any",
                    "OMPI_MCA_osc_ucx_tls": "any", "OMPI_MCA_osc_ucx_devices": "any"},
    # What OpenMPI uses on a plain Ethernet cluster: ob1 over the TCP BTL, no UCX at all.
    "openmpi-tcp": {**_OMPI_SHARED_CORES, "OMPI_MCA_pml": "ob1", "OMPI_MCA_btl": "tcp,vader,self", "OMPI_MCA_osc": "^ucx",
                    "OMPI_MCA_btl_tcp_if_include": "eth0"},
    # Debian's MPICH (ch4 over UCX), from its own environment.
    "mpich": dict(_UCX),
}
STACKS = tuple(STACK_ENV)


def python_for(stack: str) -> str:
    return MPICH_PYTHON if stack == "mpich" else sys.executable


def launch(tb, stack: str, per_host: int, argv: list[str], hosts: list[str] | None = None,
           python: str | None = None) -> list[str]:
    """The launcher command line, run on the first host, that starts ``per_host`` ranks on each
    of ``hosts`` (default: all) running ``PYTHON ARGV``: the way a user without a scheduler
    starts a multi-node job (a host list, and ssh)."""
    hosts = hosts or tb.names
    n = per_host * len(hosts)
    py = python or python_for(stack)
    if stack == "mpich":
        return ["mpiexec.mpich", "-launcher", "ssh", "-launcher-exec", tb.agent,
                "-hosts", ",".join(f"{h}:{per_host}" for h in hosts), "-n", str(n), py, *argv]
    from hpccl.core.launch import openmpi_liveness_flags     # what hpccl's own launches add
    return ["mpirun", "--allow-run-as-root", *openmpi_liveness_flags(), "--mca", "plm_rsh_agent", tb.agent,
            "--host", ",".join(f"{h}:{per_host}" for h in hosts), "-np", str(n), py, *argv]


def run_on_cluster(tb, stack: str, per_host: int, argv: list[str], timeout: float = 400,
                   hosts=None, env=None, cwd=ROOT) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **STACK_ENV[stack], **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}     # None: leave it unset
    return tb.run((hosts or tb.names)[0], launch(tb, stack, per_host, argv, hosts), timeout=timeout,
                  env=full_env, cwd=cwd)


def write_quickstart(path, **overrides) -> str:
    """jobs/quickstart.yaml with one torch thread per rank (the hosts share the machine's
    cores) and ``overrides`` as dotted keys: {'train.epochs': 3}."""
    with open(os.path.join(ROOT, "jobs", "quickstart.yaml")) as f:
        job = yaml.safe_load(f)
    job.setdefault("runtime", {})["threads_per_rank"] = 1
    job["log"] = {"dir": str(os.path.dirname(path)), "progress": "lines"}
    for key, value in overrides.items():
        node = job
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    with open(path, "w") as f:
        yaml.safe_dump(job, f)
    return str(path)
