"""hpccl across real hosts: the rehearsal quickstart and ``hpccl check`` on 3 hosts x 2 ranks
and 3 x 1, under every MPI stack with every gradient backend, launched the way a user without
a scheduler does (a host list and ssh).

Each run either completes with the quickstart's accuracy on 3 nodes, or is refused before
training with one paragraph naming the cause and the fix: no traceback, no hang.

- The rehearsal buffer's transport: every link here is TCP, where a get waits for its
  owner's CPU, so ``rehearsal.transport: auto`` picks messages (and says why); the runs with
  the mpi backend ask for RMA. OpenMPI over plain TCP (ob1) cannot create a window across
  nodes at all: an explicit ``rma`` is refused there with the hint to use messages.
- MPICH with Horovod: the Horovod in the environment was built against OpenMPI (setup builds
  one Horovod); loading it into an MPICH process would abort inside MPI, so it is refused.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from cluster_helpers import STACKS, run_on_cluster, write_quickstart

BACKENDS = ("horovod", "torch", "mpi")


def expected_refusal(stack: str, backend: str) -> str | None:
    if stack == "mpich" and backend == "horovod":
        return "built against libmpi.so.40 while this process runs libmpich.so.12"
    return None


def assert_clean_refusal(r, why: str):
    assert r.returncode != 0, r.stdout
    text = r.stdout + r.stderr
    assert why in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "task 0 epoch" not in r.stdout      # refused before training


@pytest.mark.parametrize("per_host", [2, 1], ids=["3x2", "3x1"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stack", STACKS)
def test_quickstart_across_hosts(testbed, shared, stack, backend, per_host):
    # Every link here is TCP, where 'auto' picks the message transport; with the mpi backend
    # the runs ask for RMA, so both transports cross hosts (not on ob1, which has no RMA).
    transport = "rma" if backend == "mpi" and stack != "openmpi-tcp" else "auto"
    job = write_quickstart(shared / "job.yaml", **{"runtime.backend": backend, "rehearsal.transport": transport})
    out = shared / "run"
    r = run_on_cluster(testbed, stack, per_host, ["-m", "hpccl", "run", job, "--out", str(out)],
                       env={"HPCCL_DATA_CACHE": str(shared.parent / "data")})
    why = expected_refusal(stack, backend)
    if why:
        assert_clean_refusal(r, why)
        return
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert f"{3 * per_host} rank(s) on 3 node(s)" in r.stdout
    from hpccl.core.logs import read_h5
    attrs = read_h5(str(out / "log.h5"))["attrs"]
    assert json.loads(attrs["hostnames"]) == [h for h in testbed.names for _ in range(per_host)]
    assert attrs["status"] == "complete" and attrs["backend"] == backend
    summary = json.loads(subprocess.run([sys.executable, "-m", "hpccl", "analyze", str(out), "--format",
                                         "json"], capture_output=True, text=True, check=True).stdout)
    # the quickstart's accuracy (90 % on 4 local ranks; 89.7-90.6 % measured here)
    assert summary["final_average_accuracy"] > 0.85, summary["final_average_accuracy"]
    # auto: Horovod's background thread keeps every rank inside MPI, so a get completes while
    # the main thread is busy: RMA; otherwise a get over TCP waits for its owner: messages
    if transport == "auto":
        transport = "rma" if backend == "horovod" and stack == "openmpi-ucx" else "messages"
    assert f"hpccl: rehearsal transport: {transport}" in r.stderr, r.stderr[-3000:]
    assert {b["buffer_transport"] for b in summary["buffer"]} == {transport}
    assert all(b["buffer_remote_ops"] > 0 for b in summary["buffer"]), summary["buffer"]


def test_rma_where_the_network_cannot_serve_it_is_refused_with_the_alternative(testbed, shared):
    """Open MPI's ob1 over TCP has no one-sided component for a multi-threaded process across
    nodes: 'rehearsal.transport: rma' is refused before training, naming 'messages'."""
    job = write_quickstart(shared / "job.yaml", **{"runtime.backend": "torch", "rehearsal.transport": "rma"})
    r = run_on_cluster(testbed, "openmpi-tcp", 1, ["-m", "hpccl", "run", job, "--out", str(shared / "run")],
                       env={"HPCCL_DATA_CACHE": str(shared.parent / "data")})
    assert_clean_refusal(r, "could not create the rehearsal buffer's RMA window across nodes")
    assert "rehearsal.transport: messages" in r.stderr + r.stdout


@pytest.mark.parametrize("per_host", [2, 1], ids=["3x2", "3x1"])
@pytest.mark.parametrize("stack", STACKS)
def test_check_across_hosts(testbed, shared, stack, per_host):
    """``hpccl check`` with the default backend: every row as the run above found it."""
    job = write_quickstart(shared / "job.yaml")
    r = run_on_cluster(testbed, stack, per_host, ["-m", "hpccl", "check", job],
                       env={"HPCCL_DATA_CACHE": str(shared.parent / "data")}, timeout=200)
    text = r.stdout + r.stderr
    assert "Traceback" not in text, text[-3000:]
    assert f"{3 * per_host} rank(s) on 3 host(s)" in r.stdout, text[-3000:]
    assert row(r.stdout, "thread level")[0] == "ok"
    status, windows = row(r.stdout, "windows")
    assert status == "ok" and "3 node(s)" in windows
    # auto over TCP: the window is created (not on ob1), a get waits for its owner: messages
    assert f"; {'shared-memory window + ' if per_host > 1 else ''}messages across nodes; transport messages (auto: " \
        in windows, windows
    why = "could not create an RMA window" if stack == "openmpi-tcp" else "a get waited for its owner"
    assert why in windows, windows
    status, busy = row(r.stdout, "busy owner")
    assert status == "ok" and "by messages" in busy, busy
    status, horovod = row(r.stdout, "horovod")
    if stack == "mpich":
        assert status == "FAIL" and "libmpich.so.12" in horovod and r.returncode == 2
    else:
        assert status == "ok" and r.returncode == 0, text[-3000:]


def row(table: str, check: str) -> tuple[str, str]:
    """(status, detail) of one row of ``hpccl check``'s table."""
    m = re.search(rf"^  {check}\s+(ok|FAIL|warn|skipped)\s+(.*)$", table, re.M)
    assert m, f"no row {check!r} in:\n{table}"
    return m.group(1), m.group(2)


def test_osc_ucx_alone_is_refused_in_one_paragraph(testbed, shared):
    """Open MPI with only osc/ucx cannot make the node's shared-memory window (MPI_ERR_INTERN
    from Win.Allocate_shared): one paragraph that names the setting, not a traceback."""
    job = write_quickstart(shared / "job.yaml", **{"runtime.backend": "torch"})
    r = run_on_cluster(testbed, "openmpi-ucx", 2, ["-m", "hpccl", "run", job, "--out",
                                                   str(shared / "run")],
                       env={"HPCCL_DATA_CACHE": str(shared.parent / "data"), "OMPI_MCA_osc": "ucx"})
    assert_clean_refusal(r, "could not create the rehearsal buffer's shared-memory window")
    assert "OMPI_MCA_osc=ucx,sm" in r.stderr


@pytest.mark.parametrize("yield_when_idle", [None, "1"], ids=["polling", "yielding"])
def test_polling_on_shared_cores_is_named_with_its_fix(testbed, shared, yield_when_idle):
    """6 ranks on this machine's cores, 2 per host as Open MPI sees it: without the yield it
    polls on cores it shares with 4 more ranks than it knows of, and rank 0 says so, once;
    torch threads are split by the ranks that really share the cores (1 each here)."""
    job = write_quickstart(shared / "job.yaml", **{"runtime.backend": "torch", "train.epochs": 1,
                                                   "runtime.threads_per_rank": None})
    probe = ("import torch, sys; from hpccl.core.runtime import init_world, core_sharers; "
             "from hpccl.config import RuntimeConfig; w = init_world(RuntimeConfig(backend='mpi')); "
             f"open('{shared}/threads-%d' % w.rank, 'w').write("
             "'%d %d' % (torch.get_num_threads(), core_sharers(w.comm)))")
    r = run_on_cluster(testbed, "openmpi-ucx", 2, ["-c", probe],
                       env={"OMPI_MCA_mpi_yield_when_idle": yield_when_idle})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    cores = len(os.sched_getaffinity(0))
    # (one file per rank: lines that 6 ranks print through mpirun can interleave)
    rows = [(shared / f"threads-{rank}").read_text().split() for rank in range(6)]
    assert all(int(t) == max(1, cores // 6) and int(n) == 6 for t, n in rows), rows
    warned = r.stderr.count("Open MPI's waits poll without yielding")
    assert warned == (1 if yield_when_idle is None and cores < 6 else 0), r.stderr[-3000:]
    if warned:
        assert "export OMPI_MCA_mpi_yield_when_idle=1" in r.stderr
