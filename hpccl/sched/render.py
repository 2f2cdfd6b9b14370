"""Batch scripts as a pure function: :class:`ScriptPlan` in, script text out.

Nothing here reads the environment, the clock or the file system (apart from the templates
shipped in ``templates/``), so the same plan always gives the same text and golden-file tests
can pin it down. Scheduler directives are sorted and their values shell-quoted, as in
submitit's ``slurm.py``: ``#SBATCH --key=value`` (a bare ``#SBATCH --key`` for flags) and
``#PBS -x value``.

Quoting protects a value on a command line, not on a comment line: a newline in a directive's
value would end the ``#SBATCH`` comment and start a shell line. So whatever a plan's source (a
site file, a flag, a plan built in Python), :func:`render_script` refuses a value that holds a
newline or another control character, naming the field, and a launcher that is not plain shell
words; site files and flags are checked on reading already, with the file and key or the flag.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shlex
from dataclasses import dataclass
from typing import Iterator, Optional

from hpccl.core.errors import ConfigError
from hpccl.sched.sites import (SiteConfig, format_walltime, parse_walltime, shell_words_problem,
                               unsafe_char)

# Exit code of a run that checkpointed on a warning signal and wants to be requeued
# (hpccl.core.checkpoint.EXIT_REQUEUE; tests check the two agree).
EXIT_REQUEUE = 99

SCRIPT_NAME = "job.sh"
JOB_COPY_NAME = "job.yaml"
WRAPPER_NAME = "gpu_affinity.sh"


@dataclass(frozen=True)
class ScriptPlan:
    """Everything a batch script depends on, resolved (no defaults looked up while rendering)."""
    site: SiteConfig
    job_name: str
    run_dir: str                 # absolute
    submit_dir: str              # absolute; the script cds here so relative job paths still work
    python: str                  # interpreter that runs `python -m hpccl`
    nodes: int
    ranks_per_node: int
    walltime: str                # HH:MM:SS
    queue: Optional[str] = None
    account: Optional[str] = None
    cores_per_node: int = 1      # resolved (site value, or the submitting machine's cores)
    local_mpirun: str = "mpirun -np 1"   # shell words for {local_mpirun}

    @property
    def ranks(self) -> int:
        return self.nodes * self.ranks_per_node

    @property
    def walltime_s(self) -> int:
        return parse_walltime(self.walltime)

    @property
    def script_path(self) -> str:
        return f"{self.run_dir}/{SCRIPT_NAME}"

    @property
    def wrapper_path(self) -> Optional[str]:
        return f"{self.run_dir}/{WRAPPER_NAME}" if self.site.gpu_affinity.mode == "wrapper" else None


# Site fields that never reach a script: free text shown by `hpccl sites`, the queues (the
# plan's queue is the chosen one's name), the scaling model's links.
_NOT_RENDERED = {"description", "queues", "network", "extends"}


def _values(value, path: str) -> Iterator[tuple[str, object]]:
    """(field, value) for every scalar and mapping key below ``value``."""
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            if not (path == "site" and f.name in _NOT_RENDERED):
                yield from _values(getattr(value, f.name), f"{path}.{f.name}")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{path} (key {key!r})", key
            yield from _values(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _values(item, f"{path}[{i}]")
    elif value is not None:
        yield path, value


def check_plan(plan: ScriptPlan) -> None:
    """Refuse a plan whose values would change the script's lines, naming the field: a newline
    or another control character in any value that is written into it, a launcher that is not
    plain shell words, a local-rank variable that is not a variable name."""
    fields = [(f"plan.{f.name}", getattr(plan, f.name)) for f in dataclasses.fields(plan)
              if f.name != "site"]
    fields += [("site.name", plan.site.name)] + list(_values(plan.site, "site"))
    for field, value in fields:
        what = unsafe_char(value)
        if what:
            raise ConfigError(f"job script: {field} = {value!r} holds {what}; a value written into a "
                              "job script must stay on its line (a newline would end an #SBATCH/#PBS "
                              "comment or a shell line and start a command), so it is refused "
                              "wherever it came from; nothing was written.")
    launcher = launcher_command(plan)
    problem = shell_words_problem(launcher)
    if problem:
        raise ConfigError(f"job script: site.launcher {plan.site.launcher!r} gives {launcher!r}, which "
                          f"holds {problem}; the launcher is written into the script as "
                          "launcher=(WORDS) and must be plain shell words; nothing was written.")
    var = plan.site.gpu_affinity.local_rank_var
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
        raise ConfigError(f"job script: site.gpu_affinity.local_rank_var {var!r} is not an "
                          "environment variable name; nothing was written.")


def _checked(text: str, what: str) -> str:
    """``text``, after a last look for a control character that no field check named (a
    template's own text)."""
    for number, line in enumerate(text.split("\n"), start=1):
        found = unsafe_char(line)
        if found:
            raise ConfigError(f"{what}: line {number} holds {found}: {line!r}; nothing was written.")
    return text


def placeholder_values(plan: ScriptPlan) -> dict:
    cores_per_rank = max(1, plan.cores_per_node // plan.ranks_per_node)
    return {"ranks": plan.ranks, "nodes": plan.nodes, "ranks_per_node": plan.ranks_per_node,
            "gpus_per_node": plan.site.gpus_per_node, "cores_per_node": plan.cores_per_node,
            "cores_per_rank": cores_per_rank,
            "cpus_per_rank": cores_per_rank * plan.site.threads_per_core,
            "local_mpirun": plan.local_mpirun}


def launcher_command(plan: ScriptPlan) -> str:
    """The site's launcher with this job's numbers filled in (shell words, as the site wrote them)."""
    return plan.site.launcher.format(**placeholder_values(plan))


def _warning_seconds(wanted: int, walltime_s: int) -> int:
    """The warning asked for, at most half the walltime (a short test job still gets one)."""
    return min(wanted, walltime_s // 2)


def _sbatch_flag(key: str, value) -> str:
    if value is True:
        return f"#SBATCH --{key}"
    return f"#SBATCH --{key}={shlex.quote(str(value))}"


def slurm_directives(plan: ScriptPlan) -> list[str]:
    site, sl = plan.site, plan.site.slurm
    values = placeholder_values(plan)
    d = {"job-name": plan.job_name, "nodes": plan.nodes, "ntasks-per-node": plan.ranks_per_node,
         "cpus-per-task": values["cpus_per_rank"], "time": plan.walltime,
         "output": f"{plan.run_dir}/slurm-%j.out", "open-mode": "append"}
    if plan.queue:
        d[sl.queue_option] = plan.queue
    if plan.account:
        d["account"] = plan.account
    if sl.constraint:
        d["constraint"] = sl.constraint
    if sl.gpu_request == "gpus-per-node":
        d["gpus-per-node"] = plan.ranks_per_node
    elif sl.gpu_request == "gres":
        d["gres"] = f"gpu:{plan.ranks_per_node}"
    if sl.exclusive:
        d["exclusive"] = True
    if site.filesystems:
        d["licenses"] = ",".join(site.filesystems)
    if sl.requeue:
        d["requeue"] = True
    warn = _warning_seconds(sl.signal_seconds, plan.walltime_s)
    if warn:
        d["signal"] = f"B:USR1@{warn}"
    d.update({k: v for k, v in sl.directives.items()})
    return [_sbatch_flag(k, d[k]) for k in sorted(d)]


def pbs_directives(plan: ScriptPlan) -> list[str]:
    site, pbs = plan.site, plan.site.pbs
    select = pbs.select.format(**placeholder_values(plan))
    items = [("-N", plan.job_name), ("-l", f"select={select}"), ("-l", f"walltime={plan.walltime}"),
             ("-j", "oe"), ("-o", f"{plan.run_dir}/pbs.out")]
    if pbs.place:
        items.append(("-l", f"place={pbs.place}"))
    if site.filesystems:
        items.append(("-l", "filesystems=" + ":".join(site.filesystems)))
    if plan.queue:
        items.append(("-q", plan.queue))
    if plan.account:
        items.append(("-A", plan.account))
    if pbs.rerunnable:
        items.append(("-r", "y"))
    for key, value in pbs.directives.items():
        # '-m: abe' is an option; anything else a resource: 'mem: 64gb' -> -l mem=64gb
        items.append((key, value) if key.startswith("-") else ("-l", f"{key}={value}"))
    return sorted(f"#PBS {flag} {shlex.quote(str(value))}" for flag, value in items)


@functools.lru_cache(maxsize=None)
def _environment():
    import jinja2
    env = jinja2.Environment(loader=jinja2.PackageLoader("hpccl.sched", "templates"),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["q"] = lambda value: shlex.quote(str(value))
    return env


_TITLES = {"slurm": "Slurm", "pbs": "PBS Pro", "none": "no scheduler"}


def render_script(plan: ScriptPlan) -> str:
    """The batch script for ``plan`` (its text; nothing is written). Raises ConfigError, naming
    the field, for a value that would change the script's lines (see :func:`check_plan`)."""
    check_plan(plan)
    site = plan.site
    if site.scheduler == "slurm":
        directives = slurm_directives(plan)
        job_id = "${SLURM_JOB_ID:-unknown}"
        resubmit = f"sbatch {shlex.quote(plan.script_path)}"
        requeue = site.slurm.requeue
        requeue_text = ("the script requeues the job (scontrol requeue), which resumes" if requeue
                        else "the job ends; resubmit it to resume")
        timer = 0
    elif site.scheduler == "pbs":
        directives = pbs_directives(plan)
        job_id = "${PBS_JOBID:-unknown}"
        resubmit = f"qsub {shlex.quote(plan.script_path)}"
        requeue = site.pbs.requeue
        requeue_text = {"resubmit": "the script submits itself again (qsub), which resumes",
                        "qrerun": "the script reruns the job (qrerun), which resumes",
                        "none": "the job ends; resubmit it to resume"}[requeue]
        warn = _warning_seconds(site.pbs.signal_seconds, plan.walltime_s)
        timer = plan.walltime_s - warn if warn else 0
    else:
        directives = []
        job_id = "local-$$"
        resubmit = f"bash {shlex.quote(plan.script_path)}"
        requeue, requeue_text, timer = False, "the script ends; run it again to resume", 0
    context = {
        "shell": site.shell, "directives": directives, "job_name": plan.job_name,
        "site_name": site.name, "scheduler_title": _TITLES[site.scheduler], "ranks": plan.ranks,
        "nodes": plan.nodes, "ranks_per_node": plan.ranks_per_node, "walltime": plan.walltime,
        "walltime_s": plan.walltime_s, "queue": plan.queue, "run_dir": plan.run_dir,
        "submit_dir": plan.submit_dir, "python": plan.python, "exit_requeue": EXIT_REQUEUE,
        "job_id_expr": job_id, "resubmit_hint": resubmit, "requeue": requeue,
        "requeue_text": requeue_text, "timer_seconds": timer,
        "module_paths": site.module_paths, "modules": site.modules,
        "env": sorted((k, v) for k, v in site.env.items()), "setup": site.setup,
        "launcher": launcher_command(plan), "wrapper": plan.wrapper_path,
    }
    return _checked(_environment().get_template(f"{site.scheduler}.sh.j2").render(**context),
                    f"the job script for site '{site.name}'")


_LOCAL_RANK_VARS = ("PMI_LOCAL_RANK", "PALS_LOCAL_RANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")


def render_affinity_wrapper(plan: ScriptPlan) -> Optional[str]:
    """The GPU-affinity wrapper (sites with ``gpu_affinity.mode: wrapper``), else None."""
    aff = plan.site.gpu_affinity
    if aff.mode != "wrapper":
        return None
    check_plan(plan)
    # The site's variable first, then those of other launchers (PALS, OpenMPI, srun), then 0.
    names = [aff.local_rank_var] + [v for v in _LOCAL_RANK_VARS if v != aff.local_rank_var]
    expr = "0"
    for name in reversed(names):
        expr = f"${{{name}:-{expr}}}"
    return _checked(_environment().get_template("gpu_affinity.sh.j2").render(
        site_name=plan.site.name, local_rank_expr=expr,
        gpus_per_node=plan.site.gpus_per_node, reverse=aff.reverse),
        f"the GPU-affinity wrapper for site '{plan.site.name}'")


def describe(plan: ScriptPlan) -> str:
    q = f", queue {plan.queue}" if plan.queue else ""
    return (f"{plan.ranks} rank(s) = {plan.nodes} node(s) x {plan.ranks_per_node}{q}, walltime "
            f"{format_walltime(plan.walltime_s)}")
