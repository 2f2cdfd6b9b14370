"""hpccl status on real runs: a sweep of two points run in the background by the local site
(complete, with their job ids), a run read while it trains (its progress advances) and then
SIGKILLed, a truncated log, a log that reads only at the second try, an empty directory, and
--watch ended by Ctrl-C. Numbers are checked against the logs as h5py reads them. The Slurm
case is tests/sched/test_status_slurm.py (it needs that directory's cluster fixture)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
import yaml

from hpccl.sched import status as status_mod
from hpccl.cli import main
from hpccl.core.logs import read_h5

from helpers import ROOT, hpccl_cmd, run_cmd, write_job

TINY = {"train": {"epochs": 1, "batch_size": 16, "lr": 0.025},
        "scenario": {"num_tasks": 2}, "runtime": {"backend": "torch", "threads_per_rank": 1}}


def status_json(capsys, *paths) -> list[dict]:
    code = main(["status", *map(str, paths), "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def expected_progress(log: dict) -> dict:
    """The continual progress as the log's own rows give it."""
    cfg = yaml.safe_load(log["attrs"]["config_yaml"])
    tasks, epochs = cfg["scenario"]["num_tasks"], cfg["train"]["epochs"]
    task, epoch = int(log["epochs/task"][-1]), int(log["epochs/epoch"][-1])
    samples, seconds = log["epochs/samples"][-5:], log["epochs/time_s"][-5:]
    return {"text": f"task {task + 1}/{tasks} epoch {epoch + 1}/{epochs}",
            "done": len(log["epochs/task"]), "total": tasks * epochs,
            "samples_per_s": pytest.approx(float(np.sum(samples) / np.sum(seconds)))}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A weak-scaling sweep (1 and 2 ranks) submitted to the local site: both points run in
    the background, as their own jobs, to the end."""
    root = tmp_path_factory.mktemp("status-sweep")
    job = write_job(root / "tiny.yaml", **TINY)
    out = root / "sweep"
    env = {"XDG_CONFIG_HOME": str(root / "xdg"), "HPCCL_SITE_DIR": str(root / "no-sites")}
    r = run_cmd(hpccl_cmd("submit", job, "--site", "local", "--scaling", "weak", "--gpus", "1,2",
                          "--out", str(out)), env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    end = time.time() + 180
    for point in manifest["points"]:
        job_id = point["job_id"]
        while status_mod.scheduler_state("none", job_id) == "RUNNING":
            assert time.time() < end, f"{job_id} still runs"
            time.sleep(0.3)
        run = out / point["run_dir"]
        assert read_h5(str(run / "log.h5"))["attrs"]["status"] == "complete", \
            (run / "job.out").read_text()[-3000:]
    return out, manifest


def test_a_sweep_lists_its_points_complete_with_their_logs_numbers_and_job_ids(sweep, capsys):
    out, manifest = sweep
    before = time.time()
    got = status_json(capsys, out)
    after = time.time()
    assert [s["run_dir"] for s in got] == [str(out / p["run_dir"]) for p in manifest["points"]]
    for s, point in zip(got, manifest["points"]):
        run = out / point["run_dir"]
        log = read_h5(str(run / "log.h5"))
        assert (s["status"], s["name"], s["kind"]) == ("complete", log["attrs"]["name"], "continual")
        want = expected_progress(log)
        assert {k: s["progress"][k] for k in want} == want
        assert s["job_id"] == point["job_id"] == json.loads((run / "submission.json").read_text())["job_id"]
        assert s["job_state"] == "ENDED"
        written = os.stat(run / "log.h5").st_mtime
        assert before - written <= s["age_s"] <= after - written
    # The directory above the sweep finds the same runs; the text table has one line per run.
    assert [dict(s, age_s=None) for s in status_json(capsys, out.parent)] == [dict(s, age_s=None) for s in got]
    assert main(["status", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 + len(got)     # time stamp, header, rule, runs
    for s, line in zip(got, lines[3:]):
        assert line.startswith(s["run_dir"]) and " complete " in line and s["progress"]["text"] in line
        assert s["job_id"] in line and line.rstrip().endswith(" ENDED")     # no note


def test_a_sweep_not_yet_submitted_shows_its_points_not_started(tmp_path, capsys, monkeypatch):
    job = write_job(tmp_path / "tiny.yaml", **TINY)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HPCCL_SITE_DIR", str(tmp_path / "no-sites"))
    assert main(["submit", job, "--site", "local", "--scaling", "weak", "--gpus", "1,2",
                 "--out", str(tmp_path / "dry"), "--dry-run"]) == 0
    capsys.readouterr()
    got = status_json(capsys, tmp_path / "dry")
    assert [(os.path.basename(s["run_dir"]), s["status"], s["job_id"]) for s in got] == \
        [("g0001", "not started", None), ("g0002", "not started", None)]


def test_a_running_run_advances_and_a_sigkilled_one_shows_killed(tmp_path, capsys):
    job = write_job(tmp_path / "long.yaml", **dict(TINY, train={**TINY["train"], "epochs": 40},
                                                   scenario={"num_tasks": 5}))
    out = tmp_path / "run"
    proc = subprocess.Popen(hpccl_cmd("run", job, "--out", str(out)), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = []
    try:
        end = time.time() + 120
        while len(set(seen)) < 3 and time.time() < end and proc.poll() is None:
            if (out / "log.h5").exists():
                [s] = status_json(capsys, out)
                assert s["status"] == "running", s
                if s["progress"]["done"]:
                    seen.append(s["progress"]["done"])
                    assert s["progress"]["eta_s"] > 0 and s["progress"]["samples_per_s"] > 0
                    # never ahead of what the log holds
                    assert s["progress"]["done"] <= len(read_h5(str(out / "log.h5"))["epochs/task"])
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before its progress was seen to advance"
        assert len(set(seen)) >= 3 and seen == sorted(seen), seen
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    [s] = status_json(capsys, out)
    log = read_h5(str(out / "log.h5"))
    assert log["attrs"]["status"] == "running"           # what the log alone would say
    assert s["status"] == "killed" and f"pid {proc.pid} " in s["note"], s
    want = expected_progress(log)
    assert {k: s["progress"][k] for k in want} == want
    assert main(["status", str(out)]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert " killed " in line and line.endswith(f" the log says running, but its rank 0 (pid {proc.pid} on "
                                                f"{socket.gethostname()}) has ended")
    assert s["progress"]["eta_s"] is None
    # Rank 0 on another node: its pid cannot be looked at, so the log's 'running' stands
    # unless the scheduler says the job has ended.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(out, elsewhere)
    lock = elsewhere / ".hpccl.lock"
    lock.write_text(lock.read_text().replace(f" on {socket.gethostname()} ", " on node-elsewhere "))
    [s] = status_json(capsys, elsewhere)
    assert (s["status"], s["note"]) == ("running", "")
    (elsewhere / "submission.json").write_text(json.dumps({"scheduler": "none", "job_id": f"local-{proc.pid}"}))
    [s] = status_json(capsys, elsewhere)
    assert (s["status"], s["job_state"]) == ("killed", "ENDED")
    assert s["note"] == f"the log says running, but its job local-{proc.pid} is ENDED"


def test_an_erm_run_shows_its_passes_and_rate_from_its_log(tmp_path, capsys):
    out = tmp_path / "erm"
    r = run_cmd(hpccl_cmd("run", "jobs/erm_breast_cancer.yaml", "--out", str(out), "--set", "erm.epochs=3"))
    assert r.returncode == 0, r.stderr
    log = read_h5(str(out / "log.h5"))
    passes, elapsed = log["stages/passes"][-1], log["stages/elapsed_s"][-1]
    [s] = status_json(capsys, out)
    assert (s["kind"], s["status"]) == ("erm", "complete")
    assert s["progress"]["text"] == f"pass {passes:.1f}/3.0 (stage {len(log['stages/stage']) - 1})"
    assert s["progress"]["done"] == passes
    assert s["progress"]["samples_per_s"] == pytest.approx(passes * int(log["attrs"]["n"]) / elapsed)


def _damaged_copy(sweep, dest):
    out, manifest = sweep
    src = out / manifest["points"][0]["run_dir"] / "log.h5"
    os.makedirs(dest)
    data = src.read_bytes()
    (dest / "log.h5").write_bytes(data[: len(data) // 2])
    return src


def test_a_truncated_log_is_one_line_with_the_reason(sweep, tmp_path, capsys):
    _damaged_copy(sweep, tmp_path / "runs" / "broken")
    shutil.copytree(sweep[0] / "g0001", tmp_path / "runs" / "good")
    got = status_json(capsys, tmp_path / "runs")
    assert [(os.path.basename(s["run_dir"]), s["status"]) for s in got] == [("broken", "damaged"),
                                                                            ("good", "complete")]
    assert got[0]["note"].startswith("log.h5 does not read (") and got[0]["progress"] is None
    assert main(["status", str(tmp_path / "runs")]) == 0
    assert [ln.split()[3] for ln in capsys.readouterr().out.splitlines()[3:]] == ["damaged", "complete"]


def test_a_read_that_fails_once_is_retried(sweep, tmp_path, monkeypatch):
    """A reader that meets the log mid-write reads it again once, after a pause: here the log
    is half there at the first read, and the writer's rewrite (an atomic replace, as H5Log's)
    lands during the pause."""
    src = _damaged_copy(sweep, tmp_path / "run")
    whole = tmp_path / "whole.h5"
    shutil.copy(src, whole)
    waits = []

    class WriterFinishesDuringThePause:
        time = staticmethod(time.time)

        @staticmethod
        def sleep(seconds):
            waits.append(seconds)
            os.replace(whole, tmp_path / "run" / "log.h5")
    monkeypatch.setattr(status_mod, "time", WriterFinishesDuringThePause)
    st = status_mod.run_status(str(tmp_path / "run"))
    assert waits == [status_mod.RETRY_S]
    assert (st.status, st.note) == ("complete", "")
    assert st.progress.done == len(read_h5(str(src))["epochs/task"])


def test_a_resumed_runs_status_is_the_journals_not_the_files(tmp_path):
    """A resumed run reopens a log closed 'preempted' and journals 'running' over it."""
    from hpccl.core.logs import H5Log, status_of
    path = str(tmp_path / "log.h5")
    log = H5Log(path, "run", {"name": "r"})
    log.close("preempted")
    log = H5Log.reopen(path)
    log.append("epochs", task=0, epoch=0)
    log.flush()                          # an append: the status goes to the journal
    log.set_attrs(status="running")
    log.flush()
    try:
        assert status_of(path) == "running" == read_h5(path)["attrs"]["status"]
        assert status_mod.run_status(str(tmp_path)).status == "running"
    finally:
        log.close("complete")
    assert status_of(path) == "complete"


def test_an_empty_directory_has_no_runs_and_a_missing_one_is_refused(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"no runs under {tmp_path} (a run has log.h5 or submission.json)"
    assert status_json(capsys, tmp_path) == []
    assert main(["status", str(tmp_path / "nosuch")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hpccl: error: {str(tmp_path / 'nosuch')!r}: no such directory") and "Traceback" not in err


def test_watch_redraws_until_ctrl_c_which_exits_0(sweep):
    run = str(sweep[0] / "g0001")
    proc = subprocess.Popen(hpccl_cmd("status", run, "--watch", "0.2"), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stamps = 0
        for line in proc.stdout:
            stamps += line[:4].isdigit() and "T" in line[:11]     # each redraw starts with a time stamp
            if stamps == 3:
                break
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert stamps == 3 and proc.returncode == 0, err
    assert "Traceback" not in err
