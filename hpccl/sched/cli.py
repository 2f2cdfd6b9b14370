"""``hpccl submit`` and ``hpccl sites``: parse, call hpccl.sched, print."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import textwrap

import yaml

from hpccl.core import cli_args
from hpccl.core.errors import ConfigError


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def add_sched_parsers(sub) -> None:
    """Add the ``submit`` and ``sites`` commands to hpccl's sub-parsers."""
    s = sub.add_parser(
        "submit", formatter_class=_formatter,
        help="Render a batch script for a site and submit it (sbatch/qsub); or a scaling sweep.",
        description=textwrap.dedent("""\
            Render a batch script for a site into a run directory and submit it (sbatch/qsub),
            or, with --scaling, one run per GPU count under a sweep directory with a manifest.
            Nodes, ranks per node and the queue come from the site file (`hpccl sites SITE`);
            sizes or times no queue admits are refused before anything is submitted.

            examples:
              hpccl submit jobs/quickstart.yaml --site slurm-local --gpus 2 --set train.epochs=2
              hpccl submit jobs/imagenet_resnet50.yaml --site polaris --gpus 32 --walltime 02:00:00 --dry-run
              hpccl submit jobs/cifar100_resnet18.yaml --site perlmutter --scaling weak --gpus 4,8,16,32"""))
    s.add_argument("job", help="job YAML file")
    s.add_argument("--site", required=True, help="site name (see `hpccl sites`) or a site YAML file")
    s.add_argument("--gpus", required=True, metavar="N[,N...]",
                   help="GPUs (= ranks); a comma-separated list with --scaling")
    s.add_argument("--walltime", default=None, metavar="HH:MM:SS",
                   help="time limit per job (default: the site's default_walltime)")
    s.add_argument("--queue", default=None, metavar="Q",
                   help="queue/partition/QOS (default: the first of the site's queues that admits the job)")
    s.add_argument("--account", default=None, metavar="PROJECT",
                   help="project to charge (default: the site file's account)")
    s.add_argument("--out", default=None, metavar="DIR",
                   help="run directory (sweep directory with --scaling); default LOG_DIR/NAME-TIME")
    s.add_argument("--dry-run", action="store_true",
                   help="write the run directory and print the script; submit nothing")
    s.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a job setting, e.g. --set train.epochs=2 (repeatable)")
    s.add_argument("--scaling", choices=("weak", "strong"), default=None,
                   help="a scaling study over the GPU counts in --gpus")
    s.add_argument("--global-batch", type=cli_args.integer(1), default=None, metavar="B",
                   help="strong scaling: the global batch kept at every point (default: the job's "
                        "train.batch_size x the smallest GPU count)")
    s.add_argument("--min-batch-per-gpu", type=cli_args.integer(1), default=1, metavar="B",
                   help="strong scaling: refuse points whose per-GPU batch falls below this (default 1)")
    s.set_defaults(func=cmd_submit)

    t = sub.add_parser(
        "sites", formatter_class=_formatter, help="List the sites, or show one (resolved, with its files).",
        description=textwrap.dedent("""\
            List the sites hpccl knows, or show one as it is used (the shipped file with your
            overrides merged in). Site files are read from site_configs/ (shipped), then
            ~/.config/hpccl/sites/ ($XDG_CONFIG_HOME), then each directory in $HPCCL_SITE_DIR;
            a file named like an earlier one is merged over it (e.g. just `account: m1234`).

            example:
              hpccl sites polaris"""))
    t.add_argument("name", nargs="?", help="a site to show")
    t.set_defaults(func=cmd_sites)


# --- hpccl sites ------------------------------------------------------------------------------------------

def cmd_sites(args) -> int:
    from hpccl.sched.sites import available_sites, load_site, site_as_dict, site_dirs
    if args.name:
        site = load_site(args.name)
        print(f"# site '{site.name}' from: {' + '.join(site.sources)}")
        print(yaml.safe_dump(site_as_dict(site), sort_keys=False, default_flow_style=None), end="")
        if site.queues:
            print("# queues, first fit in this order:")
            for q in site.queues:
                flags = "" if q.auto else "  (only with --queue)"
                note = f"  [{q.note}]" if q.note else ""
                print(f"#   {q.name:<14} {q.describe()}{note}{flags}")
        return 0
    sites = available_sites()
    rows = []
    for name in sites:
        try:
            site = load_site(name)
            queues = ", ".join(site.queue_names()) or "-"
            rows.append((name, site.scheduler, str(site.gpus_per_node), queues, site.description))
        except ConfigError as e:
            rows.append((name, "INVALID", "", "", str(e)))
    if rows:
        widths = [max(len(r[i]) for r in rows + [("SITE", "SCHEDULER", "GPUS/NODE", "QUEUES", "")])
                  for i in range(4)]
        head = ("SITE", "SCHEDULER", "GPUS/NODE", "QUEUES", "DESCRIPTION")
        for r in [head] + rows:
            print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    print("\nsite files are read from (later ones merged over earlier ones of the same name):")
    for label, d in site_dirs():
        print(f"  {label:<15} {d}{'' if d.is_dir() else '  (does not exist)'}")
    return 0


# --- hpccl submit -----------------------------------------------------------------------------------------

# Flags whose values are written into the job script (the run directory, the queue, the project;
# the walltime and the site's name too, after reading): refused with a control character.
_SCRIPT_FLAGS = {"site": "a site name or a site file's path", "queue": "a queue name",
                 "account": "a project name", "out": "a directory path", "walltime": "a time as HH:MM:SS"}


def cmd_submit(args) -> int:
    from hpccl.sched.sites import check_one_line, load_site
    from hpccl.sched.submit import resolve_account, resolve_walltime
    from hpccl.sched.sweeps import parse_gpus
    for dest, what in _SCRIPT_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            check_one_line(f"--{dest}", value, f"{what} on one line, without newlines or other "
                           "control characters")
    site = load_site(args.site)
    gpus = parse_gpus(args.gpus)
    walltime_s = resolve_walltime(site, args.walltime)
    account = resolve_account(site, args.account, args.dry_run)
    if args.scaling is None:
        if len(gpus) > 1:
            raise ConfigError(f"--gpus {args.gpus}: a list of GPU counts needs --scaling weak or "
                              "--scaling strong (one run per count).")
        if args.global_batch is not None:
            raise ConfigError("--global-batch is for --scaling strong.")
        return _submit_one(args, site, gpus[0], walltime_s, account)
    return _submit_sweep(args, site, gpus, walltime_s, account)


def _account_note(site, account) -> str:
    if account or not site.account_required:
        return ""
    return (f"\nhpccl: note: site '{site.name}' needs an account to submit (--account PROJECT, or "
            f"'account:' in ~/.config/hpccl/sites/{site.name}.yaml); the script has none.")


def _submit_one(args, site, gpus, walltime_s, account) -> int:
    from hpccl.sched.render import describe
    from hpccl.sched.submit import (check_new_run_dir, default_run_dir, load_job_for_site, prepare,
                                    submit, submit_command, write_run_dir)
    cfg = load_job_for_site(args.job, args.set)
    run_dir = os.path.abspath(args.out) if args.out else default_run_dir(cfg)
    check_new_run_dir(run_dir, "--out" if args.out else f"{args.job}: key 'log.dir' (run directory)")
    prep = prepare(site, cfg, gpus, walltime_s, run_dir, cfg.name, args.queue, account)
    script = write_run_dir(prep)
    print(f"hpccl: run directory: {prep.run_dir}")
    print(f"hpccl: script: {script}  ({describe(prep.plan)})")
    _print_memory(prep)
    if args.dry_run:
        print(f"hpccl: dry run, nothing submitted; to submit: "
              f"{shlex.join(submit_command(site, script))}{_account_note(site, account)}\n")
        print(prep.script, end="")
        return 0
    job_id = submit(prep, {"job_source": os.path.abspath(args.job), "set": list(args.set)})
    print(f"hpccl: submitted to site '{site.name}' as job {job_id}; "
          f"follow it in {prep.run_dir}/attempts.log")
    return 0


def _print_memory(prep, label: str = "") -> None:
    if prep.memory is None:
        return
    print(f"hpccl: {label}{prep.memory.line()}")
    warning = prep.memory.warning()
    if warning:
        print(f"hpccl: warning: {label}{warning}", file=sys.stderr)


def _submit_sweep(args, site, gpus, walltime_s, account) -> int:
    from hpccl.core.errors import HpcclError
    from hpccl.sched.submit import default_run_dir, load_job_for_site, submit, write_run_dir
    from hpccl.sched.sweeps import (MANIFEST_NAME, manifest, plan_sweep, write_manifest)
    base = load_job_for_site(args.job, args.set)
    sweep_dir = (os.path.abspath(args.out) if args.out
                 else default_run_dir(base, f"-{args.scaling}"))
    from hpccl.core.paths import check_output_dir
    check_output_dir(sweep_dir, "--out" if args.out else f"{args.job}: key 'log.dir' (sweep directory)",
                     "a sweep directory to write the runs' scripts and the manifest into")
    if os.path.exists(os.path.join(sweep_dir, MANIFEST_NAME)):
        raise ConfigError(f"sweep directory {sweep_dir!r} already holds a sweep (manifest.json); "
                          "nothing was written. HINT: choose another --out.")
    points = plan_sweep(site, args.job, args.set, args.scaling, gpus, walltime_s, sweep_dir,
                        args.queue, account, args.global_batch, args.min_batch_per_gpu)
    for p in points:
        write_run_dir(p.prep)
    job_ids: dict = {}
    path = write_manifest(sweep_dir, manifest(site, args.job, args.scaling, base, points, sweep_dir,
                                              job_ids, args.dry_run))
    print(f"hpccl: {args.scaling} scaling sweep on site '{site.name}': {sweep_dir}")
    print(f"  {'GPUS':>5} {'NODES':>5} {'RANKS/NODE':>10} {'BATCH/GPU':>9} {'GLOBAL':>7} "
          f"{'LR x':>6}  {'QUEUE':<14} RUN_DIR")
    for p in points:
        e = p.manifest_entry(sweep_dir)
        print(f"  {e['gpus']:>5} {e['nodes']:>5} {e['ranks_per_node']:>10} {e['batch_per_gpu']:>9} "
              f"{e['global_batch']:>7} {e['lr_multiplier']:>6g}  {str(e['queue'] or '-'):<14} "
              f"{e['run_dir']}")
    for p in points:
        _print_memory(p.prep, f"{p.gpus} GPUs: ")
    if args.dry_run:
        print(f"hpccl: dry run, nothing submitted; manifest: {path}{_account_note(site, account)}")
        return 0
    for p in points:
        try:
            job_ids[p.gpus] = submit(p.prep, {"job_source": os.path.abspath(args.job),
                                              "set": list(args.set), "sweep": sweep_dir})
        except HpcclError as e:
            write_manifest(sweep_dir, manifest(site, args.job, args.scaling, base, points, sweep_dir,
                                               job_ids, False))
            done = ", ".join(f"{g} GPUs: job {j}" for g, j in job_ids.items()) or "none"
            raise HpcclError(f"{e}\nSubmitted before this point ({p.gpus} GPUs): {done}; the rest "
                             f"were not submitted. The manifest records which: {path}") from None
        print(f"hpccl: {p.gpus} GPUs submitted as job {job_ids[p.gpus]}")
    write_manifest(sweep_dir, manifest(site, args.job, args.scaling, base, points, sweep_dir,
                                       job_ids, False))
    print(f"hpccl: manifest: {path}")
    return 0
