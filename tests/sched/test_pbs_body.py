"""PBS scripts without a PBS server (none is packaged for Debian): render them for polaris and
thetagpu with `hpccl submit --dry-run`, then execute the script here with the variables PBS
would set (PBS_JOBID, PBS_NODEFILE, PBS_O_WORKDIR, ...) and a fake `qsub` on PATH, so the
body is proven to run: 2 ranks, a tiny job.

polaris:  the launcher is replaced by the local mpirun (HPCCL_LAUNCHER; Cray PALS mpiexec
          flags do not exist here) and `module` is skipped (HPCCL_SKIP_MODULES=1); the
          GPU-affinity wrapper is in the launch line as on the machine.
thetagpu: the site's own launch line runs as rendered: `mpirun -hostfile "$PBS_NODEFILE" ...`
          is OpenMPI, as here. A preemption signal makes the run checkpoint and the script
          qsub itself again; running it again (the "new job") resumes and finishes with the
          accuracy matrix of an uninterrupted run.
"""

import os
import signal
import socket
import subprocess
import time

import numpy as np

from hpccl.cli import main
from hpccl.core.launch import mpirun_prefix
from hpccl.core.errors import CorruptFileError
from hpccl.core.logs import read_h5

from sched_helpers import resume_supported, write_tiny_job


def pbs_env(tmp_path, job_id, slots=2, **extra) -> dict:
    """The variables PBS sets in a job, a node file, and a fake qsub first on PATH."""
    nodefile = tmp_path / "nodefile"
    nodefile.write_text(f"{socket.gethostname()}\n" * slots)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    qsub = bin_dir / "qsub"
    qsub.write_text(f'#!/bin/bash\necho "$PWD $*" >> {tmp_path}/qsub-calls\necho 9001.fake-pbs\n')
    qsub.chmod(0o755)
    # The scripts run as login shells (#!/bin/bash -l, as ALCF's examples), which set PATH from
    # /etc/profile: the fake qsub comes first on PATH through the "user's" ~/.bash_profile.
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / ".bash_profile").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    env = dict(os.environ, PBS_JOBID=job_id, PBS_JOBNAME="hpccl", PBS_NODEFILE=str(nodefile),
               PBS_O_WORKDIR=os.getcwd(), PBS_ENVIRONMENT="PBS_BATCH", PBS_QUEUE="debug",
               PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", HOME=str(home),
               PYTHONUNBUFFERED="1")
    if os.geteuid() == 0:   # OpenMPI refuses root unless told (what --allow-run-as-root does)
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.update(extra)
    return env


def render(site, job, out, *args):
    assert main(["submit", job, "--site", site, "--gpus", "2", "--account", "MyProject",
                 "--dry-run", "--out", str(out), *args]) == 0
    return str(out / "job.sh")


def test_polaris_script_body_runs_with_the_affinity_wrapper(tmp_path, capsys):
    job = write_tiny_job(tmp_path / "tiny.yaml")
    script = render("polaris", job, tmp_path / "run")
    assert "gpu_affinity.sh" in capsys.readouterr().out
    env = pbs_env(tmp_path, "4711.polaris-pbs-01", HPCCL_SKIP_MODULES="1",
                  HPCCL_LAUNCHER=" ".join(mpirun_prefix(2)))
    r = subprocess.run([script], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    log = read_h5(str(tmp_path / "run" / "log.h5"))
    assert log["attrs"]["status"] == "complete" and log["attrs"]["world_size"] == 2
    attempts = (tmp_path / "run" / "attempts.log").read_text()
    assert "job 4711.polaris-pbs-01: starting" in attempts and "exited with code 0" in attempts
    # the warning timer (sleep until 300 s before the walltime) was stopped with the run
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 3300" not in ps
    # started again after the run completed (a requeue after a node failure): nothing to do
    r = subprocess.run([script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "the run is already complete" in r.stdout, r.stdout + r.stderr


def test_pbs_warning_timer_signals_and_the_script_resubmits_itself(tmp_path, isolated_sites):
    # A 6-second walltime (a test site without Polaris' 5-minute minimum): the warning is at
    # most half of it, so the script's own timer fires after 3 s.
    (isolated_sites / "quick-polaris.yaml").write_text(
        "extends: polaris\nqueues: [{name: debug, max_nodes: 2, max_walltime: '01:00:00'}]\n")
    job = write_tiny_job(tmp_path / "tiny.yaml")
    script = render("quick-polaris", job, tmp_path / "run", "--walltime", "00:00:06")
    assert "sleep 3 " in open(script).read()
    fake = tmp_path / "fake_launcher.sh"   # stands for the run: checkpoint on USR1, exit 99
    fake.write_text("#!/bin/bash\nsleep 60 & s=$!\ntrap 'kill $s; exit 99' USR1\nwait\n")
    fake.chmod(0o755)
    # the fake launcher cannot run the pre-flight `hpccl check` either: skipped
    env = pbs_env(tmp_path, "12.polaris", HPCCL_SKIP_MODULES="1", HPCCL_LAUNCHER=str(fake),
                  HPCCL_SKIP_CHECK="1")
    # without the timer's signal the fake run sleeps its 60 s and exits 0 with no checkpoint
    r = subprocess.run([script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    attempts = (tmp_path / "run" / "attempts.log").read_text()
    for line in ("got SIGUSR1", "the run exited with code 99", "resubmitted as job 9001.fake-pbs"):
        assert line in attempts, attempts
    assert (tmp_path / "run" / "job_ids.txt").read_text() == "9001.fake-pbs\n"
    run = tmp_path / "run"
    assert (tmp_path / "qsub-calls").read_text() == f"{run} {run}/job.sh\n"


def test_thetagpu_script_preempted_resubmits_and_resumes(tmp_path, long_job, reference_run):
    assert resume_supported(), ("`hpccl run --resume` does not exist yet: the resubmitted job "
                                "cannot resume (this test passes once the runner's resume lands)")
    run = tmp_path / "run"
    script = render("thetagpu", long_job, run)
    assert 'mpirun -hostfile "$PBS_NODEFILE" -n 2 -npernode 2' in open(script).read()
    proc = subprocess.Popen([script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=pbs_env(tmp_path, "100.thetagpu-pbs"))
    try:
        end, epochs = time.time() + 180, 0
        while time.time() < end and epochs < 2 and proc.poll() is None:
            try:
                epochs = len(read_h5(str(run / "log.h5"))["epochs/loss"])
            except (OSError, KeyError, CorruptFileError):     # not there yet, or mid-flush
                pass
            time.sleep(0.2)
        assert epochs >= 2 and proc.poll() is None, proc.communicate()[0] if proc.poll() is not None else ""
        os.kill(proc.pid, signal.SIGUSR1)           # the preemption / time-limit warning
        output = proc.communicate(timeout=180)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    attempts = (run / "attempts.log").read_text()
    for line in ("got SIGUSR1", "the run exited with code 99", "resubmitted as job 9001.fake-pbs"):
        assert line in attempts, attempts + output
    assert (run / "checkpoint" / "state.json").exists()
    # PBS would now start the resubmitted job: the same script, a new job id.
    r = subprocess.run([script], capture_output=True, text=True, timeout=300,
                       env=pbs_env(tmp_path, "9001.fake-pbs"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "job 9001.fake-pbs: resuming from" in (run / "attempts.log").read_text()
    got, want = read_h5(str(run / "log.h5")), read_h5(os.path.join(reference_run, "log.h5"))
    assert got["attrs"]["status"] == "complete"
    np.testing.assert_array_equal(got["eval/top1"], want["eval/top1"])
