"""Helpers for tests: run hpccl and real `mpirun` processes, write small job files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mpirun_cmd(np: int, args: list[str]) -> list[str]:
    """`mpirun -np N python -m hpccl ARGS...`, with the same flags `hpccl run -n` uses."""
    from hpccl.core.launch import mpirun_command
    return mpirun_command(np, args)


def run_cmd(cmd, timeout=300, env=None, cwd=None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd or ROOT)


def hpccl_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "hpccl", *args]


# A small run of each kind: (job file, overrides, ranks).
SMALL_RUNS = {
    "continual": ("jobs/quickstart.yaml", ["train.epochs=1", "scenario.num_tasks=2"], 2),
    "megabatch": ("jobs/alma_digits.yaml", ["scenario.num_megabatches=4", "train.epochs=2"], 2),
    "erm": ("jobs/erm_breast_cancer.yaml", ["erm.epochs=3"], 2),
    "online_rnn": ("jobs/rnn_digits.yaml", ["rnn.num_sequences=20", "rnn.eval_every=10"], 2),
}


def hpccl_runs(runs: dict, timeout=300, env=None) -> dict:
    """Real ``hpccl run``s side by side, {name: (job file, overrides, ranks, run dir)}; waits
    for them all (most of a small run is starting MPI and Python) and asserts each succeeded.
    {name: run dir}."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    procs = {}
    for name, (job, sets, ranks, out) in runs.items():
        args = ["run", job, "-n", str(ranks), "--out", str(out)] + [a for s in sets for a in ("--set", s)]
        procs[name] = subprocess.Popen(hpccl_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, env=full_env, cwd=ROOT)
    for name, p in procs.items():
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, f"{name}: {out}"
    return {name: str(spec[3]) for name, spec in runs.items()}


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


# -- MPI stacks --------------------------------------------------------------------------------
# The families production sites run, each on one machine: OpenMPI's shared-memory components,
# OpenMPI over UCX's TCP transport for both two-sided and one-sided traffic (a network where
# a get needs the target's CPU, as on any fabric without RDMA), and MPICH (ch4:ucx, like
# Cray MPICH) from its own environment, .venv-mpich (scripts/setup.sh).
UCX_TCP = {"OMPI_MCA_pml": "ucx", "OMPI_MCA_pml_ucx_tls": "any", "OMPI_MCA_pml_ucx_devices": "any",
           "OMPI_MCA_osc_ucx_tls": "any", "OMPI_MCA_osc_ucx_devices": "any", "UCX_TLS": "tcp,self"}
MPICH_PYTHON = os.path.join(ROOT, ".venv-mpich", "bin", "python")


class MpiStack:
    def __init__(self, name, python, env, launcher):
        self.name, self.python, self.env, self._launcher = name, python, env, launcher

    def launch(self, np_: int, args: list[str]) -> list[str]:
        """``LAUNCHER -n NP PYTHON ARGS...``"""
        return self._launcher(np_) + [self.python, *args]

    def hpccl(self, *args) -> list[str]:
        """``PYTHON -m hpccl ARGS`` with this stack's Python (``-n N`` relaunches under its MPI)."""
        return [self.python, "-m", "hpccl", *args]


def mpi_stack(name: str, ranks_per_node=None) -> MpiStack:
    """``openmpi`` (shared memory), ``openmpi-ucx`` or ``mpich``. Over UCX, windows served by
    OpenMPI's shared-memory component (every rank of the job on one machine) would skip the
    network: with one rank per node only osc/ucx is allowed."""
    from hpccl.core.launch import mpirun_prefix
    if name == "openmpi":
        return MpiStack(name, sys.executable, {}, mpirun_prefix)
    if name == "openmpi-ucx":
        env = dict(UCX_TCP, OMPI_MCA_osc="ucx" if ranks_per_node == 1 else "ucx,sm")
        return MpiStack(name, sys.executable, env, mpirun_prefix)
    if name == "mpich":
        return MpiStack(name, MPICH_PYTHON, {"HPCCL_MPIRUN": "mpiexec.mpich"},
                        lambda np_: ["mpiexec.mpich", "-n", str(np_)])
    raise ValueError(name)


def interrupted_run(job, out, np_, marker, timeout=240, sig=None):
    """Start `hpccl run`, send ``sig`` to it once `marker` is printed; returns its exit code."""
    proc = subprocess.Popen(hpccl_cmd("run", job, "-n", str(np_), "--out", str(out)), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                proc.send_signal(signal.SIGUSR1 if sig is None else sig)
                break
        rest, _ = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        raise
    return proc.returncode, "".join(lines) + rest


def near_ranks(mode: str, size: int) -> list[int]:
    """The readers that share rank 0's node in buffer_worker.py's MODE (loads under the
    seqlock); the others read its records through the transport (gets or messages)."""
    layout = mode.partition("+")[0]
    return {"shared": list(range(1, size)), "remote": [], "pairs": [1]}[layout]


def assert_torn_records_are_waited_for_then_given_up(infos, mode=None, near=None):
    """The 'retry' scenario of buffer_worker.py: rank 0's record 3 torn on purpose (half
    written; mixed bytes under an even sequence number; a whole write between a same-node
    reader's two fences; half written for good with a 0.5 s give-up time). Each reader must
    meet it torn, re-read it, and return the sample as the finished write left it, or fail
    with hpccl's error once it gave up. ``near``: the readers on rank 0's node, where the
    layout is not one of the worker's MODEs (real hosts); else they follow from ``mode``."""
    near = near if near is not None else near_ranks(mode, len(infos))
    assert [i["rank"] for i in infos[1:] if i["near"]] == near, infos
    assert sorted(infos[0]["met"]) == [[r, True] for r in range(1, len(infos))], infos[0]

    def whole_and_new(read, value, info):
        assert "error" not in read, info
        assert read["torn_rounds"] >= 1, info           # met it torn and read it again
        assert read["n"] == 8 * len(infos) and read["whole"] and read["others_ok"], info
        assert read["record_3"] == value, info          # what the finished write left

    for info in infos[1:]:
        whole_and_new(info["odd"], 1003.0, info)
        if info["near"]:
            assert "mixed" not in info and info["moved"]["straddled"], info
            whole_and_new(info["moved"], float(info["moved"]["write"]), info)
        else:           # only the hash can tell: the sequence number is even and unchanged
            whole_and_new(info["mixed"], 2003.0, info)
            assert "moved" not in info, info
        give_up = info["give-up"]
        assert "records [3] of ranks [0] were still torn or unwritten after 0.5 s of reading; " \
               "their owner seems stuck inside a write" in give_up.get("error", ""), info
        assert give_up["seconds"] > 0.5 and give_up["torn_rounds"] >= 1, info
    far = [r for r in range(1, len(infos)) if r not in near]
    if far:
        assert sorted(infos[0]["met_mixed"]) == [[r, True] for r in far], infos[0]
