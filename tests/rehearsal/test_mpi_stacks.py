"""The rehearsal buffer under the MPI families production sites run, with the layouts they
use: OpenMPI over UCX's TCP transport (4 nodes x 1 rank, 2 x 2) and MPICH (one node, 2 x 2),
beside OpenMPI's shared memory (test_buffer_mpi.py). Pseudo-nodes of 2 ranks put the
shared-memory and the RMA path side by side in one job.

Each stack runs the buffer's invariants (uniform draws, no torn sample, tiny buffers,
restart), ``hpccl check`` (reads complete while their owner is busy outside MPI), and the
rehearsal quickstart end to end with the torch backend (gloo, no MPI in the training loop:
the layout where lock-based RMA hung). No async-progress setting anywhere.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from hpccl.continual.rehearsal.windows import GIVE_UP_S
from hpccl.core.logs import read_h5

from helpers import (MPICH_PYTHON, ROOT, assert_torn_records_are_waited_for_then_given_up, mpi_stack,
                     run_cmd)

WORKER = os.path.join(os.path.dirname(__file__), "buffer_worker.py")

# (stack, worker mode, rehearsal.ranks_per_node)
LAYOUTS = [
    pytest.param("openmpi-ucx", "remote", 1, id="openmpi-ucx-4x1"),
    pytest.param("openmpi-ucx", "pairs", 2, id="openmpi-ucx-2x2"),
    pytest.param("openmpi", "pairs", 2, id="openmpi-sm-2x2"),
    pytest.param("mpich", "shared", None, id="mpich-1node"),
    pytest.param("mpich", "pairs", 2, id="mpich-2x2"),
    # the message transport (rehearsal.transport: messages) under each stack
    pytest.param("openmpi-ucx", "remote+messages", 1, id="openmpi-ucx-4x1-messages"),
    pytest.param("openmpi", "pairs+messages", 2, id="openmpi-sm-2x2-messages"),
    pytest.param("mpich", "pairs+messages", 2, id="mpich-2x2-messages"),
]


def stack_or_fail(name, rpn):
    if name == "mpich" and not os.path.exists(MPICH_PYTHON):
        pytest.fail(f"{MPICH_PYTHON} is missing: scripts/setup.sh builds it (HPCCL_SKIP_MPICH=1 skips)")
    return mpi_stack(name, rpn)


def run_worker(stack, scenario, mode, tmp_path, np_=4, timeout=240):
    out = tmp_path / f"{scenario}.json"
    proc = subprocess.Popen(stack.launch(np_, [WORKER, scenario, mode, str(out), str(tmp_path)]),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **stack.env))
    try:
        text, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # the ranks print every thread's stack on SIGUSR2 (buffer_worker.py): say where they wait
        subprocess.run(["pkill", "-USR2", "-f", f"{WORKER} {scenario} {mode}"])
        time.sleep(3)
        proc.kill()
        text, _ = proc.communicate()
        pytest.fail(f"{scenario} {mode} did not end in {timeout} s; the ranks' stacks:\n{text[-12000:]}")
    assert proc.returncode == 0, text
    return json.loads(out.read_text())


# Open MPI over UCX with pseudo-nodes on one machine sends the world window's gets between
# processes of one host through osc/ucx, which no real layout does (ranks of one host share
# the node window). That path hung twice in full suite runs (uniform, then torn draws; 0 of
# 30 runs alone), matching Open MPI's "osc/ucx: MPI_Win_flush sometimes hangs on intra-node"
# (open-mpi/ompi#10559). The layout's remote gets across real hosts are
# tests/cluster/test_buffer_across_hosts.py[openmpi-ucx-rma]; its torn-record and quickstart
# tests below still run here.
INVARIANT_LAYOUTS = [p for p in LAYOUTS if p.id != "openmpi-ucx-2x2"]


@pytest.mark.parametrize("name, mode, rpn", INVARIANT_LAYOUTS)
def test_buffer_invariants(tmp_path, name, mode, rpn):
    stack = stack_or_fail(name, rpn)
    res = run_worker(stack, "uniform", mode, tmp_path)
    assert res["draws"] == 4 * 1500 * 3 and res["outside"] == res["dup"] == res["wrong_label"] == 0
    assert res["p"] > 1e-3, res
    res = run_worker(stack, "torn", mode, tmp_path)
    assert res["draws"] >= 3000 * 4 and res["writes"] > 1000
    assert res["torn"] == 0 and res["bad_label"] == 0, res
    for info in run_worker(stack, "tiny", mode, tmp_path):
        # an empty draw has nothing to wait for: it returns, long before a read would give up
        assert info["empty"] == 0 and info["empty_s"] < GIVE_UP_S / 4
        assert info["sizes"] == [2] and info["contents"] == [[1.0, 2.0]]
    for info in run_worker(stack, "restart", mode, tmp_path):
        assert info["restored_equal"] and info["continued_equal"] and info["sampled"] == 10


@pytest.mark.parametrize("name, mode, rpn", LAYOUTS)
def test_torn_records_are_waited_for_then_given_up(tmp_path, name, mode, rpn):
    """Deterministic torn records on every path of the layout (buffer_worker.py 'retry'):
    same-node loads under the seqlock, and gets or messages checked by the hash."""
    stack = stack_or_fail(name, rpn)
    assert_torn_records_are_waited_for_then_given_up(run_worker(stack, "retry", mode, tmp_path), mode)


@pytest.mark.parametrize("name, mode, rpn", LAYOUTS)
def test_check_and_rehearsal_quickstart(tmp_path, name, mode, rpn):
    stack = stack_or_fail(name, rpn)
    # MPICH (Cray's family) with the gradient backend that is MPI itself; the others with torch.
    backend = "mpi" if name == "mpich" else "torch"
    transport = mode.partition("+")[2] or "auto"
    sets = ["--set", f"runtime.backend={backend}", "--set", f"rehearsal.ranks_per_node={rpn or 'null'}",
            "--set", f"rehearsal.transport={transport}"]
    # 4 s busy phases (limit 2 s): 4 ranks and their threads share 2 cores here, and a served
    # read was seen to take 1 s; a read that waits for its owner takes the whole 4 s.
    r = run_cmd(stack.hpccl("check", f"{ROOT}/jobs/quickstart.yaml", "-n", "4", *sets,
                            "--busy-seconds", "4"), timeout=120, env=stack.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "busy owner    ok" in r.stdout and "all checks passed" in r.stdout
    # auto: RMA where a get completes without its owner (Open MPI's shared memory), messages
    # where the owner's CPU must serve every get (UCX's TCP transport, MPICH between processes)
    chosen = transport if transport != "auto" else ("rma" if name == "openmpi" else "messages")
    expected = {"rma": "RMA gets", "messages": "messages"}[chosen] if rpn else "shared-memory loads"
    assert f"by {expected}" in r.stdout, r.stdout
    out = tmp_path / "run"
    r = run_cmd(stack.hpccl("run", f"{ROOT}/jobs/quickstart.yaml", "-n", "4", *sets, "--out", str(out)),
                timeout=300, env=stack.env)
    assert r.returncode == 0, r.stdout + r.stderr
    a = run_cmd([sys.executable, "-m", "hpccl", "analyze", str(out), "--format", "json"])
    summary = json.loads(a.stdout)
    assert summary["status"] == "complete" and summary["world_size"] == 4
    assert summary["final_average_accuracy"] >= 0.85, summary["final_average_accuracy"]
    assert all(b["buffer_stored"] > 0 for b in summary["buffer"])
    if rpn:     # the transport chosen is logged, and every remote read went through it
        assert f"rehearsal transport: {chosen}" in r.stderr, r.stderr
        assert {b["buffer_transport"] for b in summary["buffer"]} == {chosen}, summary["buffer"]
        assert all(b["buffer_remote_ops"] > 0 for b in summary["buffer"]), summary["buffer"]
    attrs = read_h5(str(out / "log.h5"))["attrs"]
    assert attrs["backend"] == backend
    versions = json.loads(attrs["versions"])
    assert ("MPICH" in versions["mpi_vendor"]) == (name == "mpich"), versions["mpi_vendor"]


def test_horovod_over_ucx_two_by_two(tmp_path):
    """Horovod (built against OpenMPI) with the pseudo-node layout over UCX's TCP transport."""
    stack = mpi_stack("openmpi-ucx", 2)
    out = tmp_path / "run"
    r = run_cmd(stack.hpccl("run", f"{ROOT}/jobs/quickstart.yaml", "-n", "4", "--set",
                            "runtime.backend=horovod", "--set", "rehearsal.ranks_per_node=2",
                            "--out", str(out)), timeout=300, env=stack.env)
    assert r.returncode == 0, r.stdout + r.stderr
    a = run_cmd([sys.executable, "-m", "hpccl", "analyze", str(out), "--format", "json"])
    assert json.loads(a.stdout)["final_average_accuracy"] >= 0.85


def test_check_reports_a_read_that_waits_for_a_busy_owner(tmp_path):
    """Without the rehearsal thread answering for its rank, a get over UCX's TCP transport
    waits until the busy owner re-enters MPI: exactly the hang of the old design. hpccl
    check must say so and exit 2 within its timeout, not hang. (RMA asked for: 'auto' would
    pick the message transport here, for that very reason.)"""
    stack = mpi_stack("openmpi-ucx", 2)
    r = run_cmd(stack.hpccl("check", f"{ROOT}/jobs/quickstart.yaml", "-n", "4", "--set",
                            "runtime.backend=torch", "--set", "rehearsal.ranks_per_node=2",
                            "--set", "rehearsal.transport=rma", "--busy-seconds", "3", "--timeout", "2"),
                timeout=120, env=dict(stack.env, HPCCL_REHEARSAL_PROGRESS="off"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "busy owner" in r.stdout and "FAIL" in r.stdout, r.stdout
    assert "Traceback" not in r.stderr


def test_thread_level_below_multiple_is_reported_not_hung(tmp_path):
    """MPI4PY_RC_THREAD_LEVEL=serialized stands in for Cray MPICH without
    MPICH_MAX_THREAD_SAFETY=multiple: check and run name the variable to set."""
    stack = stack_or_fail("mpich", None)
    env = dict(stack.env, MPI4PY_RC_THREAD_LEVEL="serialized")
    job = f"{ROOT}/jobs/quickstart.yaml"
    r = run_cmd(stack.hpccl("check", job, "-n", "2", "--set", "runtime.backend=torch"), timeout=120, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "thread level  FAIL" in r.stdout and "MPICH_MAX_THREAD_SAFETY=multiple" in r.stdout
    r = run_cmd(stack.hpccl("run", job, "-n", "2", "--set", "runtime.backend=torch", "--out",
                            str(tmp_path / "run")), timeout=120, env=env)
    assert r.returncode != 0
    assert "MPI_THREAD_SERIALIZED" in r.stderr and "MPICH_MAX_THREAD_SAFETY=multiple" in r.stderr
    assert "Traceback" not in r.stderr
    # synchronous rehearsal on one node uses no second thread: it runs
    r = run_cmd(stack.hpccl("run", job, "-n", "2", "--set", "runtime.backend=torch", "--set",
                            "rehearsal.async=false", "--set", "train.epochs=1", "--out",
                            str(tmp_path / "sync")), timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
