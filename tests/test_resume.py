"""Preemption and resume: a stop signal makes every rank checkpoint at the next epoch and exit
with code 99; `hpccl run --resume` finishes the run with results equal to an uninterrupted one.

Equality is tested where a run is deterministic: multi-rank incremental and scratch, and
single-rank rehearsal. Multi-rank rehearsal is not bitwise reproducible even without
interruption: a draw sees other ranks' shards as they are at that moment.
"""

import signal
import subprocess

import numpy as np
import pytest

from hpccl.core.logs import read_h5

from helpers import ROOT, hpccl_cmd, interrupted_run, run_cmd, write_job


@pytest.mark.parametrize("learner, np_, marker", [
    ("incremental", 2, "task 1 epoch 2:"),     # mid-task: resumes at task 1, epoch 3 or later
    ("scratch", 2, "task 2 epoch 6:"),         # last epoch of a task: resumes at the next task
    ("rehearsal", 1, "task 2 epoch 2:"),       # buffer state, RNGs and prefetched samples restored
])
def test_resumed_run_equals_uninterrupted_run(tmp_path, learner, np_, marker):
    job = write_job(tmp_path / "job.yaml", learner={"kind": learner}, scenario={"num_tasks": 4},
                    train={"epochs": 6, "batch_size": 16, "lr": 0.025, "momentum": 0.5},
                    rehearsal={"candidates": 8, "representatives": 8}, runtime={"backend": "horovod"})
    full, part = tmp_path / "full", tmp_path / "part"
    r = run_cmd(hpccl_cmd("run", job, "-n", str(np_), "--out", str(full)), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    code, output = interrupted_run(job, part, np_, marker)
    assert code == 99, output
    assert "checkpoint written" in output and (part / "checkpoint" / "state.json").exists()
    assert read_h5(str(part / "log.h5"))["attrs"]["status"] == "preempted"
    r = run_cmd(hpccl_cmd("run", "--resume", str(part), "-n", str(np_)), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resuming" in r.stdout
    a, b = read_h5(str(full / "log.h5")), read_h5(str(part / "log.h5"))
    assert b["attrs"]["status"] == "complete" and len(b["resumes/task"]) == 1
    np.testing.assert_array_equal(a["eval/top1"], b["eval/top1"])
    np.testing.assert_array_equal(a["epochs/loss"], b["epochs/loss"])
    ra, rb = read_h5(str(full / "ranks" / "rank00000.h5")), read_h5(str(part / "ranks" / "rank00000.h5"))
    assert len(ra["timers/total"]) == len(rb["timers/total"])   # the timer history continues


def test_resume_errors_are_clear(tmp_path):
    r = run_cmd(hpccl_cmd("run", "--resume", str(tmp_path), "-n", "2"))
    assert r.returncode == 2 and "has no checkpoint" in r.stderr
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text('{"world_size": 4, "task": 1}')
    r = run_cmd(hpccl_cmd("run", "--resume", str(tmp_path), "-n", "2"))
    # the state names the keys it lacks (a missing config.yaml: tests/test_corrupt_state.py)
    assert r.returncode == 2 and "state.json: it lacks the key(s) 'epoch'" in r.stderr
    r = run_cmd(hpccl_cmd("run", "jobs/quickstart.yaml", "--resume", str(tmp_path)))
    assert r.returncode == 2 and "give no JOB" in r.stderr


def test_sigterm_to_the_launcher_checkpoints_like_sigusr1(tmp_path):
    job = write_job(tmp_path / "job.yaml", scenario={"num_tasks": 3}, train={"epochs": 4, "batch_size": 16})
    part = tmp_path / "part"
    code, output = interrupted_run(job, part, 2, "task 1 epoch 1:", sig=signal.SIGTERM)
    assert code == 99, output
    assert (part / "checkpoint" / "state.json").exists() and "job failed" not in output
    r = run_cmd(hpccl_cmd("run", "--resume", str(part), "-n", "2"), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr


def _processes_mentioning(text):
    import os
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_a_killed_launcher_takes_its_ranks_with_it(tmp_path):
    import time
    job = write_job(tmp_path / "job.yaml", scenario={"num_tasks": 3}, train={"epochs": 500, "batch_size": 16})
    out = tmp_path / "run"                # minutes of training: it must not end by itself
    proc = subprocess.Popen(hpccl_cmd("run", job, "-n", "2", "--out", str(out)), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if "task 0 epoch 1:" in line:
            break
    proc.kill()                       # SIGKILL: no handler runs in the launcher
    proc.wait()
    deadline = time.monotonic() + 20
    while _processes_mentioning(str(out)) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _processes_mentioning(str(out))
    assert not left, f"orphans still running 20 s after the launcher died: {left}"


def test_a_rank_killed_without_warning_resumes_from_the_last_periodic_checkpoint(tmp_path):
    """SIGKILL of one rank mid-task: the job ends promptly; `--resume` continues from the last
    periodic checkpoint (every 2 epochs), drops the epochs logged after it, and finishes with
    the results of an uninterrupted run."""
    job = write_job(tmp_path / "job.yaml", scenario={"num_tasks": 3},
                    train={"epochs": 5, "batch_size": 16, "lr": 0.025, "momentum": 0.5},
                    checkpoint={"every": 2, "keep": 2}, runtime={"backend": "torch"})
    full, part = tmp_path / "full", tmp_path / "part"
    r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(full)), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    # (ends promptly: rank 0 left waiting would end only at runtime.hang_timeout, 5 min)
    r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(part)), timeout=240,
                env={"HPCCL_INJECT_FAILURE": "rank=1,task=1,epoch=3,how=sigkill"})
    assert r.returncode != 0
    state = __import__("json").loads((part / "checkpoint" / "state.json").read_text())
    assert state["task"] == 1 and (part / "checkpoint.prev1" / "state.json").exists()
    logged = read_h5(str(part / "log.h5"))
    assert len(logged["epochs/loss"]) > state["log_rows"]["epochs/loss"]   # epochs after the checkpoint
    r = run_cmd(hpccl_cmd("run", "--resume", str(part), "-n", "2"), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    a, b = read_h5(str(full / "log.h5")), read_h5(str(part / "log.h5"))
    assert b["attrs"]["status"] == "complete"
    np.testing.assert_array_equal(a["eval/top1"], b["eval/top1"])
    np.testing.assert_array_equal(a["epochs/loss"], b["epochs/loss"])     # no epoch twice
    assert set(b["checkpoints/reason"]) == {"periodic"} and (b["checkpoints/stall_s"] > 0).all()


def test_a_rank_killed_while_writing_its_log_leaves_logs_analyze_reads_and_the_run_resumes(tmp_path):
    """SIGKILL in the middle of a log flush (the 60th column write of each rank, a few epochs
    in): `hpccl analyze` reads the logs and marks the run incomplete; `--resume` continues from
    the last periodic checkpoint and ends with every epoch logged once."""
    import h5py
    job = write_job(tmp_path / "job.yaml", scenario={"num_tasks": 3},
                    train={"epochs": 3, "batch_size": 16, "lr": 0.025, "momentum": 0.5},
                    checkpoint={"every": 1}, runtime={"backend": "torch"})
    part = tmp_path / "part"
    r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(part)), timeout=240,
                env={"HPCCL_INJECT_KILL_IN_LOG_WRITE": "60"})
    assert r.returncode != 0
    with pytest.raises(OSError):      # the writer died with the file open: only SWMR readers open it
        h5py.File(part / "log.h5", "r")
    r = run_cmd(hpccl_cmd("analyze", str(part)))
    assert r.returncode == 0, r.stderr
    assert "incomplete run (status 'running')" in r.stdout
    r = run_cmd(hpccl_cmd("run", "--resume", str(part), "-n", "2"), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    log = read_h5(str(part / "log.h5"))
    assert log["attrs"]["status"] == "complete"
    assert [(int(t), int(e)) for t, e in zip(log["epochs/task"], log["epochs/epoch"])] == \
        [(t, e) for t in range(3) for e in range(3)]
    r = run_cmd(hpccl_cmd("analyze", str(part)))
    assert r.returncode == 0 and "incomplete" not in r.stdout, r.stdout + r.stderr
