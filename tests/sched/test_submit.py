"""hpccl submit without a real scheduler: dry runs, refusals before anything is written,
fake sbatch/qsub on PATH (job ids recorded, scheduler errors shown as they are), and the
'local' site, which runs the script in the background for real."""

import json
import os
import shutil
import time

import pytest
import yaml

from hpccl.cli import main
from hpccl.sched.submit import parse_job_id

from helpers import ROOT
from sched_helpers import write_tiny_job

QUICKSTART = os.path.join(ROOT, "jobs", "quickstart.yaml")


def fake_command(bin_dir, name, body):
    """An executable `name` in bin_dir (put first on PATH by the caller)."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    return d


def test_dry_run_writes_the_run_directory_and_prints_path_and_script(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["submit", QUICKSTART, "--site", "polaris", "--gpus", "8", "--dry-run",
                 "--out", str(out), "--set", "train.epochs=2"]) == 0
    printed = capsys.readouterr().out
    assert f"run directory: {out}" in printed and f"script: {out}/job.sh" in printed
    assert "dry run, nothing submitted; to submit: qsub" in printed and "needs an account" in printed
    script = (out / "job.sh").read_text()
    assert script in printed and "#PBS -l select=2:system=polaris" in script
    assert "#PBS -q debug" in script and "#PBS -A" not in script
    assert os.access(out / "job.sh", os.X_OK) and os.access(out / "gpu_affinity.sh", os.X_OK)
    job = yaml.safe_load((out / "job.yaml").read_text())
    assert job["train"]["epochs"] == 2 and job["name"] == "quickstart"
    assert not (out / "submission.json").exists()


def test_refusals_come_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["submit", QUICKSTART, "--site", "polaris", "--gpus", "16", "--walltime", "02:00:00",
                 "--account", "P", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no queue admits a job of 4 node(s) for 02:00:00" in err and "Traceback" not in err
    assert main(["submit", QUICKSTART, "--site", "polaris", "--gpus", "4", "--out", str(out)]) == 2
    assert "needs a project to charge" in capsys.readouterr().err
    assert main(["submit", QUICKSTART, "--site", "polaris", "--gpus", "4", "--walltime", "1h",
                 "--dry-run", "--out", str(out)]) == 2
    assert "--walltime: expected a time as HH:MM:SS" in capsys.readouterr().err
    assert main(["submit", QUICKSTART, "--site", "polaris", "--gpus", "1,2", "--dry-run",
                 "--out", str(out)]) == 2
    assert "needs --scaling" in capsys.readouterr().err
    assert main(["submit", QUICKSTART, "--site", "polaris", "--gpus", "4", "--dry-run",
                 "--set", "train.epoch=2", "--out", str(out)]) == 2
    assert "Did you mean 'epochs'?" in capsys.readouterr().err
    assert not out.exists()


def test_zero_walltime_from_the_flag_or_the_site_file_is_refused(tmp_path, isolated_sites, capsys):
    """--time=00:00:00 would be Slurm's 'no limit': refused, naming the flag or file + key."""
    out = tmp_path / "run"
    assert main(["submit", QUICKSTART, "--site", "slurm-local", "--gpus", "1", "--walltime", "00:00:00",
                 "--dry-run", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--walltime: expected a time limit above zero" in err and "'00:00:00'" in err
    site_file = isolated_sites / "zero.yaml"
    site_file.write_text('extends: slurm-local\ndefault_walltime: "00:00:00"\n')
    assert main(["submit", QUICKSTART, "--site", "zero", "--gpus", "1", "--dry-run",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{site_file} (merged over " in err and "key 'default_walltime'" in err and "above zero" in err
    assert not out.exists()


def test_submission_records_the_job_id(tmp_path, fake_bin, capsys):
    calls = tmp_path / "qsub-calls"
    fake_command(fake_bin, "qsub", f'echo "$PWD $*" >> {calls}\necho 4242.polaris-pbs-01.hsn.cm\n')
    out = tmp_path / "run"
    assert main(["submit", QUICKSTART, "--site", "polaris", "--gpus", "4", "--account", "MyProject",
                 "--out", str(out)]) == 0
    assert "as job 4242.polaris-pbs-01.hsn.cm" in capsys.readouterr().out
    assert calls.read_text() == f"{out} {out}/job.sh\n"     # run in the run directory
    record = json.loads((out / "submission.json").read_text())
    assert record["job_id"] == "4242.polaris-pbs-01.hsn.cm" and record["command"] == ["qsub", str(out / "job.sh")]
    assert (record["site"], record["nodes"], record["ranks_per_node"], record["queue"]) == ("polaris", 1, 4, "debug")
    assert (out / "job_ids.txt").read_text() == "4242.polaris-pbs-01.hsn.cm\n"
    assert "#PBS -A MyProject" in (out / "job.sh").read_text()
    # the run directory now holds a submitted job: a second submission there is refused
    assert main(["submit", QUICKSTART, "--site", "polaris", "--gpus", "4", "--account", "MyProject",
                 "--out", str(out)]) == 2
    assert "already holds a submitted job" in capsys.readouterr().err


def test_scheduler_errors_are_shown_as_they_are_with_the_command(tmp_path, fake_bin, capsys):
    said = "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified"
    fake_command(fake_bin, "sbatch", f'echo "{said}" >&2\nexit 1\n')
    out = tmp_path / "run"
    assert main(["submit", QUICKSTART, "--site", "perlmutter", "--gpus", "8", "--account", "m0000_g",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert said in err and f"`sbatch --parsable {out}/job.sh`" in err and "exited with code 1" in err
    assert not (out / "submission.json").exists()


@pytest.mark.parametrize("scheduler, stdout, job_id", [
    ("slurm", "123\n", "123"), ("slurm", "123;cluster\n", "123"),
    ("slurm", "Submitted batch job 77\n", "77"), ("pbs", "4242.server\n", "4242.server"),
    ("slurm", "garbage\n", "")])
def test_job_id_parsing(scheduler, stdout, job_id):
    assert parse_job_id(scheduler, stdout) == job_id


def test_relative_dataset_path_is_made_absolute(tmp_path, digits_h5, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    shutil.copy(digits_h5, tmp_path / "data" / "digits.h5")
    job = tmp_path / "job.yaml"
    job.write_text("name: rel\ndata: {path: data/digits.h5}\n")
    monkeypatch.chdir(tmp_path)
    assert main(["submit", "job.yaml", "--site", "slurm-local", "--gpus", "2", "--dry-run",
                 "--out", "run"]) == 0
    written = yaml.safe_load((tmp_path / "run" / "job.yaml").read_text())
    assert written["data"]["path"] == str(tmp_path / "data" / "digits.h5")
    assert f"SUBMIT_DIR={tmp_path}" in (tmp_path / "run" / "job.sh").read_text()
    assert main(["submit", "job.yaml", "--site", "slurm-local", "--gpus", "2", "--dry-run",
                 "--out", "run2", "--set", "data.path=data/missing.h5"]) == 2
    assert "missing.h5" in capsys.readouterr().err


def test_local_site_runs_the_script_in_the_background(tmp_path, capsys):
    from hpccl.analysis.report import summarize
    job = write_tiny_job(tmp_path / "tiny.yaml")
    out = tmp_path / "run"
    assert main(["submit", job, "--site", "local", "--gpus", "2", "--out", str(out)]) == 0
    job_id = json.loads((out / "submission.json").read_text())["job_id"]
    assert job_id.startswith("local-") and f"as job {job_id}" in capsys.readouterr().out
    attempts = out / "attempts.log"
    end = time.time() + 240
    while time.time() < end and not (attempts.exists() and "exited with code" in attempts.read_text()):
        time.sleep(0.5)
    log = (out / "attempts.log").read_text()
    assert "starting" in log and "the run exited with code 0" in log, log + (out / "job.out").read_text()
    s = summarize(str(out))
    assert s["status"] == "complete" and s["world_size"] == 2 and s["tasks_completed"] == 5


def test_every_job_kind_submits_including_data_free_and_libsvm_jobs(tmp_path, capsys):
    """kind: online_rnn has no data section (was an AttributeError), and kind: erm reads LIBSVM
    text files, which submit refused as 'not a readable HDF5 file' while run accepted them."""
    assert main(["submit", os.path.join(ROOT, "jobs", "rnn_digits.yaml"), "--site", "slurm-local",
                 "--gpus", "2", "--dry-run", "--out", str(tmp_path / "rnn")]) == 0
    libsvm = tmp_path / "tiny.svm"
    libsvm.write_text("+1 1:0.5 3:1\n-1 2:1\n+1 1:1 2:0.25\n-1 3:0.5\n")
    job = yaml.safe_load(open(os.path.join(ROOT, "jobs", "erm_a9a.yaml")))
    job["data"] = {"path": str(libsvm)}
    (tmp_path / "erm.yaml").write_text(yaml.safe_dump(job))
    assert main(["submit", str(tmp_path / "erm.yaml"), "--site", "polaris", "--gpus", "8", "--account",
                 "p", "--dry-run", "--out", str(tmp_path / "erm")]) == 0
    resolved = yaml.safe_load((tmp_path / "erm" / "job.yaml").read_text())
    assert resolved["data"]["path"] == str(libsvm)
    job["data"] = {"path": str(tmp_path / "missing.svm")}
    (tmp_path / "erm.yaml").write_text(yaml.safe_dump(job))
    capsys.readouterr()
    assert main(["submit", str(tmp_path / "erm.yaml"), "--site", "polaris", "--gpus", "8", "--account",
                 "p", "--dry-run", "--out", str(tmp_path / "erm2")]) == 2
    assert "missing.svm" in capsys.readouterr().err
