"""What a job script does after the run exits: every requeue branch of the rendered scripts.

No PBS server can run here (none is packaged for Debian), and neither scheduler can be told to
make a requeue command fail. So these tests render the scripts from the templates (the shipped
sites, with the user overrides a site would have) and execute them here with stand-ins first on
PATH: `qsub`, `qrerun` and `scontrol` are stubs (mocked: no scheduler is involved) that record
their arguments and working directory and fail when a test says so. The launcher is a stub too
(HPCCL_LAUNCHER): it answers `hpccl check` and `hpccl run` with the exit codes a test chooses,
the run's "checkpointed, requeue me" code being hpccl's own EXIT_REQUEUE. The last test runs a
failing `scontrol requeue` under the real Slurm of the suite (the job is not requeueable).
"""

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from hpccl.core.checkpoint import EXIT_REQUEUE
from hpccl.sched.render import ScriptPlan, render_script
from hpccl.sched.sites import load_site

JOB_ID = {"slurm-local": "4711", "thetagpu": "4711.thetagpu-pbs", "local": None}
QSUB_ID = "9001.fake-pbs"
STUBS = ("qsub", "qrerun", "scontrol", "sbatch")

# Stands for `LAUNCHER PYTHON -m hpccl ARGS...`: records ARGS, and exits with STUB_CHECK_RC for
# `hpccl check` and STUB_RUN_RC for `hpccl run` (a run first touches the checkpoint when
# STUB_RUN_CHECKPOINTS=1, as a periodic checkpoint during this start would).
LAUNCHER = """#!/bin/bash
shift 3
printf '%s\\n' "$*" >> {calls}
case "$1" in
  check) exit "${{STUB_CHECK_RC:-0}}" ;;
  run) if [[ "${{STUB_RUN_CHECKPOINTS:-0}}" == 1 ]]; then
         mkdir -p {run_dir}/checkpoint && echo '{{}}' > {run_dir}/checkpoint/state.json
       fi
       exit "${{STUB_RUN_RC:-0}}" ;;
esac
exit 64
"""

# A scheduler command: records "working directory|arguments"; with STUB_<NAME>_FAIL set it
# says so on stderr and exits 1, as the real one does when it refuses.
COMMAND = """#!/bin/bash
printf '%s|%s\\n' "$PWD" "$*" >> {calls}
if [[ -n "${{STUB_{var}_FAIL:-}}" ]]; then echo "{name}: $STUB_{var}_FAIL" >&2; exit 1; fi
{output}
"""


class Job:
    """A rendered job.sh in a run directory with a space in its path, and the stubs' records."""

    def __init__(self, tmp_path, site_name):
        self.tmp, self.site_name = tmp_path, site_name
        self.run_dir = tmp_path / "run dir"
        self.run_dir.mkdir()
        site = load_site(site_name)
        plan = ScriptPlan(site=site, job_name="requeue", run_dir=str(self.run_dir),
                          submit_dir=str(tmp_path), python=sys.executable, nodes=1,
                          ranks_per_node=2, walltime="01:00:00", cores_per_node=2)
        self.script = self.run_dir / "job.sh"
        self.script.write_text(render_script(plan))
        self.script.chmod(0o755)
        # as `hpccl submit` leaves it: the first job id recorded
        if JOB_ID[site_name]:
            (self.run_dir / "job_ids.txt").write_text(JOB_ID[site_name] + "\n")
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        launcher = self.bin / "launcher"
        launcher.write_text(LAUNCHER.format(calls=shlex.quote(str(tmp_path / "launcher.calls")),
                                            run_dir=shlex.quote(str(self.run_dir))))
        launcher.chmod(0o755)
        for name in STUBS:
            stub = self.bin / name
            stub.write_text(COMMAND.format(calls=shlex.quote(str(tmp_path / f"{name}.calls")),
                                           var=name.upper(), name=name,
                                           output=f"echo {QSUB_ID}" if name == "qsub" else ""))
            stub.chmod(0o755)
        # thetagpu's scripts run as login shells (#!/bin/bash -l), whose /etc/profile resets
        # PATH: the stubs come first through the "user's" ~/.bash_profile, as in test_pbs_body.
        home = tmp_path / "home"
        home.mkdir()
        (home / ".bash_profile").write_text(f'export PATH={shlex.quote(str(self.bin))}:"$PATH"\n')
        self.env = dict(os.environ, PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}",
                        HOME=str(home), HPCCL_LAUNCHER=str(launcher), HPCCL_SKIP_MODULES="1",
                        STUB_RUN_RC=str(EXIT_REQUEUE))
        self.env.pop("HPCCL_SKIP_CHECK", None)
        if site.scheduler == "slurm":
            self.env["SLURM_JOB_ID"] = JOB_ID[site_name]
        elif site.scheduler == "pbs":
            self.env.update(PBS_JOBID=JOB_ID[site_name], PBS_O_WORKDIR=str(tmp_path),
                            PBS_NODEFILE=os.devnull)

    def run(self, **env) -> subprocess.CompletedProcess:
        # the stubs answer at once: the timeout only guards against a hang
        return subprocess.run([str(self.script)], capture_output=True, text=True, timeout=120,
                              env={**self.env, **env}, cwd=self.tmp)

    def calls(self, name) -> list[str]:
        path = self.tmp / f"{name}.calls"
        return path.read_text().splitlines() if path.exists() else []

    def attempts(self) -> str:
        return (self.run_dir / "attempts.log").read_text()

    def log_lines(self) -> list[str]:
        """attempts.log without the time stamps: 'job ID: what happened'."""
        return [line.split(" ", 1)[1] for line in self.attempts().splitlines()]

    def job_ids(self) -> str:
        return (self.run_dir / "job_ids.txt").read_text()

    def assert_ran_once(self):
        """hpccl check, then the run from the start, and no other launch."""
        assert self.calls("launcher") == [f"check {self.run_dir}/job.yaml",
                                          f"run {self.run_dir}/job.yaml --out {self.run_dir}"]

    def assert_scheduler_untouched(self, *except_):
        for name in STUBS:
            if name not in except_:
                assert self.calls(name) == [], f"{name} was called: {self.calls(name)}"


def assert_hint(line: str, prefix: str, command: str, script) -> None:
    """``line`` is ``prefix`` and then a command a user can paste into a shell as it stands:
    ``command`` with the script's path as one word (the run directory here has a space)."""
    assert line.startswith(prefix), line
    assert shlex.split(line[len(prefix):]) == [command, str(script)], f"cannot be pasted: {line!r}"


def site_with(isolated_sites, name, override: str) -> str:
    (isolated_sites / f"{name}.yaml").write_text(override)
    return name


def test_exit_requeue_is_the_code_the_templates_test():
    # the stub run exits with the runner's code; the scripts compare with the rendered one
    from hpccl.sched.render import EXIT_REQUEUE as rendered
    assert EXIT_REQUEUE == rendered


# --- Slurm ------------------------------------------------------------------------------------

def test_slurm_requeues_the_job_under_its_own_id(tmp_path):
    job = Job(tmp_path, "slurm-local")
    r = job.run()
    assert r.returncode == 0, r.stdout + r.stderr
    job.assert_ran_once()
    assert job.calls("scontrol") == [f"{tmp_path}|requeue 4711"]
    job.assert_scheduler_untouched("scontrol")
    assert "checkpointed; requeueing job 4711" in job.attempts()
    assert job.job_ids() == "4711\n"          # same id: nothing to add


def test_slurm_failed_requeue_says_how_to_resubmit_and_fails_the_job(tmp_path):
    job = Job(tmp_path, "slurm-local")
    r = job.run(STUB_SCONTROL_FAIL="error: Requested operation is presently disabled for job 4711")
    # The job ends as failed, with the run's exit code (checkpointed, not finished): a job that
    # will not come back must not look completed.
    assert r.returncode == EXIT_REQUEUE, r.stdout + r.stderr
    assert job.calls("scontrol") == [f"{tmp_path}|requeue 4711"]
    assert "scontrol: error: Requested operation is presently disabled" in r.stderr
    lines = job.log_lines()
    assert lines[-2] == "job 4711: checkpointed; requeueing job 4711", lines
    assert_hint(lines[-1], "job 4711: scontrol requeue failed; resubmit by hand: ", "sbatch", job.script)
    job.assert_scheduler_untouched("scontrol")


def test_slurm_without_requeue_ends_with_the_resume_hint(tmp_path, isolated_sites):
    site_with(isolated_sites, "slurm-local", "slurm: {requeue: false}\n")
    job = Job(tmp_path, "slurm-local")
    assert "--requeue" not in job.script.read_text()
    r = job.run()
    assert r.returncode == 0, r.stdout + r.stderr
    job.assert_ran_once()
    job.assert_scheduler_untouched()
    assert_hint(job.log_lines()[-1], "job 4711: checkpointed; resume with: ", "sbatch", job.script)


# --- PBS --------------------------------------------------------------------------------------

def test_pbs_resubmits_itself_and_appends_the_new_job_id(tmp_path):
    job = Job(tmp_path, "thetagpu")
    r = job.run()
    assert r.returncode == 0, r.stdout + r.stderr
    job.assert_ran_once()
    # submitted from the run directory (PBS writes its output files there), the script itself
    assert job.calls("qsub") == [f"{job.run_dir}|{job.run_dir}/job.sh"]
    job.assert_scheduler_untouched("qsub")
    assert job.job_ids() == f"4711.thetagpu-pbs\n{QSUB_ID}\n"   # every id the run has had
    assert f"checkpointed; resubmitted as job {QSUB_ID}" in job.attempts()


def test_pbs_failed_qsub_says_how_to_resubmit_and_fails_the_job(tmp_path):
    job = Job(tmp_path, "thetagpu")
    r = job.run(STUB_QSUB_FAIL="Job exceeds queue resource limits")
    assert r.returncode == EXIT_REQUEUE, r.stdout + r.stderr
    assert job.calls("qsub") == [f"{job.run_dir}|{job.run_dir}/job.sh"]
    assert "qsub: Job exceeds queue resource limits" in r.stderr
    assert job.job_ids() == "4711.thetagpu-pbs\n"      # no id, not even an empty line
    lines = job.log_lines()
    assert lines[-2] == f"job 4711.thetagpu-pbs: the run exited with code {EXIT_REQUEUE}", lines
    assert_hint(lines[-1], "job 4711.thetagpu-pbs: checkpointed, but qsub failed; resubmit by hand: ",
                "qsub", job.script)


def test_pbs_qrerun_reruns_the_same_job(tmp_path, isolated_sites):
    site_with(isolated_sites, "thetagpu", "pbs: {requeue: qrerun}\n")
    job = Job(tmp_path, "thetagpu")
    r = job.run()
    assert r.returncode == 0, r.stdout + r.stderr
    job.assert_ran_once()
    assert job.calls("qrerun") == [f"{tmp_path}|4711.thetagpu-pbs"]
    job.assert_scheduler_untouched("qrerun")
    assert job.job_ids() == "4711.thetagpu-pbs\n"      # same id
    assert "checkpointed; rerunning job 4711.thetagpu-pbs" in job.attempts()


def test_pbs_failed_qrerun_says_how_to_resubmit_and_fails_the_job(tmp_path, isolated_sites):
    site_with(isolated_sites, "thetagpu", "pbs: {requeue: qrerun}\n")
    job = Job(tmp_path, "thetagpu")
    r = job.run(STUB_QRERUN_FAIL="Request invalid for state of job")
    assert r.returncode == EXIT_REQUEUE, r.stdout + r.stderr
    assert job.calls("qrerun") == [f"{tmp_path}|4711.thetagpu-pbs"]
    assert "qrerun: Request invalid for state of job" in r.stderr
    job.assert_scheduler_untouched("qrerun")             # in particular, no qsub behind its back
    lines = job.log_lines()
    assert lines[-2] == "job 4711.thetagpu-pbs: checkpointed; rerunning job 4711.thetagpu-pbs", lines
    assert_hint(lines[-1], "job 4711.thetagpu-pbs: qrerun failed; resubmit by hand: ", "qsub", job.script)


def test_pbs_requeue_none_ends_with_the_resume_hint(tmp_path, isolated_sites):
    site_with(isolated_sites, "thetagpu", "pbs: {requeue: none}\n")
    job = Job(tmp_path, "thetagpu")
    r = job.run()
    assert r.returncode == 0, r.stdout + r.stderr
    job.assert_ran_once()
    job.assert_scheduler_untouched()
    assert job.job_ids() == "4711.thetagpu-pbs\n"
    assert_hint(job.log_lines()[-1], "job 4711.thetagpu-pbs: checkpointed; resume with: ", "qsub", job.script)


# --- no scheduler -----------------------------------------------------------------------------

def test_local_script_ends_with_the_resume_hint(tmp_path):
    job = Job(tmp_path, "local")
    r = job.run()
    # nothing requeues it: the script's own exit code says the run checkpointed and wants a start
    assert r.returncode == EXIT_REQUEUE, r.stdout + r.stderr
    job.assert_ran_once()
    job.assert_scheduler_untouched()
    line = job.log_lines()[-1]
    assert re.match(r"job local-\d+: ", line), line
    assert_hint(line, f"{line.split(': ')[0]}: checkpointed; resume with: ", "bash", job.script)


# --- every scheduler --------------------------------------------------------------------------

@pytest.mark.parametrize("site", ["slurm-local", "thetagpu", "local"])
@pytest.mark.parametrize("check_rc", [2, 1])
def test_failed_check_does_not_start_the_run(tmp_path, site, check_rc):
    job = Job(tmp_path, site)
    r = job.run(STUB_CHECK_RC=str(check_rc))
    assert r.returncode == check_rc, r.stdout + r.stderr
    assert job.calls("launcher") == [f"check {job.run_dir}/job.yaml"]   # no `hpccl run`
    job.assert_scheduler_untouched()
    assert [line.split(": ", 1)[1] for line in job.log_lines()] == [
        "starting", f"hpccl check failed (exit {check_rc}): not starting the run"], job.attempts()


@pytest.mark.parametrize("site, requeue_call", [("slurm-local", "scontrol"), ("thetagpu", "qsub")])
def test_a_failure_requeues_only_after_a_new_checkpoint(tmp_path, site, requeue_call):
    """A run that fails without writing a checkpoint in this start would fail the same way
    again: it is not requeued. One that wrote a checkpoint is, like a preemption; bad input
    (exit 2) is not, whatever it wrote."""
    job = Job(tmp_path, site)
    r = job.run(STUB_RUN_RC="1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert job.calls(requeue_call) == [] and "checkpointed" not in job.attempts()

    r = job.run(STUB_RUN_RC="2", STUB_RUN_CHECKPOINTS="1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert job.calls(requeue_call) == []

    # a fresh start this time (no checkpoint yet), killed after its first periodic checkpoint
    shutil.rmtree(job.run_dir / "checkpoint")
    r = job.run(STUB_RUN_RC="137", STUB_RUN_CHECKPOINTS="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(job.calls(requeue_call)) == 1
    assert "the run failed (exit 137) after writing a checkpoint: continuing from it" in job.attempts()


# --- the real Slurm ---------------------------------------------------------------------------

def test_real_slurm_refusing_the_requeue_fails_the_job_with_the_hint(slurm, tmp_path):
    """The job is submitted with --no-requeue (an sbatch option beats the script's
    #SBATCH --requeue), as on a cluster that forbids requeues: the real `scontrol requeue`
    refuses, and the job ends FAILED with the run's code and the hint in attempts.log."""
    job = Job(tmp_path, "slurm-local")
    env = {k: v for k, v in job.env.items() if not k.startswith("SLURM_")}
    env.update(slurm.client_env, PATH=os.environ["PATH"])   # the real scontrol, not the stub
    r = subprocess.run(["sbatch", "--parsable", "--no-requeue", str(job.script)], capture_output=True,
                       text=True, env=env, cwd=job.run_dir, timeout=60)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip().split(";")[0]
    # (were it requeued after all, it would come back and exit 99 again: no final state)
    info = slurm.wait_state(job_id, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=120)
    out = "".join(p.read_text() for p in job.run_dir.glob("slurm-*.out"))
    assert info["JobState"] == "FAILED" and info["ExitCode"] == f"{EXIT_REQUEUE}:0", (info, out)
    assert info.get("Requeue") == "0" and info.get("Restarts", "0") == "0", info
    lines = job.log_lines()
    assert lines[-2] == f"job {job_id}: checkpointed; requeueing job {job_id}", job.attempts() + out
    assert_hint(lines[-1], f"job {job_id}: scontrol requeue failed; resubmit by hand: ", "sbatch", job.script)
    assert f"Requested operation is presently disabled for job {job_id}" in out   # Slurm's reason
    assert job.calls("launcher") == [f"check {job.run_dir}/job.yaml",
                                     f"run {job.run_dir}/job.yaml --out {job.run_dir}"], out
    assert job.calls("scontrol") == [], "the stub scontrol was used, not Slurm's"
