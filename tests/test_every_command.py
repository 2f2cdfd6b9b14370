"""Every command works for every job kind (hpccl.core.kinds):

- every shipped job file through `hpccl validate` and, on every shipped site, `hpccl submit
  --dry-run` (two nodes and the longest walltime where the site admits them): the script says
  what the site file and the command line imply (directives for nodes, ranks per node,
  walltime, queue, account; the launcher with the rank count; run directory, start and resume,
  requeue), worked out here from those inputs; or, for the jobs whose data or pre-trained
  model the user makes first (CIFAR, ImageNet, the ViTs), both commands refuse with the same
  clear error naming the missing file;
- a small real run of every kind through `hpccl analyze` in every format (each showing the
  JSON summary's run, ranks, status and headline figure), and through `hpccl
  run --resume`: the kinds that keep no checkpoint refuse it before starting a rank, and a
  complete continual run, whose last checkpoint is gone, says it has none.

validate and submit run in this process (hpccl.cli.main); the runs are real `hpccl run`s.
"""

import glob
import json
import os
import re
import shlex
import sys

import pytest

from hpccl.cli import main
from hpccl.core.launch import mpirun_prefix
from hpccl.sched.sites import load_site, parse_walltime

from helpers import ROOT, SMALL_RUNS, hpccl_cmd, run_cmd

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


def layout_for(site):
    """(GPUs, walltime) to submit with. Two nodes, not full, where the site admits two: nodes,
    ranks per node, GPUs per node and ranks are then four different numbers, which a renderer
    must not mix up (else 2 GPUs). The longest walltime an automatic queue admits for that size,
    so that first fit has to pass over queues with shorter limits (None: the site's default)."""
    def fits(nodes):
        return [q for q in site.queues if q.auto and q.min_nodes <= nodes <= q.max_nodes]
    two = bool(fits(2)) if site.queues else (site.max_nodes or 1) >= 2
    gpus = 2 * (site.gpus_per_node - 1) if two and site.gpus_per_node > 2 else 2
    longest = max((q.max_walltime for q in fits(-(-gpus // site.gpus_per_node))), key=parse_walltime,
                  default=None)
    return gpus, longest


def expected_script(site, gpus, walltime, account):
    """What the script must say, worked out from the site file and the command line alone."""
    nodes = -(-gpus // site.gpus_per_node)
    per_node = gpus // nodes
    walltime = walltime or site.default_walltime
    wall_s = parse_walltime(walltime)
    queue = next((q.name for q in site.queues if q.auto and q.min_nodes <= nodes <= q.max_nodes
                  and q.min_s <= wall_s <= q.max_s), None)
    cores = site.cores_per_node or os.cpu_count()
    values = dict(ranks=gpus, nodes=nodes, ranks_per_node=per_node, gpus_per_node=site.gpus_per_node,
                  cores_per_node=cores, cores_per_rank=max(1, cores // per_node),
                  cpus_per_rank=max(1, cores // per_node) * site.threads_per_core,
                  local_mpirun=shlex.join(mpirun_prefix(gpus)))
    return dict(nodes=nodes, per_node=per_node, walltime=walltime, wall_s=wall_s,
                queue=queue, account=account or site.account, values=values,
                launcher=shlex.split(site.launcher.format(**values)))


def directives(script: str, prefix: str) -> list[tuple[str, str]]:
    """('--key', value) for #SBATCH --key=value; ('-x', value) for #PBS -x value (unquoted)."""
    out = []
    for line in script.splitlines()[1:]:
        if not line.startswith("#"):
            break
        if line.startswith(prefix):
            words = shlex.split(line[len(prefix):])
            if prefix == "#SBATCH ":
                key, _, value = words[0].partition("=")
                out.append((key, value if "=" in words[0] else True))
            else:
                out.append((words[0], words[1]))
    return out


def assignment(script: str, name: str) -> str:
    line = next(ln for ln in script.splitlines() if ln.startswith(f"{name}="))
    return shlex.split(line[len(name) + 1:])[0]


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("job", JOBS)
def test_submit_dry_run_of_every_job_on_every_site(job, site, tmp_path, capsys):
    from hpccl.config import load_job
    valid, _, why = cli(["validate", job], capsys)
    out_dir = tmp_path / "run"
    spec = load_site(site)
    gpus, walltime = layout_for(spec)
    account = f"proj_{site}" if spec.account_required else None
    args = ["submit", job, "--site", site, "--gpus", str(gpus), "--dry-run", "--out", str(out_dir)]
    args += (["--account", account] if account else []) + (["--walltime", walltime] if walltime else [])
    code, out, err = cli(args, capsys)
    if valid:
        assert code == 2 and err.strip() == why.strip()       # the same refusal as validate
        return
    assert code == 0, err
    script = (out_dir / "job.sh").read_text()
    assert os.access(out_dir / "job.sh", os.X_OK) and out.endswith(script)   # printed as written
    cfg = load_job(str(out_dir / "job.yaml"))
    assert cfg.name == load_job(os.path.join(ROOT, job)).name
    want = expected_script(spec, gpus, walltime, account)
    run_dir = str(out_dir)

    if spec.scheduler == "slurm":
        d = dict(directives(script, "#SBATCH "))
        assert (d["--nodes"], d["--ntasks-per-node"], d["--time"]) == (
            str(want["nodes"]), str(want["per_node"]), want["walltime"]), d
        assert d.get(f"--{spec.slurm.queue_option}") == want["queue"], d
        assert d.get("--account") == want["account"], d
        assert d["--job-name"] == cfg.name and d["--output"] == f"{run_dir}/slurm-%j.out", d
        gpu_flag = {"gpus-per-node": ("--gpus-per-node", str(want["per_node"])),
                    "gres": ("--gres", f"gpu:{want['per_node']}")}.get(spec.slurm.gpu_request)
        assert [(k, v) for k, v in d.items() if k in ("--gpus-per-node", "--gres")] == (
            [gpu_flag] if gpu_flag else []), d
        assert ("--requeue" in d) == spec.slurm.requeue
        assert ('scontrol requeue "$SLURM_JOB_ID"' in script) == spec.slurm.requeue
    elif spec.scheduler == "pbs":
        d = directives(script, "#PBS ")
        flags = {flag: [v for f, v in d if f == flag] for flag in ("-l", "-N", "-o", "-q", "-A", "-r")}
        select = spec.pbs.select.format(**want["values"])
        assert f"select={select}" in flags["-l"] and f"walltime={want['walltime']}" in flags["-l"], d
        assert flags["-N"] == [cfg.name] and flags["-o"] == [f"{run_dir}/pbs.out"], d
        assert flags["-q"] == [want["queue"]] * bool(want["queue"]), d
        assert flags["-A"] == [want["account"]] * bool(want["account"]), d
        assert flags["-r"] == ["y"] * spec.pbs.rerunnable, d
        # PBS gives no warning: the script's own timer fires the warning before the walltime.
        warn = min(spec.pbs.signal_seconds, want["wall_s"] // 2)
        assert re.findall(r"\bsleep (\d+) ", script) == [str(want["wall_s"] - warn)] * bool(warn)
        requeue = {"resubmit": 'qsub "$RUN_DIR/job.sh"', "qrerun": 'qrerun "$PBS_JOBID"'}
        for how, line in requeue.items():
            assert (line in script) == (spec.pbs.requeue == how), how
    else:
        assert not re.search(r"^#(SBATCH|PBS) ", script, re.M)
        assert "scontrol" not in script and "qsub" not in script

    # Where and how it runs: the run directory, the submitting directory and Python, the
    # launcher with this job's rank count, the start and resume branches, the GPU wrapper.
    assert assignment(script, "RUN_DIR") == run_dir and assignment(script, "SUBMIT_DIR") == ROOT
    assert assignment(script, "PYTHON") == (spec.python or sys.executable)
    launcher = next(ln for ln in script.splitlines() if ln.startswith("launcher=("))
    words = shlex.split(launcher[len("launcher=("):-1])
    assert words == want["launcher"], (words, want["launcher"])
    counts = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-n", "-np")]
    assert counts == [str(gpus)], words
    assert 'run --resume "$RUN_DIR"' in script and 'run "$RUN_DIR/job.yaml" --out "$RUN_DIR"' in script
    wrapper = out_dir / "gpu_affinity.sh"
    launch = next(ln for ln in script.splitlines()
                  if ln.startswith('"${launcher[@]}"') and "hpccl_args" in ln)
    launch = shlex.split(launch.replace("${launcher[@]}", "LAUNCHER").replace("${hpccl_args[@]}", "ARGS"))
    assert launch == (["LAUNCHER"] + ([str(wrapper)] if spec.gpu_affinity.mode == "wrapper" else [])
                      + ["$PYTHON", "-m", "hpccl", "ARGS", "&"]), launch
    assert wrapper.exists() == (spec.gpu_affinity.mode == "wrapper")


# small_runs (conftest): a small complete run of every kind (helpers.SMALL_RUNS), shared by
# the tests of the session that read runs of every kind (tests/analysis/test_frames.py).


# One headline figure per kind: JSON summary key, table column, the value it shows (rounded
# to one or two decimals, or three significant digits).
def _percent(v):
    return pytest.approx(100 * v, abs=0.051)


HEADLINE = {"continual": ("final_average_accuracy", "final acc %", _percent),
            "megabatch": ("final_error", "final err %", _percent),
            "erm": ("final_subopt", "final P-P*", lambda v: pytest.approx(v, rel=0.01)),
            "online_rnn": ("final_test_accuracy", "test acc %", _percent)}


def table(out: str, fmt: str) -> list[dict]:
    if fmt == "csv":
        import csv
        return list(csv.DictReader(out.strip().splitlines()))
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in out.strip().splitlines()]
    assert set("".join(rows[1])) <= set("-:"), out       # header, separator, rows
    return [dict(zip(rows[0], r)) for r in rows[2:]]


@pytest.mark.parametrize("fmt", ["text", "json", "csv", "md"])
@pytest.mark.parametrize("kind", list(SMALL_RUNS))
def test_analyze_every_kind_in_every_format(small_runs, kind, fmt, capsys):
    code, summary, err = cli(["analyze", small_runs[kind], "--format", "json"], capsys)
    assert code == 0, err
    summary = json.loads(summary)
    assert summary["job_kind"] == kind and summary["status"] == "complete"
    assert summary["run_dir"] == small_runs[kind] and summary["world_size"] == SMALL_RUNS[kind][2]
    code, out, err = cli(["analyze", small_runs[kind], "--format", fmt], capsys)
    assert code == 0, err
    key, column, shown = HEADLINE[kind]
    if fmt == "json":
        assert json.loads(out) == summary
    elif fmt == "text":
        head = out.splitlines()[0]
        assert head.startswith(f"== {small_runs[kind]}: {summary['name']} ("), head
        assert head.endswith(", complete)") and f", {summary['world_size']} ranks, " in head, head
    else:
        [row] = table(out, fmt)
        assert row["run"] == os.path.basename(small_runs[kind]), row
        assert row["ranks"] == str(summary["world_size"]) and row.get("status", "complete") == "complete", row
        assert float(row[column]) == shown(summary[key]), (row, summary[key])


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
        # the small run finished: resuming it would train nothing, and the refusal says how to train it again
        assert "its run is complete" in r.stderr and "--out NEW_DIR" in r.stderr, r.stderr
    else:
        assert "cannot be resumed" in r.stderr and "launching" not in r.stdout
