"""A real job killed between the renames of a checkpoint swap (rank 0 SIGKILLed after the
previous checkpoint moved aside and before the new one moved in: HPCCL_INJECT_SWAP_KILL), then
started again by its job script: it must resume from the new checkpoint, not start from the
beginning with the complete checkpoint moved aside as a failed attempt. The same under the
real Slurm, where the script requeues itself: tests/sched/test_slurm_e2e.py."""

import json
import os
import shutil
import subprocess

from hpccl.core import checkpoint
from hpccl.core.logs import read_h5

from helpers import run_cmd
from sched_helpers import hpccl, write_tiny_job


def test_a_job_killed_mid_swap_resumes_from_the_new_checkpoint(tmp_path):
    job = write_tiny_job(tmp_path / "job.yaml", epochs=3)
    with open(job, "a") as f:
        f.write("checkpoint: {every: 1}\n")
    out, marker = tmp_path / "run", tmp_path / "killed-once"
    r = hpccl("submit", job, "--site", "local", "--gpus", "2", "--dry-run", "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    env = {"HPCCL_INJECT_SWAP_KILL": str(marker), "HPCCL_SKIP_CHECK": "1"}
    first = run_cmd(["bash", str(out / "job.sh")], env=env, timeout=600)
    log = (out / "attempts.log").read_text()
    # The first commit has nothing to move aside; the second one is killed in the middle.
    assert marker.exists() and first.returncode == 99, first.stdout + first.stderr + log
    assert "the run failed" in log and "after writing a checkpoint: continuing from it" in log, log
    killed = json.loads(marker.read_text())     # the checkpoint whose swap was cut short
    # The third entry point, on a copy of the killed job's directory: what 'hpccl run --resume'
    # reads before it launches any rank finishes the swap too (a resume by hand, not by script).
    # The script already finished this swap when it looked for a checkpoint after the kill, so
    # the copy is put back as the kill left it: the last rename undone.
    by_hand = tmp_path / "resumed-by-hand"
    shutil.copytree(out, by_hand)
    assert json.loads((by_hand / "checkpoint" / "state.json").read_text()) == killed
    os.replace(by_hand / "checkpoint", by_hand / "checkpoint.new2")
    state = checkpoint.read_state(str(by_hand))
    assert (state["task"], state["epoch"]) == (killed["task"], killed["epoch"]), (state, killed)
    assert not any(name.startswith("checkpoint.new") for name in os.listdir(by_hand))
    second = run_cmd(["bash", str(out / "job.sh")], env=env, timeout=600)
    log = (out / "attempts.log").read_text()
    assert second.returncode == 0, second.stdout + second.stderr + log
    assert "resuming from" in log and not os.path.exists(out / "attempts"), log
    got = read_h5(str(out / "log.h5"))
    assert got["attrs"]["status"] == "complete"
    # Resumed from the checkpoint whose swap was cut short, not from the one before it (a
    # fresh start would not resume at all), and every epoch is logged once.
    resumed = [line for line in second.stdout.splitlines() if line.startswith(f"hpccl: resuming {out} at")]
    assert len(resumed) == 1, second.stdout
    assert resumed[0].startswith(f"hpccl: resuming {out} at task {killed['task']}")
    assert ", epoch" not in resumed[0] or resumed[0].endswith(f", epoch {killed['epoch']}"), resumed
    assert len(got["resumes/task"]) == 1
    assert len(got["epochs/loss"]) == 5 * 3
    assert not any(name.startswith("checkpoint.new") for name in os.listdir(out))
