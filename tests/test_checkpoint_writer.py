"""The checkpoint writer: training stalls only for the copy, a checkpoint becomes the one
resumed only once every rank has written its files, and a rank that cannot write ends the
job with the previous checkpoint intact. Real MPI ranks, real files; the commit's
non-blocking barrier under every MPI stack the project supports."""

import json
import os
import sys

import pytest
import torch

from hpccl.core.launch import mpirun_prefix

from helpers import MPICH_PYTHON, mpi_stack, run_cmd

WORKER = os.path.join(os.path.dirname(__file__), "checkpoint_worker.py")


@pytest.mark.parametrize("stack", ["openmpi", "openmpi-ucx", "mpich"])
def test_commit_waits_for_the_slowest_rank_and_the_stall_is_only_the_copy(tmp_path, stack):
    if stack == "mpich" and not os.path.exists(MPICH_PYTHON):
        pytest.fail(f"{MPICH_PYTHON} is missing: scripts/setup.sh builds it")
    s = mpi_stack(stack, ranks_per_node=1)
    r = run_cmd(s.launch(2, [WORKER, "slow", str(tmp_path)]), timeout=240, env=s.env)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    rank1 = json.loads((tmp_path / "rank1-done").read_text())
    # Rank 1's file could only be finished once rank 0 was back from save(): rank 0 did not
    # wait for it. (An order of events, not a time limit, so a loaded machine cannot fail it.)
    assert rank1["rank0_was_back"], "rank 0's save() waited for rank 1's files"
    assert 0 < result["stall"] <= result["save_s"]
    assert result["appeared"] is not None and result["appeared"] >= rank1["at"]
    ckpt = tmp_path / "checkpoint"
    assert sorted(os.listdir(ckpt)) == ["model.pt", "rank00000.pt", "rank00001.pt", "slow.txt", "state.json"]
    state = json.loads((ckpt / "state.json").read_text())
    assert state["task"] == 1 and state["world_size"] == 2
    model = torch.load(ckpt / "model.pt", weights_only=False)
    assert torch.equal(model["model"]["w"], torch.ones(1000))   # the state at save, not after
    assert not [p for p in os.listdir(tmp_path) if p.startswith("checkpoint.new")]


def test_a_rank_that_cannot_write_ends_the_job_and_the_previous_checkpoint_stays(tmp_path):
    r = run_cmd(mpirun_prefix(2) + [sys.executable, WORKER, "fail", str(tmp_path)], timeout=120)
    assert r.returncode != 0
    assert "rank 1 could not write its checkpoint files" in r.stderr and "No space left" in r.stderr
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["task"] == 1                          # the second checkpoint never committed
