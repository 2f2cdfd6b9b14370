"""hpccl status on a job submitted to the real localhost Slurm (conftest.py's cluster): while
the job is queued or runs, its Slurm job id and squeue's state; once it has ended, the status
and progress its log gives, next to Slurm's final state. (The other cases of hpccl status are
in tests/analysis/test_status.py.)"""

import json
import time

import pytest
import yaml

from hpccl.cli import main
from hpccl.core.errors import CorruptFileError
from hpccl.core.logs import read_h5

from sched_helpers import hpccl, write_tiny_job
from slurm_cluster import FINAL_STATES


def status_of(run, capsys) -> dict:
    assert main(["status", str(run), "--format", "json"]) == 0
    [s] = json.loads(capsys.readouterr().out)
    return s


def test_status_shows_the_slurm_job_while_it_runs_and_the_log_after(slurm, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm.client_env["SLURM_CONF"])    # for squeue
    job = write_tiny_job(tmp_path / "job.yaml", epochs=3)
    out = tmp_path / "run"
    r = hpccl("submit", job, "--site", "slurm-local", "--gpus", "1", "--out", str(out), env=slurm.client_env)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = json.loads((out / "submission.json").read_text())["job_id"]
    seen = []                    # (status, job state) while Slurm has the job
    end = time.time() + 240
    while time.time() < end:
        s = status_of(out, capsys)
        assert s["job_id"] == job_id, s
        if s["job_state"] in FINAL_STATES or slurm.job_info(job_id).get("JobState") in FINAL_STATES:
            break
        seen.append((s["status"], s["job_state"]))
        time.sleep(0.3)
    assert ("running", "RUNNING") in seen, seen
    assert {state for _, state in seen} <= {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING"}, seen
    assert {status for status, _ in seen} <= {"submitted", "running", "complete"}, seen
    assert slurm.wait_state(job_id, ["COMPLETED"], 60)
    s = status_of(out, capsys)
    try:
        log = read_h5(str(out / "log.h5"))
    except CorruptFileError as e:        # a failed job's output says why
        pytest.fail(f"{e}\n" + "".join(p.read_text() for p in out.glob("slurm-*")))
    cfg = yaml.safe_load(log["attrs"]["config_yaml"])
    tasks, epochs = cfg["scenario"]["num_tasks"], cfg["train"]["epochs"]
    assert (s["status"], s["job_id"], s["job_state"]) == (log["attrs"]["status"], job_id, "COMPLETED")
    assert s["status"] == "complete"
    assert s["progress"]["text"] == f"task {int(log['epochs/task'][-1]) + 1}/{tasks} epoch {epochs}/{epochs}"
    assert s["progress"]["done"] == len(log["epochs/task"]) == tasks * epochs
