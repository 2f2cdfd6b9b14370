"""From a job and a site to a submitted batch job: plan, write the run directory, submit.

A run directory made here holds, before the job starts:

    job.yaml          the resolved job (``--set`` applied, dataset path made absolute)
    job.sh            the batch script (hpccl.sched.render)
    gpu_affinity.sh   the GPU-affinity wrapper, on sites that use one
    submission.json   site, command, scheduler job id, layout, queue, walltime (after submission)
    job_ids.txt       every scheduler job id the run has had (a PBS resubmission appends one)

Errors a user can cause (a size or time no queue admits, a missing account, a scheduler that
refuses the job) are ConfigError/HpcclError raised before anything is submitted, or, for the
scheduler's own refusal, with its message as it was and the command that was run.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hpccl.core.errors import ConfigError, HpcclError
from hpccl.sched.host_memory import NodeMemory, check_node_memory
from hpccl.sched.render import (JOB_COPY_NAME, SCRIPT_NAME, WRAPPER_NAME, ScriptPlan,
                                render_affinity_wrapper, render_script)
from hpccl.sched.sites import (Layout, QueueConfig, SiteConfig, check_one_line, format_walltime,
                               parse_time_limit, plan_layout, select_queue)

SUBMISSION_NAME = "submission.json"
JOB_IDS_NAME = "job_ids.txt"


@dataclass
class Prepared:
    """One run, planned: what will be written and submitted."""
    plan: ScriptPlan
    layout: Layout
    queue: Optional[QueueConfig]
    cfg: object                      # hpccl.config.JobConfig, resolved for this run
    script: str                      # the rendered text
    memory: Optional[NodeMemory] = None   # host memory per node, estimated (None: no estimate)

    @property
    def run_dir(self) -> str:
        return self.plan.run_dir


def job_name(text: str) -> str:
    """A scheduler-safe job name: letters, digits, '.', '_' and '-' (at most 64 characters)."""
    return (re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "hpccl")[:64]


def resolve_walltime(site: SiteConfig, walltime: Optional[str]) -> int:
    """--walltime, else the site's default_walltime, in seconds: HH:MM:SS above zero (a zero
    limit would be written as --time=00:00:00, which Slurm reads as no limit)."""
    if walltime is None:
        source = " + ".join(site.sources) if site.sources else f"site '{site.name}'"
        return parse_time_limit(site.default_walltime, f"{source}: key 'default_walltime'")
    return parse_time_limit(walltime, "--walltime")


def resolve_account(site: SiteConfig, account: Optional[str], dry_run: bool) -> Optional[str]:
    account = account or site.account
    if not account and site.account_required and not dry_run:
        user_file = Path("~/.config/hpccl/sites") / f"{site.name}.yaml"
        raise ConfigError(f"{site.label} needs a project to charge (key 'account'), and none is "
                          f"set; nothing was submitted. HINT: pass --account PROJECT, or write "
                          f"'account: PROJECT' into {user_file} (merged over the shipped site file).")
    return account


def local_mpirun(ranks: int) -> str:
    """{local_mpirun}: the same local mpirun command ``hpccl run -n`` uses."""
    from hpccl.core.launch import mpirun_prefix
    return shlex.join(mpirun_prefix(ranks))


def prepare(site: SiteConfig, cfg, gpus: int, walltime_s: int, run_dir: str, name: str,
            queue: Optional[str] = None, account: Optional[str] = None,
            taken: Optional[dict] = None) -> Prepared:
    """Layout, queue and script for one run; raises before anything is written."""
    layout = plan_layout(site, gpus)
    chosen = select_queue(site, layout.nodes, walltime_s, queue, taken)
    memory = check_node_memory(site, cfg, layout)
    cores = site.cores_per_node or os.cpu_count() or 1
    mpirun = local_mpirun(layout.gpus) if "{local_mpirun}" in site.launcher else "mpirun"
    plan = ScriptPlan(site=site, job_name=job_name(name), run_dir=os.path.abspath(run_dir),
                      submit_dir=os.getcwd(), python=site.python or sys.executable,
                      nodes=layout.nodes, ranks_per_node=layout.ranks_per_node,
                      walltime=format_walltime(walltime_s), queue=chosen.name if chosen else None,
                      account=account, cores_per_node=cores, local_mpirun=mpirun)
    return Prepared(plan=plan, layout=layout, queue=chosen, cfg=cfg, script=render_script(plan),
                    memory=memory)


def check_new_run_dir(run_dir: str, what: str = "run directory") -> None:
    """A directory submit may write into: creatable or an existing writable directory (a file
    there made os.makedirs raise), and holding no run or submission yet."""
    from hpccl.core.paths import check_output_dir
    check_output_dir(run_dir, what, "a directory to write the job script and the run into")
    for name, what in (("log.h5", "a run (log.h5)"), (SUBMISSION_NAME, "a submitted job (submission.json)")):
        if os.path.exists(os.path.join(run_dir, name)):
            raise ConfigError(f"run directory {run_dir!r} already holds {what}; nothing was written. "
                              "HINT: choose another --out, or leave --out away for a new "
                              "time-stamped directory.")


def write_run_dir(prep: Prepared) -> str:
    """Write job.yaml, job.sh (and the affinity wrapper); returns the script's path."""
    from hpccl.config import dump_job
    run_dir = prep.plan.run_dir
    check_new_run_dir(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    dump_job(prep.cfg, os.path.join(run_dir, JOB_COPY_NAME))
    _write(os.path.join(run_dir, SCRIPT_NAME), prep.script, executable=True)
    wrapper = render_affinity_wrapper(prep.plan)
    if wrapper is not None:
        _write(os.path.join(run_dir, WRAPPER_NAME), wrapper, executable=True)
    return prep.plan.script_path


def _write(path: str, text: str, executable: bool = False) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    if executable:
        os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def submit_command(site: SiteConfig, script: str) -> list[str]:
    if site.scheduler == "slurm":
        return ["sbatch", "--parsable", script]
    if site.scheduler == "pbs":
        return ["qsub", script]
    return ["bash", script]


def parse_job_id(scheduler: str, stdout: str) -> str:
    """sbatch --parsable prints 'ID' or 'ID;cluster'; qsub prints 'ID.server'."""
    line = next((ln.strip() for ln in stdout.splitlines() if ln.strip()), "")
    if scheduler == "slurm":
        m = re.match(r"^(\d+)(;\S+)?$", line) or re.search(r"Submitted batch job (\d+)", stdout)
        return m.group(1) if m else ""
    return line.split()[0] if line else ""


def submit(prep: Prepared, extra: Optional[dict] = None) -> str:
    """Hand the script to the scheduler; record and return the job id."""
    site, plan = prep.plan.site, prep.plan
    cmd = submit_command(site, plan.script_path)
    shown = shlex.join(cmd)
    if site.scheduler == "none":
        # No scheduler: start the script in its own session, in the background.
        with open(os.path.join(plan.run_dir, "job.out"), "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=plan.run_dir, start_new_session=True)
        job_id = f"local-{proc.pid}"
    else:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=plan.run_dir, timeout=120)
        except FileNotFoundError:
            raise HpcclError(f"`{shown}` could not run: {cmd[0]!r} is not on PATH. HINT: submit from "
                             f"a login node of the site ('{site.name}' uses {site.scheduler}), or "
                             "use --dry-run to only write the script.") from None
        except subprocess.TimeoutExpired:
            raise HpcclError(f"`{shown}` did not answer within 120 s; the job may or may not have "
                             "been submitted (check the queue).") from None
        if r.returncode != 0:
            said = (r.stderr.strip() or r.stdout.strip() or "(no output)")
            raise HpcclError(f"the scheduler refused the job: `{shown}` (in {plan.run_dir}) exited "
                             f"with code {r.returncode} and said:\n{said}")
        job_id = parse_job_id(site.scheduler, r.stdout)
        if not job_id:
            raise HpcclError(f"`{shown}` succeeded but printed no job id I can read: {r.stdout!r}")
    record = {"site": site.name, "scheduler": site.scheduler, "job_id": job_id, "command": cmd,
              "script": plan.script_path, "run_dir": plan.run_dir,
              "submitted_at": _dt.datetime.now().isoformat(timespec="seconds"),
              "nodes": plan.nodes, "ranks_per_node": plan.ranks_per_node, "ranks": plan.ranks,
              "queue": plan.queue, "walltime": plan.walltime, "account": plan.account,
              "site_files": list(site.sources), **(extra or {})}
    _write(os.path.join(plan.run_dir, SUBMISSION_NAME), json.dumps(record, indent=2) + "\n")
    with open(os.path.join(plan.run_dir, JOB_IDS_NAME), "a") as f:
        f.write(job_id + "\n")
    return job_id


def load_job_for_site(job_path: str, overrides=()):
    """Load and check a job like ``hpccl run`` does, with the dataset path made absolute (the
    script runs elsewhere and later)."""
    from hpccl.config import load_job
    from hpccl.preflight import preflight
    cfg = load_job(job_path, list(overrides))
    # The job's name and log.dir make the default run directory, which the script holds.
    source = f"{job_path} (with --set)" if overrides else job_path
    for key, value in (("name", cfg.name), ("log.dir", cfg.log.dir)):
        check_one_line(f"{source}: key '{key}'", value)
    for note in preflight(cfg, job_path):     # on the login node, before anything is queued
        print(f"hpccl: note: {note}", file=sys.stderr)
    if cfg.data is not None and cfg.data.path is not None:
        cfg.data.path = os.path.abspath(cfg.data.path)
    return cfg


def default_run_dir(cfg, suffix: str = "") -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.abspath(os.path.join(cfg.log.dir, f"{cfg.name}{suffix}-{stamp}"))
