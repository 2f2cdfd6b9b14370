"""Every command works for every job kind (hpccl.core.kinds):

- every shipped job file through `hpccl validate` and, on every shipped site, `hpccl submit
  --dry-run`: the script is rendered, or, for the jobs whose data or pre-trained model the
  user makes first (CIFAR, ImageNet, the ViTs), both commands refuse with the same clear
  error naming the missing file;
- a small real run of every kind through `hpccl analyze` in every format, and through `hpccl
  run --resume`: the kinds that keep no checkpoint refuse it before starting a rank, and a
  complete continual run, whose last checkpoint is gone, says it has none.

validate and submit run in this process (hpccl.cli.main); the runs are real `hpccl run`s.
"""

import glob
import json
import os

import pytest

from hpccl.cli import main

from helpers import ROOT, hpccl_cmd, run_cmd

JOBS = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "jobs", "*.yaml")))
SITES = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(ROOT, "site_configs", "*.yaml")))
USER_MADE = "does not exist"      # the error for data or a pre-trained model not made yet


def cli(args, capsys):
    cwd = os.getcwd()
    os.chdir(ROOT)                # job files name their data relative to the repository
    try:
        code = main(args)
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    return code, out, err


def test_every_job_and_site_is_covered():
    assert len(JOBS) >= 10 and {"local", "slurm-local", "polaris", "perlmutter", "thetagpu"} <= set(SITES)


@pytest.mark.parametrize("job", JOBS)
def test_validate_every_shipped_job(job, capsys):
    code, out, err = cli(["validate", job], capsys)
    if code:
        assert code == 2 and USER_MADE in err and "Traceback" not in err, err
    else:
        assert f"{job}: valid (" in out


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("job", JOBS)
def test_submit_dry_run_of_every_job_on_every_site(job, site, tmp_path, capsys):
    valid, _, why = cli(["validate", job], capsys)
    out_dir = tmp_path / "run"
    code, out, err = cli(["submit", job, "--site", site, "--gpus", "2", "--dry-run", "--out", str(out_dir)],
                         capsys)
    if valid:
        assert code == 2 and err.strip() == why.strip()       # the same refusal as validate
        return
    assert code == 0, err
    script = (out_dir / "job.sh").read_text()
    assert "hpccl" in script and "run" in script
    from hpccl.config import load_job
    assert load_job(str(out_dir / "job.yaml")).name == load_job(os.path.join(ROOT, job)).name


# A small run of each kind: (job file, overrides, ranks).
SMALL_RUNS = {
    "continual": ("jobs/quickstart.yaml", ["train.epochs=1", "scenario.num_tasks=2"], 2),
    "megabatch": ("jobs/alma_digits.yaml", ["scenario.num_megabatches=4", "train.epochs=2"], 2),
    "erm": ("jobs/erm_breast_cancer.yaml", ["erm.epochs=3"], 2),
    "online_rnn": ("jobs/rnn_digits.yaml", ["rnn.num_sequences=20", "rnn.eval_every=10"], 2),
}


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    runs = {}
    for kind, (job, sets, ranks) in SMALL_RUNS.items():
        out = tmp_path_factory.mktemp(kind) / "run"
        args = ["run", job, "-n", str(ranks), "--out", str(out)]
        for s in sets:
            args += ["--set", s]
        r = run_cmd(hpccl_cmd(*args), timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        runs[kind] = str(out)
    return runs


@pytest.mark.parametrize("fmt", ["text", "json", "csv", "md"])
@pytest.mark.parametrize("kind", list(SMALL_RUNS))
def test_analyze_every_kind_in_every_format(small_runs, kind, fmt, capsys):
    code, out, err = cli(["analyze", small_runs[kind], "--format", fmt], capsys)
    assert code == 0, err
    if fmt == "json":
        summary = json.loads(out)
        assert summary["job_kind"] == kind and summary["status"] == "complete"
    elif fmt == "csv":
        lines = out.strip().splitlines()
        assert len(lines) >= 2 and "," in lines[0]
    else:
        assert small_runs[kind] in out or os.path.basename(small_runs[kind]) in out or out.strip()


def test_analyze_runs_of_every_kind_together(small_runs, capsys):
    runs = [small_runs[k] for k in SMALL_RUNS]
    code, out, err = cli(["analyze", *runs, "--format", "json"], capsys)
    assert code == 0, err
    assert [s["job_kind"] for s in json.loads(out)] == list(SMALL_RUNS)
    code, out, err = cli(["analyze", *runs], capsys)
    assert code == 0 and out.strip(), err


@pytest.mark.parametrize("kind", list(SMALL_RUNS))
def test_resume_or_its_clean_refusal_for_every_kind(small_runs, kind):
    r = run_cmd(hpccl_cmd("run", "--resume", small_runs[kind], "-n", "2"), timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    if kind == "continual":
        assert "has no checkpoint" in r.stderr
    else:
        assert "cannot be resumed" in r.stderr and "launching" not in r.stdout
