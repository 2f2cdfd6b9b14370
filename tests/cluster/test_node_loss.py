"""Node loss and partitions on the test bed (3 hosts x 2 ranks, the rehearsal quickstart with
a checkpoint every 2 epochs and runtime.hang_timeout 40 s, past the ~25 s in which Open MPI's launcher notices a silent daemon with the keepalive hpccl sets):

- node loss: every process of node3 SIGKILLed and its link taken down;
- partition: node3's link down, nothing killed (a hung switch): every TCP connection to it
  stays open and silent.

Either way the job must end within 60 s of the fault with the failure named, leave its logs
readable and marked incomplete, and ``hpccl run --resume`` on the two hosts left must continue
from the last periodic checkpoint on 4 ranks and complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from hpccl.core.logs import read_h5

from cluster_helpers import ROOT, STACK_ENV, launch, run_on_cluster, write_quickstart

FAULT_AT = "task 1 epoch 3"


def run_with_fault(tb, stack, job, out, fault):
    env = dict(os.environ, PYTHONUNBUFFERED="1", HPCCL_DATA_CACHE=str(out.parent.parent / "data"),
               **STACK_ENV[stack])
    proc = tb.popen("node1", launch(tb, stack, 2, ["-m", "hpccl", "run", job, "--out", str(out)]),
                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines, faulted = [], threading.Event()
    t_fault = [None]

    def read():       # the pipe may stay open after the launcher ends (a partitioned daemon)
        for line in proc.stdout:
            lines.append(line)
            if not faulted.is_set() and FAULT_AT in line:
                t_fault[0] = time.time()
                try:
                    tb.kill_host("node3") if fault == "kill" else tb.set_link("node3", False)
                except Exception as e:  # noqa: BLE001 - shown by the assertion below
                    lines.append(f"FAULT INJECTION FAILED: {e!r}\n")
                faulted.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert faulted.wait(240), "".join(lines)[-4000:]
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    ended_after = time.time() - t_fault[0]
    time.sleep(0.5)
    return proc.returncode, ended_after, "".join(lines)


@pytest.mark.parametrize("fault", ["kill", "partition"])
@pytest.mark.parametrize("stack", ["openmpi-ucx", "mpich"])
def test_job_ends_promptly_and_resumes_on_the_hosts_left(testbed, shared, stack, fault):
    job = write_quickstart(shared / "job.yaml", **{"runtime.backend": "torch", "train.epochs": 6,
                                                   "checkpoint": {"every": 2},
                                                   "runtime.hang_timeout": 40})
    out = shared / "run"
    try:
        rc, ended_after, text = run_with_fault(testbed, stack, job, out, fault)
    finally:
        testbed.set_link("node3", True)
    print(f"{stack} {fault}: the job ended {ended_after:.1f} s after the fault, exit {rc}")
    assert rc != 0, text[-4000:]
    assert ended_after < 60, (ended_after, text[-4000:])
    # the failure is named: by the watchdog (rank, host, the wait) or by the launcher (the lost daemon)
    named = ("longer than runtime.hang_timeout" in text and "(node" in text) or \
        "lost communication with a remote daemon" in text or "node3" in text
    assert named, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    # readable, and not complete
    log = read_h5(str(out / "log.h5"))
    assert log["attrs"]["status"] != "complete" and log["attrs"]["tasks_completed"] >= 1
    assert (out / "checkpoint" / "state.json").exists()
    # resume on the two hosts that are left: 4 ranks
    r = run_on_cluster(testbed, stack, 2, ["-m", "hpccl", "run", "--resume", str(out)],
                       hosts=["node1", "node2"], env={"HPCCL_DATA_CACHE": str(shared.parent / "data")})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "resuming on 4 ranks a checkpoint written by 6" in r.stdout + r.stderr
    log = read_h5(str(out / "log.h5"))
    assert log["attrs"]["status"] == "complete" and log["attrs"]["world_size"] == 4
    assert json.loads(log["attrs"]["hostnames"]) == ["node1", "node1", "node2", "node2"]
    assert log["attrs"]["tasks_completed"] == 5 and len(log["resumes/task"]) == 1
