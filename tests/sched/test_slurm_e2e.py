"""End to end through a real Slurm (slurmctld + slurmd on localhost, started by conftest.py):
hpccl submit -> sbatch -> the rendered script -> mpirun -> 2 ranks -> HDF5 logs; a job
signalled before its limit requeues itself and resumes to the same results as an
uninterrupted run; a sweep submits every point; Slurm's own refusals are shown as they are."""

import json
import os
import subprocess
import time

import numpy as np

from hpccl.analysis.report import summarize
from hpccl.core.errors import CorruptFileError
from hpccl.core.logs import read_h5

from helpers import ROOT
from sched_helpers import hpccl, resume_supported, write_tiny_job
from slurm_cluster import FINAL_STATES

QUICKSTART = os.path.join(ROOT, "jobs", "quickstart.yaml")
DONE = FINAL_STATES


def submit(slurm, *args) -> tuple[str, subprocess.CompletedProcess]:
    r = hpccl("submit", *args, env=slurm.client_env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = args[args.index("--out") + 1]
    job_id = json.load(open(os.path.join(out, "submission.json")))["job_id"]
    assert f"as job {job_id}" in r.stdout
    return job_id, r


def job_output(run_dir) -> str:
    text = []
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("slurm-") or name == "attempts.log":
            text.append(f"--- {name}\n" + open(os.path.join(run_dir, name)).read()[-4000:])
    return "\n".join(text)


def wait_done(slurm, job_id, run_dir, timeout=300) -> dict:
    """Wait for a final state. (A requeued job waits for its BeginTime first: ~2 minutes on a
    default Slurm, a few seconds on the test cluster, which sets cred_expire=5.)"""
    end = time.time() + timeout
    while time.time() < end:
        info = slurm.job_info(job_id)
        if info.get("JobState") in DONE:
            return info
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {slurm.job_info(job_id)}\n"
                         f"{job_output(run_dir)}\n{slurm.logs()}")


def test_quickstart_runs_through_slurm(slurm, tmp_path):
    out = tmp_path / "quickstart"
    job_id, _ = submit(slurm, QUICKSTART, "--site", "slurm-local", "--gpus", "2",
                       "--set", "train.epochs=1", "--out", str(out))
    info = wait_done(slurm, job_id, out)
    assert info["JobState"] == "COMPLETED", job_output(out)
    assert info["NumNodes"] == "1" and info["NumTasks"] == "2" and info["Requeue"] == "1"
    s = summarize(str(out))
    assert (s["status"], s["world_size"], s["tasks_completed"]) == ("complete", 2, 5), job_output(out)
    assert s["learner"] == "rehearsal" and s["final_average_accuracy"] >= 0.3   # chance: 0.1
    log = (out / "attempts.log").read_text()
    assert f"job {job_id}: starting" in log and "the run exited with code 0" in log
    assert (out / f"slurm-{job_id}.out").exists()


def test_signalled_job_requeues_resumes_and_matches_an_uninterrupted_run(slurm, long_job,
                                                                           reference_run, tmp_path):
    assert resume_supported(), ("`hpccl run --resume` does not exist yet: the requeued job cannot "
                                "resume (this test passes once the runner's resume lands)")
    out = tmp_path / "requeue"
    job_id, _ = submit(slurm, long_job, "--site", "slurm-local", "--gpus", "2", "--out", str(out))
    # Signal once training is under way (the runner's handlers are installed by then).
    end = time.time() + 180
    epochs = 0
    while time.time() < end and epochs < 2:
        assert slurm.job_info(job_id).get("JobState") not in DONE, job_output(out)
        try:
            epochs = len(read_h5(str(out / "log.h5"))["epochs/loss"])
        except (OSError, KeyError, CorruptFileError):     # not there yet, or mid-flush
            pass
        time.sleep(0.2)
    assert epochs >= 2, job_output(out)
    r = subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], capture_output=True, text=True,
                       env={**os.environ, **slurm.client_env})
    assert r.returncode == 0, r.stderr
    info = wait_done(slurm, job_id, out)
    log = (out / "attempts.log").read_text()
    assert info["JobState"] == "COMPLETED", job_output(out)
    assert int(info["Restarts"] if "Restarts" in info else info.get("RestartCnt", 0)) >= 1, info
    for line in ("got SIGUSR1", "the run exited with code 99", f"requeueing job {job_id}",
                 "resuming from", "the run exited with code 0"):
        assert line in log, log
    got, want = read_h5(str(out / "log.h5")), read_h5(os.path.join(reference_run, "log.h5"))
    assert got["attrs"]["status"] == "complete" and got["attrs"]["world_size"] == 2
    np.testing.assert_array_equal(got["eval/top1"], want["eval/top1"])


def test_weak_sweep_submits_every_point(slurm, tmp_path):
    job = write_tiny_job(tmp_path / "tiny.yaml")
    out = tmp_path / "sweep"
    r = hpccl("submit", job, "--site", "slurm-local", "--scaling", "weak", "--gpus", "1,2",
              "--out", str(out), env=slurm.client_env)
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    for point in manifest["points"]:
        run = out / point["run_dir"]
        info = wait_done(slurm, point["job_id"], run)
        assert info["JobState"] == "COMPLETED", job_output(run)
        s = summarize(str(run))
        assert (s["status"], s["world_size"]) == ("complete", point["gpus"])
        assert read_h5(str(run / "log.h5"))["attrs"]["lr_multiplier"] == point["lr_multiplier"]


def test_slurm_refusals_are_shown_as_they_are(slurm, tmp_path, isolated_sites):
    (isolated_sites / "slurm-local.yaml").write_text("slurm: {directives: {partition: nosuch}}\n")
    out = tmp_path / "refused"
    r = hpccl("submit", QUICKSTART, "--site", "slurm-local", "--gpus", "2", "--out", str(out),
              env={**slurm.client_env, "HPCCL_SITE_DIR": str(isolated_sites)})
    assert r.returncode == 2
    assert "the scheduler refused the job: `sbatch --parsable" in r.stderr
    assert "invalid partition specified: nosuch" in r.stderr.lower(), r.stderr


def test_a_rank_killed_without_warning_requeues_and_finishes(slurm, tmp_path):
    """One rank SIGKILLed mid-task (a node failure: no signal, no checkpoint on the way out):
    the job script sees that the run wrote a periodic checkpoint during this start, requeues,
    and the requeued job resumes from it and completes."""
    job = write_tiny_job(tmp_path / "job.yaml", epochs=3)
    with open(job, "a") as f:
        f.write("checkpoint: {every: 1}\n")
    out, marker = tmp_path / "killed", tmp_path / "killed-once"
    r = hpccl("submit", job, "--site", "slurm-local", "--gpus", "2", "--out", str(out),
              env={**slurm.client_env,
                   "HPCCL_INJECT_FAILURE": f"rank=1,task=2,epoch=1,how=sigkill,once={marker}"})
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = json.load(open(out / "submission.json"))["job_id"]
    info = wait_done(slurm, job_id, out)
    log = (out / "attempts.log").read_text()
    assert info["JobState"] == "COMPLETED" and marker.exists(), job_output(out)
    for line in ("after writing a checkpoint: continuing from it", f"requeueing job {job_id}",
                 "resuming from", "the run exited with code 0"):
        assert line in log, log
    got = read_h5(str(out / "log.h5"))
    assert got["attrs"]["status"] == "complete" and len(got["resumes/task"]) == 1
    assert got["resumes/task"][0] == 2 and len(got["epochs/loss"]) == 5 * 3   # no epoch twice


def test_a_job_killed_mid_checkpoint_swap_requeues_and_resumes_from_the_new_checkpoint(slurm, tmp_path):
    """Rank 0 SIGKILLed between the renames of a checkpoint swap (the previous checkpoint moved
    aside, the new one not yet in place): the script finishes the swap, requeues, and the
    requeued job resumes from the new checkpoint instead of starting from the beginning."""
    job = write_tiny_job(tmp_path / "job.yaml", epochs=3)
    with open(job, "a") as f:
        f.write("checkpoint: {every: 1}\n")
    out, marker = tmp_path / "swap", tmp_path / "killed-once"
    r = hpccl("submit", job, "--site", "slurm-local", "--gpus", "2", "--out", str(out),
              env={**slurm.client_env, "HPCCL_INJECT_SWAP_KILL": str(marker)})
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = json.load(open(out / "submission.json"))["job_id"]
    info = wait_done(slurm, job_id, out)
    log = (out / "attempts.log").read_text()
    assert info["JobState"] == "COMPLETED" and marker.exists(), job_output(out)
    killed = json.loads(marker.read_text())      # the checkpoint whose swap was cut short
    for line in ("after writing a checkpoint: continuing from it", f"requeueing job {job_id}",
                 "resuming from", "the run exited with code 0"):
        assert line in log, log
    assert not (out / "attempts").exists(), log        # nothing was moved aside as a failed start
    output = "".join(p.read_text() for p in out.glob("slurm-*"))
    assert f"resuming {out} at task {killed['task']}" in output, output
    got = read_h5(str(out / "log.h5"))
    assert got["attrs"]["status"] == "complete" and len(got["resumes/task"]) == 1
    assert len(got["epochs/loss"]) == 5 * 3
