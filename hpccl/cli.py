"""The ``hpccl`` command: parse arguments, call the library, print. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

from hpccl.errors import HpcclError


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _add(sub, name, help_text, example):
    return sub.add_parser(name, help=help_text, formatter_class=_formatter,
                          description=f"{help_text}\n\nexample:\n  {example}")


def cmd_run(args) -> int:
    from hpccl import checkpoint
    from hpccl.config import load_job
    from hpccl.launch import launched_size, relaunch, under_mpi_launch
    from hpccl.run import check_run_dir, default_run_dir
    if args.resume:
        if args.job or args.set or args.out:
            raise HpcclError("--resume RUN_DIR continues a run with the job saved in it "
                             "(RUN_DIR/config.yaml): give no JOB, --set or --out with it.")
        state = checkpoint.read_state(args.resume)   # fails clearly when there is none
        if args.np is not None and args.np != state["world_size"]:
            raise HpcclError(f"cannot resume {args.resume!r} on {args.np} ranks: its checkpoint "
                             f"was written by {state['world_size']}. HINT: -n {state['world_size']}.")
        args.job, args.out = os.path.join(args.resume, "config.yaml"), args.resume
    elif not args.job:
        raise HpcclError("hpccl run needs a JOB file (or --resume RUN_DIR).")
    cfg = load_job(args.job, args.set)  # fail on a bad job before starting any rank
    if cfg.kind == "continual" and cfg.data.path is not None:
        from hpccl.data.h5format import DatasetFile
        DatasetFile(cfg.data.path).close()
    if args.np is not None and args.np < 1:
        raise HpcclError(f"-n/--np: expected a number of ranks >= 1, found {args.np}.")
    inside = under_mpi_launch()
    if inside and args.np is not None and launched_size() not in (None, args.np):
        raise HpcclError(f"-n {args.np} was given inside an MPI launch of {launched_size()} ranks; "
                         "the launcher decides the number of ranks. HINT: drop -n, or change the "
                         "launcher's rank count.")
    run_dir = args.out or default_run_dir(cfg)
    if not inside and (args.np or 1) > 1:
        if args.resume:
            argv = ["run", "--resume", run_dir]
        else:
            check_run_dir(run_dir)
            argv = ["run", args.job, "--out", run_dir] + [x for s in args.set for x in ("--set", s)]
        print(f"hpccl: launching {args.np} ranks; run directory: {run_dir}", flush=True)
        code = relaunch(args.np, argv)
        if code == checkpoint.EXIT_REQUEUE:
            print(f"hpccl: stopped on a signal after writing a checkpoint; resume with "
                  f"'hpccl run --resume {run_dir} -n {args.np}'", file=sys.stderr)
        elif code != 0:
            print(f"hpccl: the job failed (mpirun exit code {code}); logs so far are in {run_dir}",
                  file=sys.stderr)
        else:
            print(f"hpccl: run directory: {run_dir}")
        return code
    from hpccl.runtime import abort_on_error, mpi
    MPI = mpi()
    if MPI.COMM_WORLD.Get_rank() == 0 and not args.resume:
        check_run_dir(run_dir)
    from hpccl.run import run_job
    abort_on_error(lambda: run_job(cfg, run_dir, [sys.argv[0]] + _argv_tail(), resume=bool(args.resume)))
    if MPI.COMM_WORLD.Get_rank() == 0 and os.environ.get("HPCCL_RELAUNCHED") != "1":
        print(f"hpccl: run directory: {run_dir}")
    return 0


def _argv_tail():
    return sys.argv[1:]


def cmd_validate(args) -> int:
    from hpccl.config import load_job
    cfg = load_job(args.job, args.set)
    problems = []
    if cfg.kind == "continual" and cfg.data.path is not None:
        from hpccl.data.h5format import DatasetFile
        try:
            with DatasetFile(cfg.data.path) as ds:
                info = ds.info
            if cfg.scenario.num_tasks > info.num_classes:
                problems.append(f"scenario.num_tasks ({cfg.scenario.num_tasks}) exceeds the "
                                f"dataset's {info.num_classes} classes")
        except HpcclError as e:
            problems.append(str(e))
    if problems:
        raise HpcclError(f"{args.job}: " + "; ".join(problems))
    what = (f"learner {cfg.learner.kind}, model {cfg.model.kind}, {cfg.scenario.num_tasks} tasks"
            if cfg.kind == "continual" else f"kind {cfg.kind}")
    print(f"{args.job}: valid ({cfg.name}: {what}, backend {cfg.runtime.backend})")
    return 0


def cmd_info(args) -> int:
    from hpccl.info import versions
    info = versions()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0


def cmd_analyze(args) -> int:
    from hpccl.analysis.report import format_report, summarize
    reports = [summarize(path) for path in args.runs]
    print(format_report(reports, args.format, compare=args.compare))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hpccl", formatter_class=_formatter,
        description=textwrap.dedent("""\
            hpccl: continual learning at supercomputer scale. Every MPI rank trains a
            data-parallel replica; gradients are allreduced with Horovod or torch.distributed.

            example:
              hpccl run jobs/quickstart.yaml -n 4"""))
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    r = _add(sub, "run", "Run a job: on N local ranks (-n N), or as it is inside mpirun/srun/mpiexec. "
             "SIGUSR1 or SIGTERM makes every rank checkpoint at the next epoch and exit with code 99; "
             "--resume continues from there.",
             "hpccl run jobs/quickstart.yaml -n 4 --set train.epochs=2\n  hpccl run --resume runs/quickstart-20260101-120000 -n 4")
    r.add_argument("job", nargs="?", help="job YAML file (not with --resume)")
    r.add_argument("-n", "--np", type=int, default=None, help="ranks to start under local mpirun "
                   "(ignored inside an MPI launch)")
    r.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a job setting, e.g. --set train.lr=0.1 (repeatable)")
    r.add_argument("--out", default=None, metavar="DIR", help="run directory (default: LOG_DIR/NAME-TIME)")
    r.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run that stopped "
                   "on SIGUSR1/SIGTERM (preemption, time limit) from its checkpoint; exit code 99 "
                   "means such a stop")
    r.set_defaults(func=cmd_run)

    v = _add(sub, "validate", "Check a job file (and its dataset file, if given) without running it.",
             "hpccl validate jobs/quickstart.yaml")
    v.add_argument("job")
    v.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    v.set_defaults(func=cmd_validate)

    i = _add(sub, "info", "Print versions: Python, torch, MPI library, mpi4py, h5py, Horovod and its "
             "ops, GPUs.", "hpccl info --json")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_info)

    a = _add(sub, "analyze", "Summarise run directories: accuracy matrix, forgetting, time, "
             "throughput, and where iteration time went.", "hpccl analyze runs/quickstart-* --format json")
    a.add_argument("runs", nargs="+", metavar="RUN_DIR")
    a.add_argument("--format", choices=("text", "json"), default="text")
    a.add_argument("--compare", action="store_true", help="one table, a row per run: final "
                   "accuracy, forgetting, training time, time relative to the fastest")
    a.set_defaults(func=cmd_analyze)

    d = _add(sub, "data", "Dataset tools.", "hpccl data convert digits --out data/digits.h5")
    dsub = d.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    from hpccl.data.convert_cli import add_convert_parser
    add_convert_parser(dsub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except HpcclError as e:
        print(f"hpccl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
