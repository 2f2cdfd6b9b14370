"""The rehearsal buffer's invariants across real hosts, with both transports under every MPI
stack of the test bed: 3 hosts x 2 ranks, ranks grouped by their real host (shared-memory
loads inside a host, the transport between hosts), the layout of a cluster.

Open MPI's ob1 over TCP cannot create an RMA window across hosts: there only the message
transport runs (its refusal of 'rma' is tested in test_across_hosts.py)."""

from __future__ import annotations

import json
import os

import pytest

from cluster_helpers import ROOT, STACKS, run_on_cluster
from helpers import assert_torn_records_are_waited_for_then_given_up

WORKER = os.path.join(ROOT, "tests", "rehearsal", "buffer_worker.py")
CASES = [(stack, transport) for stack in STACKS for transport in ("rma", "messages")
         if not (stack == "openmpi-tcp" and transport == "rma")]


@pytest.mark.parametrize("stack, transport", CASES, ids=[f"{s}-{t}" for s, t in CASES])
def test_buffer_invariants_across_hosts(testbed, shared, stack, transport):
    def run(scenario):
        out = shared / f"{scenario}.json"
        r = run_on_cluster(testbed, stack, 2, [WORKER, scenario, f"shared+{transport}", str(out), str(shared)],
                           timeout=240)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        return json.loads(out.read_text())

    res = run("uniform")
    assert res["draws"] == 6 * 1500 * 3 and res["outside"] == res["dup"] == res["wrong_label"] == 0, res
    assert res["p"] > 1e-3, res
    res = run("torn")
    assert res["draws"] >= 3000 * 6 and res["torn"] == 0 and res["bad_label"] == 0, res
    # Ranks fill the hosts in order, 2 each: rank 1 loads rank 0's records, ranks 2-5 read them
    # through the transport; both paths must meet the torn record.
    infos = run("retry")
    assert_torn_records_are_waited_for_then_given_up(infos, near=[r for r in range(1, len(infos)) if r // 2 == 0])
    for info in run("tiny"):
        assert info["empty"] == 0 and info["sizes"] == [2] and info["contents"] == [[1.0, 2.0]], info
    for info in run("restart"):
        assert info["restored_equal"] and info["continued_equal"] and info["sampled"] == 10, info
