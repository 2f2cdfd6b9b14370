"""End-to-end runs on real MPI ranks (oversubscribed on this machine)."""

import json
import os

import numpy as np
import pytest

from hpccl.core.logs import read_h5

from helpers import ROOT, hpccl_cmd, mpirun_cmd, run_cmd, write_job


def epochs_and_matrix(run_dir):
    log = read_h5(os.path.join(run_dir, "log.h5"))
    return log["epochs/loss"], log["eval/top1"], log


@pytest.mark.parametrize("np_", [2, 4])
def test_backends_give_the_same_losses(tmp_path, np_):
    results = {}
    for backend in ("horovod", "torch"):
        job = write_job(tmp_path / f"{backend}.yaml", runtime={"backend": backend},
                        scenario={"num_tasks": 3}, train={"epochs": 2, "batch_size": 8, "lr": 0.02})
        out = tmp_path / backend
        r = run_cmd(mpirun_cmd(np_, ["run", job, "--out", str(out)]), timeout=240)
        assert r.returncode == 0, r.stdout + r.stderr
        results[backend] = epochs_and_matrix(out)
    (loss_h, acc_h, log_h), (loss_t, acc_t, log_t) = results["horovod"], results["torch"]
    assert log_h["attrs"]["world_size"] == log_t["attrs"]["world_size"] == np_
    assert len(loss_h) == 3 * 2
    np.testing.assert_allclose(loss_h, loss_t, rtol=1e-4)
    np.testing.assert_allclose(acc_h, acc_t, atol=1e-6)
    # every rank ran the same number of iterations and logged them
    for out in ("horovod", "torch"):
        counts = {len(read_h5(str(p))["timers/total"]) for p in (tmp_path / out / "ranks").iterdir()}
        assert len(counts) == 1 and counts.pop() > 0


def test_quickstart_rehearsal_remembers_where_incremental_forgets(tmp_path):
    summaries = {}
    for learner in ("scratch", "incremental", "rehearsal"):
        out = tmp_path / learner
        r = run_cmd(hpccl_cmd("run", f"{ROOT}/jobs/quickstart.yaml", "-n", "4", "--set",
                              f"learner={learner}", "--out", str(out)), timeout=400)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "accuracy matrix" in r.stdout and f"run directory: {out}" in r.stdout
        a = run_cmd(hpccl_cmd("analyze", str(out), "--format", "json"))
        assert a.returncode == 0, a.stderr
        summaries[learner] = json.loads(a.stdout)
    scratch, inc, reh = summaries["scratch"], summaries["incremental"], summaries["rehearsal"]
    assert scratch["world_size"] == 4 and scratch["status"] == "complete"
    assert scratch["final_average_accuracy"] >= 0.90
    assert inc["final_average_accuracy"] <= scratch["final_average_accuracy"] - 0.5
    assert inc["forgetting"] >= 0.5
    # incremental still learns each task when it arrives: the diagonal is high
    assert min(np.diag(np.array(inc["accuracy_matrix"]))) >= 0.8
    for key in ("accuracy_matrix", "forgetting", "train_time_s", "samples_per_s", "timers"):
        assert key in scratch
    fractions = scratch["timers"]["mean_fractions"]
    assert set(fractions) == {"data_load", "rehearsal_wait", "forward_backward", "allreduce_step", "other"}
    assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-6)
    assert len(scratch["timers"]["per_rank"]) == 4
    # rehearsal: far above incremental, close to scratch, with a buffer on every rank
    assert reh["final_average_accuracy"] >= inc["final_average_accuracy"] + 0.5
    assert reh["final_average_accuracy"] >= scratch["final_average_accuracy"] - 0.05
    assert len(reh["buffer"]) == 4 and all(b["buffer_stored"] > 0 for b in reh["buffer"])
    assert reh["timers"]["mean_fractions"]["rehearsal_wait"] > 0
    assert scratch["buffer"] == [] and scratch["timers"]["mean_fractions"]["rehearsal_wait"] == 0


@pytest.mark.parametrize("backend, learner", [("horovod", "incremental"), ("torch", "incremental"),
                                              ("horovod", "rehearsal")])
def test_rank_failure_aborts_the_job_promptly(tmp_path, backend, learner):
    # with learner rehearsal, the failing rank's background buffer thread is running
    # Promptly: the ranks still training must learn of the failure at once. A rank left
    # waiting on rank 2 would end only at runtime.hang_timeout, set far past the timeout.
    job = write_job(tmp_path / "job.yaml", runtime={"backend": backend, "hang_timeout": "30min"},
                    learner={"kind": learner}, train={"epochs": 3, "batch_size": 8, "lr": 0.02},
                    rehearsal={"candidates": 4, "representatives": 4})
    out = tmp_path / "run"
    r = run_cmd(hpccl_cmd("run", job, "-n", "4", "--out", str(out)), timeout=240,
                env={"HPCCL_INJECT_FAILURE": "rank=2,task=1"})
    assert r.returncode != 0
    assert "rank 2 failed" in r.stderr and "injected failure on rank 2 in task 1" in r.stderr
    # what was written before the failure is still readable
    log = read_h5(str(out / "log.h5"))
    # 'failed' when rank 0 saw the error (e.g. from Horovod) before the abort reached it
    assert log["attrs"]["status"] in ("running", "failed")
    assert log["attrs"]["tasks_completed"] == 1
    assert np.isfinite(log["eval/top1"][0, 0])


def test_missing_dataset_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.h5"
    job = write_job(tmp_path / "job.yaml", data={"path": str(missing)})
    r = run_cmd(hpccl_cmd("run", job, "-n", "2"), timeout=60)
    assert r.returncode == 2
    assert str(missing) in r.stderr and "does not exist" in r.stderr and "hpccl data convert" in r.stderr
    assert "Traceback" not in r.stderr


def test_run_directory_holds_resolved_config_and_metadata(tmp_path):
    import yaml
    job = write_job(tmp_path / "job.yaml", scenario={"num_tasks": 2}, train={"epochs": 1, "batch_size": 16})
    out = tmp_path / "run"
    r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--set", "train.lr=0.03", "--out", str(out)), timeout=120)
    assert r.returncode == 0, r.stderr
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["train"]["lr"] == 0.03 and resolved["model"]["hidden"] == [64]
    log = read_h5(str(out / "log.h5"))
    attrs = log["attrs"]
    assert attrs["status"] == "complete" and attrs["world_size"] == 2
    versions = json.loads(attrs["versions"])
    assert versions["mpi_vendor"] == "Open MPI" and versions["torch"].startswith("2.")
    assert "--set train.lr=0.03" in attrs["command_line"]
    assert len(json.loads(attrs["hostnames"])) == 2
    assert attrs["lr_multiplier"] == 2.0
    assert np.allclose(log["epochs/lr"], 0.06)
    assert sorted(p.name for p in (out / "ranks").iterdir()) == ["rank00000.h5", "rank00001.h5"]
    # a second run into the same directory is refused rather than overwriting it
    again = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(out)), timeout=60)
    assert again.returncode == 2 and "already holds a run" in again.stderr


def test_single_rank_run_outside_mpi(tmp_path):
    job = write_job(tmp_path / "job.yaml", scenario={"num_tasks": 2}, train={"epochs": 1})
    r = run_cmd(hpccl_cmd("run", job, "--out", str(tmp_path / "run")), timeout=120)
    assert r.returncode == 0, r.stderr
    assert read_h5(str(tmp_path / "run" / "log.h5"))["attrs"]["world_size"] == 1


def test_rehearsal_remote_path_end_to_end_over_tcp(tmp_path):
    """Every rank its own 'node' (MPI_Get path), OpenMPI's TCP transport forced; the buffer
    shards are written to HDF5 after every task."""
    job = write_job(tmp_path / "job.yaml", learner={"kind": "rehearsal"}, scenario={"num_tasks": 3},
                    train={"epochs": 2, "batch_size": 16, "lr": 0.025},
                    rehearsal={"candidates": 8, "representatives": 8, "ranks_per_node": 1,
                               "slots_per_class": 5})
    out = tmp_path / "run"
    r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(out)), timeout=180,
                env={"OMPI_MCA_btl": "tcp,self"})
    assert r.returncode == 0, r.stdout + r.stderr
    for rank in (0, 1):
        shard = read_h5(str(out / "buffer" / f"rank{rank:05d}.h5"))
        assert shard["attrs"]["task"] == 2 and shard["attrs"]["slots_per_class"] == 5
        stored = shard["stored_per_class"]
        assert stored.sum() == len(shard["y"]) > 0 and stored.max() <= 5
    a = run_cmd(hpccl_cmd("analyze", str(out)))
    assert a.returncode == 0 and "rehearsal buffer:" in a.stdout


def test_a_run_that_ended_without_a_checkpoint_restarts_cleanly_keeping_the_old_logs(tmp_path):
    """A requeued job whose first attempt died before any checkpoint (here: a rank raised in
    task 0) starts again in the same directory; the first attempt's logs stay readable."""
    job = write_job(tmp_path / "job.yaml", scenario={"num_tasks": 2}, train={"epochs": 1, "batch_size": 16})
    out = tmp_path / "run"
    first = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(out)), timeout=120,
                    env={"HPCCL_INJECT_FAILURE": "rank=1,task=0"})
    assert first.returncode != 0
    # rank 1 aborted the job, so rank 0 was killed before it could record an end
    status = read_h5(str(out / "log.h5"))["attrs"]["status"]
    assert status in ("running", "failed")
    again = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(out)), timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"ended without a checkpoint (status {status})" in again.stderr and "attempts/1" in again.stderr
    assert read_h5(str(out / "log.h5"))["attrs"]["status"] == "complete"
    old = read_h5(str(out / "attempts" / "1" / "log.h5"))
    assert old["attrs"]["status"] == status and len(old["epochs/loss"]) == 1
    assert sorted(p.name for p in (out / "attempts" / "1" / "ranks").iterdir()) == ["rank00000.h5", "rank00001.h5"]
    hpccl_report = run_cmd(hpccl_cmd("analyze", str(out / "attempts" / "1")), timeout=60)
    assert hpccl_report.returncode == 0 and status in hpccl_report.stdout
