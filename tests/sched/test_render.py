"""Rendering: golden files per shipped site, sorted and quoted directives, launch lines that
follow each site's documented conventions, and scripts that bash accepts.

The golden files in tests/sched/golden/ pin the scripts down line by line. After changing a
template or a shipped site on purpose, refresh them and review the diff:

    HPCCL_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/sched/test_render.py
    git diff tests/sched/golden/

A refresh rewrites the files that differ and fails those tests (a run that rewrote a golden
file never passes); under CI=true it is refused.
"""

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpccl.sched.render import (EXIT_REQUEUE, ScriptPlan, launcher_command, render_affinity_wrapper,
                                render_script)
from hpccl.sched.sites import load_site

from sched_helpers import IN_CI

GOLDEN = Path(__file__).parent / "golden"
RUN_DIR = "/scratch/hpccl runs/demo"      # a space, to see the quoting
REFRESH = "HPCCL_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/sched/test_render.py"

# One fixed plan per shipped site (as `hpccl submit` would make it, without the environment).
PLANS = {
    "slurm-local": dict(nodes=1, ranks_per_node=2, walltime="00:10:00", queue="debug"),
    "perlmutter": dict(nodes=2, ranks_per_node=4, walltime="01:00:00", queue="regular", account="m1234_g"),
    "polaris": dict(nodes=4, ranks_per_node=4, walltime="00:30:00", queue="debug-scaling",
                    account="MyProject"),
    "thetagpu": dict(nodes=2, ranks_per_node=8, walltime="02:00:00", queue="full-node", account="MyProject"),
    "local": dict(nodes=1, ranks_per_node=2, walltime="24:00:00"),
}


def plan_for(name, **changes) -> ScriptPlan:
    site = load_site(name)
    kwargs = dict(site=site, job_name="demo", run_dir=RUN_DIR, submit_dir="/home/user/project",
                  python="/home/user/project/.venv/bin/python", cores_per_node=site.cores_per_node or 2,
                  local_mpirun="/usr/bin/mpirun -np 2 --oversubscribe --allow-run-as-root")
    kwargs.update(PLANS[name])
    kwargs.update(changes)
    return ScriptPlan(**kwargs)


def assert_matches_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("HPCCL_UPDATE_GOLDEN") == "1":
        # CI checks the goldens; it never writes them (a rewrite there would pass anything).
        if IN_CI:
            pytest.fail("HPCCL_UPDATE_GOLDEN=1 under CI=true: golden files are refreshed by hand, "
                        "never in CI; unset HPCCL_UPDATE_GOLDEN", pytrace=False)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            pytest.fail(f"golden file {path} rewritten: review `git diff {path}`, then rerun without "
                        "HPCCL_UPDATE_GOLDEN", pytrace=False)
    assert path.exists(), f"no golden file {path}; create it on purpose with: {REFRESH}"
    want, got = path.read_text().splitlines(), text.splitlines()
    for i, (w, g) in enumerate(zip(want, got), start=1):
        assert g == w, (f"{name} differs from {path} at line {i}:\n  golden:   {w!r}\n  rendered: {g!r}\n"
                        f"If the change is intended, refresh the golden files with:\n  {REFRESH}")
    assert len(got) == len(want), (f"{name}: {len(got)} lines rendered, {len(want)} in {path}. "
                                   f"If intended: {REFRESH}")
    assert text == path.read_text(), f"{name}: trailing whitespace or newline differs; {REFRESH}"


@pytest.mark.parametrize("site", sorted(PLANS))
def test_script_matches_golden_file(site):
    assert_matches_golden(f"{site}.sh", render_script(plan_for(site)))


# Two processes that differ in everything a renderer could be tempted to read: the clock and
# its time zone (26 h apart, so even a date differs), the user, HOME, the working directory,
# PATH's order, the locale, str hashing (set order), and what a login node or a job sets.
_RENDER_ALL = """
import json, os, sys
sys.path[:0] = [sys.argv[1], os.path.dirname(sys.argv[1])]
import test_render as t
print(json.dumps({s: [t.render_script(t.plan_for(s)), t.render_affinity_wrapper(t.plan_for(s))]
                  for s in sorted(t.PLANS)}))
"""
_ENVIRONMENTS = [
    {"TZ": "<-12>12", "USER": "alice", "LOGNAME": "alice", "PYTHONHASHSEED": "1", "LANG": "C",
     "LC_ALL": "C", "SHELL": "/bin/sh"},
    {"TZ": "<+14>-14", "USER": "bob", "LOGNAME": "bob", "PYTHONHASHSEED": "2", "LANG": "C.UTF-8",
     "LC_ALL": "C.UTF-8", "SHELL": "/bin/zsh", "VIRTUAL_ENV": "/opt/venv", "CONDA_PREFIX": "/opt/conda",
     "MODULEPATH": "/soft/modulefiles", "SLURM_JOB_ID": "4242", "PBS_JOBID": "77.server",
     "HPCCL_LAUNCHER": "mpirun -np 3", "HPCCL_MPIRUN": "mpiexec", "OMPI_COMM_WORLD_SIZE": "5",
     "HOSTNAME": "login07"},
]


def test_rendering_depends_on_the_plan_only(tmp_path):
    base = {k: v for k, v in os.environ.items()
            if k not in ("XDG_CONFIG_HOME", "HPCCL_SITE_DIR", "TZ", "PYTHONHASHSEED")}
    path = base.get("PATH", "").split(os.pathsep)
    outputs = []
    for i, extra in enumerate(_ENVIRONMENTS):
        home = tmp_path / f"home{i}"       # HOME/.config/hpccl/sites does not exist: shipped sites only
        home.mkdir()
        env = {**base, **extra, "HOME": str(home), "PWD": str(home),
               "PATH": os.pathsep.join(path if i == 0 else path[::-1])}
        r = subprocess.run([sys.executable, "-c", _RENDER_ALL, str(Path(__file__).parent)], cwd=home,
                           env=env, capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr.decode()
        outputs.append(r.stdout)
    here = {s: [render_script(plan_for(s)), render_affinity_wrapper(plan_for(s))] for s in sorted(PLANS)}
    for i, out in enumerate(outputs):
        for site, texts in json.loads(out).items():
            for got, want in zip(texts, here[site]):
                if got != want:
                    diff = difflib.unified_diff((want or "").splitlines(True), (got or "").splitlines(True),
                                                "this process", f"environment {i}", n=0)
                    pytest.fail(f"{site}: the same plan rendered differently with {_ENVIRONMENTS[i]}:\n"
                                + "".join(list(diff)[:12]), pytrace=False)
    assert outputs[0] == outputs[1]        # byte for byte, the JSON framing included


def test_affinity_wrapper_matches_golden_file():
    assert_matches_golden("polaris-gpu_affinity.sh", render_affinity_wrapper(plan_for("polaris")))
    assert render_affinity_wrapper(plan_for("perlmutter")) is None


@pytest.mark.parametrize("site", sorted(PLANS))
def test_rendered_scripts_are_valid_bash(site, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(render_script(plan_for(site)))
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    wrapper = render_affinity_wrapper(plan_for(site))
    if wrapper:
        script.write_text(wrapper)
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def header(text: str, prefix: str) -> list[str]:
    lines = text.splitlines()
    assert lines[0].startswith("#!")
    block = []
    for line in lines[1:]:
        if not line.startswith(prefix):
            break
        block.append(line)
    return block


def test_slurm_directives_sorted_quoted_and_as_documented():
    text = render_script(plan_for("perlmutter"))
    d = header(text, "#SBATCH ")
    assert d == sorted(d)
    for want in ("--account=m1234_g", "--constraint=gpu", "--qos=regular", "--nodes=2",
                 "--ntasks-per-node=4", "--gpus-per-node=4", "--cpus-per-task=32", "--time=01:00:00",
                 "--requeue", "--signal=B:USR1@300", "--open-mode=append",
                 f"--output='{RUN_DIR}/slurm-%j.out'"):
        assert f"#SBATCH {want}" in d, want
    assert ("launcher=(srun -n 8 --ntasks-per-node=4 -c 32 --cpu-bind=cores --gpus-per-task=1)"
            in text)
    assert "scontrol requeue \"$SLURM_JOB_ID\"" in text
    # A short job still gets a warning: at most half its time.
    short = render_script(plan_for("slurm-local", walltime="00:01:00"))
    assert "#SBATCH --signal=B:USR1@30" in short and "#SBATCH --partition=debug" in short


def test_pbs_directives_and_launch_lines_as_documented():
    text = render_script(plan_for("polaris"))
    d = header(text, "#PBS ")
    assert d == sorted(d)
    for want in ("-A MyProject", "-q debug-scaling", "-l select=4:system=polaris", "-l place=scatter",
                 "-l filesystems=home:eagle", "-l walltime=00:30:00", "-r y", "-j oe"):
        assert f"#PBS {want}" in d, want
    assert text.startswith("#!/bin/bash -l\n")
    assert "launcher=(mpiexec -n 16 --ppn 4 --depth=8 --cpu-bind depth)" in text
    assert f"\"${{launcher[@]}}\" '{RUN_DIR}/gpu_affinity.sh' \"$PYTHON\" -m hpccl" in text
    assert "  module use /soft/modulefiles\n  module load conda\n" in text
    assert "sleep 1500 " in text          # the warning timer: 300 s before 00:30:00
    theta = render_script(plan_for("thetagpu"))
    assert 'launcher=(mpirun -hostfile "$PBS_NODEFILE" -n 16 -npernode 8)' in theta
    assert "#PBS -l select=2:ngpus=8" in theta and "#PBS -l filesystems=home:grand:theta-fs0" in theta
    assert "qsub \"$RUN_DIR/job.sh\"" in theta


def test_extra_directives_from_a_site_override(isolated_sites):
    (isolated_sites / "perlmutter.yaml").write_text("slurm: {directives: {mail-type: END, exclusive: true}}\n")
    d = header(render_script(plan_for("perlmutter", site=load_site("perlmutter"))), "#SBATCH ")
    assert "#SBATCH --mail-type=END" in d and "#SBATCH --exclusive" in d and d == sorted(d)
    (isolated_sites / "polaris.yaml").write_text("pbs: {directives: {-m: abe, mem: 64gb}}\n")
    d = header(render_script(plan_for("polaris", site=load_site("polaris"))), "#PBS ")
    assert "#PBS -m abe" in d and "#PBS -l mem=64gb" in d and d == sorted(d)


def test_local_mpirun_placeholder_and_exit_code_agree_with_the_runner():
    assert launcher_command(plan_for("slurm-local")).startswith("/usr/bin/mpirun -np 2")
    from hpccl.core.checkpoint import EXIT_REQUEUE as runner_code
    assert runner_code == EXIT_REQUEUE == 99


@pytest.mark.parametrize("env, gpu", [({"PMI_LOCAL_RANK": "0"}, "3"), ({"PMI_LOCAL_RANK": "1"}, "2"),
                                      ({"OMPI_COMM_WORLD_LOCAL_RANK": "3"}, "0"), ({}, "3")])
def test_affinity_wrapper_gives_each_local_rank_one_gpu(tmp_path, env, gpu):
    wrapper = tmp_path / "gpu_affinity.sh"
    wrapper.write_text(render_affinity_wrapper(plan_for("polaris")))
    wrapper.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if k not in
             ("PMI_LOCAL_RANK", "PALS_LOCAL_RANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")}
    r = subprocess.run([str(wrapper), "sh", "-c", "echo $CUDA_VISIBLE_DEVICES"], capture_output=True,
                       text=True, env={**clean, **env})
    assert r.stdout.strip() == gpu, r.stderr
