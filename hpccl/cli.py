"""The ``hpccl`` command: parse arguments, call the library, print. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import textwrap
import threading

from hpccl.core import cli_args, env
from hpccl.core.errors import HpcclError


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _add(sub, name, help_text, example):
    return sub.add_parser(name, help=help_text, formatter_class=_formatter,
                          description=f"{help_text}\n\nexample:\n  {example}")


def cmd_run(args) -> int:
    from hpccl.core import checkpoint, run_lock
    from hpccl.config import load_job
    from hpccl.core.launch import launched_size, relaunch, under_mpi_launch
    from hpccl.core.rundir import check_run_dir, default_run_dir
    if args.resume:
        if args.job or args.set or args.out:
            raise HpcclError("--resume RUN_DIR continues a run with the job saved in it "
                             "(RUN_DIR/config.yaml): give no JOB, --set or --out with it.")
        from hpccl.core import kinds
        saved = os.path.join(args.resume, "config.yaml")
        if os.path.isfile(saved):       # a kind that writes no checkpoint says so
            kinds.of_job(load_job(saved)).refuse_resume(args.resume)
        state = checkpoint.read_state(args.resume)   # fails clearly when there is none
        if args.np is None and not under_mpi_launch():
            args.np = state["world_size"]     # any number works; by default, the same as before
        if not under_mpi_launch():      # the logs the ranks will reopen (srun/mpiexec: rank 0 below)
            from hpccl.core.logs import check_reopen
            check_reopen(args.resume, min(state["world_size"], max(args.np, 1)))
        args.job, args.out = os.path.join(args.resume, "config.yaml"), args.resume
    elif not args.job:
        raise HpcclError("hpccl run needs a JOB file (or --resume RUN_DIR).")
    cfg = load_job(args.job, args.set)  # fail on a bad job before starting any rank
    if args.np is not None and args.np < 1:
        raise HpcclError(f"-n/--np: expected a number of ranks >= 1, found {args.np}.")
    inside = under_mpi_launch()
    if inside and args.np is not None and launched_size() not in (None, args.np):
        raise HpcclError(f"-n {args.np} was given inside an MPI launch of {launched_size()} ranks; "
                         "the launcher decides the number of ranks. HINT: drop -n, or change the "
                         "launcher's rank count.")
    run_dir = args.out or default_run_dir(cfg)
    if not inside:
        from hpccl.core.paths import check_output_dir
        check_output_dir(run_dir, "--out" if args.out else f"{args.job}: key 'log.dir' (run directory)",
                         "a run directory to write logs and checkpoints into")
        _preflight(cfg, args.job)
    if not inside and (args.np or 1) > 1:
        run_lock.refuse_if_held(run_dir)
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
    from hpccl.core.runtime import abort_on_error, mpi
    MPI = mpi()
    direct = inside and env.read("HPCCL_RELAUNCHED") != "1"    # by srun/mpiexec directly

    def root_checks():
        if direct:
            _preflight(cfg, args.job)
            if args.resume:
                from hpccl.core.logs import check_reopen
                check_reopen(run_dir, min(state["world_size"], MPI.COMM_WORLD.Get_size()))
        run_lock.acquire(run_dir)     # first: a live run is named, not just its log.h5
        if not args.resume:
            note = check_run_dir(run_dir, set_aside=True)
            if note:
                print(f"hpccl: {note}", file=sys.stderr, flush=True)
    _on_root(MPI.COMM_WORLD, root_checks)
    from hpccl.core.rundir import run_job
    abort_on_error(lambda: run_job(cfg, run_dir, [sys.argv[0]] + _argv_tail(), resume=bool(args.resume)))
    if MPI.COMM_WORLD.Get_rank() == 0 and env.read("HPCCL_RELAUNCHED") != "1":
        print(f"hpccl: run directory: {run_dir}")
    return 0


def _preflight(cfg, source, here: bool = True) -> None:
    """The job's inputs, and (``here``: before a run's ranks start, on the machine that runs
    them) the device it asks for. hpccl validate may run on a login node without GPUs: there
    a missing device is a note."""
    from hpccl.preflight import check_device, check_host_memory, preflight
    notes = preflight(cfg, source)
    for check, why in ((check_device, "on a machine without one"), (check_host_memory, "on a machine this small")):
        try:
            check(cfg, source)
        except HpcclError as e:
            if here:
                raise
            notes.append(f"{e} (a note here: hpccl run refuses it {why})")
    for note in notes:
        print(f"hpccl: note: {note}", file=sys.stderr)


def _on_root(comm, checks) -> None:
    """Rank 0 runs ``checks`` (one reader of the data, not N) and every rank learns the
    outcome, so that on a problem all of them stop together with exit code 2."""
    message = None
    if comm.Get_rank() == 0:
        try:
            checks()
        except HpcclError as e:
            message = str(e)
    message = comm.bcast(message, root=0)
    if message is not None:
        if comm.Get_rank() == 0:
            raise HpcclError(message)
        raise SystemExit(2)


def cmd_pretrain(args) -> int:
    from hpccl.config import load_job
    from hpccl.core.launch import launched_size, relaunch, under_mpi_launch
    cfg = load_job(args.job, args.set)
    if cfg.kind != "continual" or cfg.model.kind != "vit":
        raise HpcclError(f"{args.job}: hpccl pretrain trains the ViT of a continual job's model "
                         f"section; expected model.kind 'vit', found {cfg.model.kind!r}.")
    from hpccl.continual.lora.jobconfig import require_pretrain_subset
    require_pretrain_subset(cfg, args.job)
    out = args.out or cfg.pretrain.out or cfg.model.options.get("pretrained")
    if not out:
        raise HpcclError(f"{args.job}: where should the pre-trained weights go? Give --out FILE, "
                         "'pretrain.out' or 'model.pretrained' (the file the continual run loads).")
    from hpccl.continual.lora.pretrain import check_pretrain_out
    check_pretrain_out(out, "--out" if args.out else
                       f"{args.job}: key '{'pretrain.out' if cfg.pretrain.out else 'model.pretrained'}'")
    if cfg.data.path is not None:
        from hpccl.data.h5format import DatasetFile
        DatasetFile(cfg.data.path).close()
    if args.np is not None and args.np < 1:
        raise HpcclError(f"-n/--np: expected a number of ranks >= 1, found {args.np}.")
    inside = under_mpi_launch()
    if inside and args.np is not None and launched_size() not in (None, args.np):
        raise HpcclError(f"-n {args.np} was given inside an MPI launch of {launched_size()} ranks; "
                         "the launcher decides the number of ranks. HINT: drop -n.")
    if not inside and (args.np or 1) > 1:
        argv = ["pretrain", args.job, "--out", out] + [x for s in args.set for x in ("--set", s)]
        print(f"hpccl: launching {args.np} ranks to pretrain into {out}", flush=True)
        code = relaunch(args.np, argv)
        if code != 0:
            print(f"hpccl: pretraining failed (mpirun exit code {code})", file=sys.stderr)
        return code
    from hpccl.continual.lora.pretrain import pretrain
    from hpccl.core.runtime import abort_on_error, init_world, shutdown_world

    def job():
        world = init_world(cfg.runtime)
        pretrain(cfg, out, world, source=args.job)
        shutdown_world(world)
    abort_on_error(job)
    return 0


def _argv_tail():
    return sys.argv[1:]


def cmd_validate(args) -> int:
    from hpccl.config import load_job
    cfg = load_job(args.job, args.set)
    _preflight(cfg, args.job, here=False)
    from hpccl.core import kinds
    what = kinds.of_job(cfg).describe(cfg)
    print(f"{args.job}: valid ({cfg.name}: {what}, backend {cfg.runtime.backend})")
    return 0


def cmd_check(args) -> int:
    from hpccl.config import load_job
    from hpccl.core.launch import relaunch, under_mpi_launch
    for flag, value in (("--busy-seconds", args.busy_seconds), ("--timeout", args.timeout)):
        if not value > 0:
            raise HpcclError(f"hpccl check {flag}: expected a number of seconds > 0, found {value}.")
    if args.np is not None and args.np < 1:
        raise HpcclError(f"hpccl check -n/--np: expected a number of ranks >= 1, found {args.np}.")
    if args.set and not args.job:
        raise HpcclError("hpccl check --set changes a job's settings: give the JOB file too, e.g. "
                         "hpccl check jobs/quickstart.yaml --set rehearsal.ranks_per_node=2.")
    cfg = load_job(args.job, args.set) if args.job else None
    if not under_mpi_launch() and (args.np or 1) > 1:
        argv = ["check"] + ([args.job] if args.job else []) + [x for s in args.set for x in ("--set", s)]
        argv += ["--busy-seconds", str(args.busy_seconds), "--timeout", str(args.timeout)]
        return relaunch(args.np, argv)
    from hpccl.continual.rehearsal.check import run_check
    return run_check(cfg, busy_s=args.busy_seconds, timeout_s=args.timeout)


def cmd_info(args) -> int:
    from hpccl.core.info import versions
    info = versions()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _plot_runs(reports, out_dir) -> list[str]:
    """Figures for each kind of run among ``reports``."""
    from hpccl.core import kinds
    by_kind = {}
    for r in reports:
        by_kind.setdefault(kinds.of_summary(r).name, []).append(r)
    return [path for name, runs in by_kind.items() for path in kinds.KINDS[name].figures(runs, out_dir)]


def cmd_analyze(args) -> int:
    from hpccl.analysis.report import format_report, summarize
    if args.plot:   # before reading or printing anything: a --plot DIR that cannot be written
        from hpccl.core.paths import check_output_dir
        check_output_dir(args.plot, "--plot", "a directory to write PNG figures into")
    if args.tensorboard:
        from hpccl.core.paths import check_output_dir
        from hpccl.analysis.tensorboard import check_names
        check_output_dir(args.tensorboard, "--tensorboard", "a directory to write TensorBoard event files into")
        check_names(args.runs, args.tensorboard)
    sweeps = [p for p in args.runs if os.path.isfile(os.path.join(p, "manifest.json"))]
    runs = [p for p in args.runs if p not in sweeps]

    def scaling_png(path):
        return os.path.join(args.plot, f"scaling_{os.path.basename(os.path.normpath(path))}.png")
    reports = [summarize(path) for path in runs]
    if args.plot:   # the figures' own names, before any output (a directory in their place)
        from hpccl.core import kinds
        from hpccl.analysis.plots import check_plot_paths
        names = [os.path.basename(scaling_png(p)) for p in sweeps]
        for kind in {kinds.of_summary(r).name for r in reports}:
            names += kinds.KINDS[kind].figure_names()
        check_plot_paths(args.plot, names)
    if runs:
        print(format_report(reports, args.format, compare=args.compare))
        if args.plot:
            for path in _plot_runs(reports, args.plot):
                print(f"wrote {path}", file=sys.stderr)
        if args.tensorboard:
            from hpccl.analysis.tensorboard import export_runs
            for path in export_runs(runs, args.tensorboard):
                print(f"wrote {path}", file=sys.stderr)
    for path in sweeps:
        from hpccl.sched.scaling import analyze_sweep, sweep_table
        from hpccl.analysis.tables import render
        sweep = analyze_sweep(path)
        if args.format == "json":
            from hpccl.analysis.report import _jsonable
            print(json.dumps(_jsonable(sweep), indent=2))
        else:
            title = f"{sweep['mode']} scaling sweep {path} (site {sweep['site']})"
            print((title + "\n" if args.format == "text" else "") + render(*sweep_table(sweep), fmt=args.format))
        if args.plot:
            from hpccl.analysis.plots import scaling_curves
            os.makedirs(args.plot, exist_ok=True)
            out = scaling_png(path)
            scaling_curves(sweep, out)
            print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_status(args) -> int:
    from hpccl.sched.status import status_report, watch
    paths = args.runs or ["runs"]
    if args.watch is None:
        print(status_report(paths, args.format))
        return 0
    try:
        watch(paths, args.format, args.watch)
    except KeyboardInterrupt:     # Ctrl-C is how a watch ends
        pass
    return 0


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    # Bounded like -n: a count past any machine only made numbers too large for the model's floats.
    if not values or min(values) < 1 or max(values) > cli_args.MAX_RANKS:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of GPU counts in "
                                         f"[1, {cli_args.MAX_RANKS}], e.g. 1,2,4,8, found {text!r}")
    return values


def _model_baseline(args, net):
    """hpccl model's per-rank terms: calibrated from runs, or a published baseline file."""
    from hpccl.analysis.model import calibrate
    if args.baseline_file is None:
        return calibrate(args.runs, net)
    if args.runs:
        raise HpcclError(f"hpccl model takes measured runs or --baseline-file, not both: got "
                         f"{', '.join(args.runs)} and {args.baseline_file}. Give the runs to calibrate "
                         "from them, or the baseline file alone to predict from its published terms.")
    from hpccl.analysis.baseline import load_baseline
    return load_baseline(args.baseline_file)


def cmd_model(args) -> int:
    from hpccl.analysis.model import Network, measured_point
    from hpccl.analysis.report import _jsonable
    from hpccl.analysis.tables import render
    from hpccl.analysis.engines import check_plot_path, disagreements, plot_components, predict_all
    from hpccl.analysis.engines import table as engines_table
    if args.plot:
        check_plot_path(args.plot)
    gpus_per_node, cores, net = args.gpus_per_node, None, None
    if args.site:
        from hpccl.sched.sites import load_site
        site = load_site(args.site)
        gpus_per_node = gpus_per_node or site.gpus_per_node
        cores = site.cores_per_node or os.cpu_count()
        net = Network.from_site(site, os.path.splitext(os.path.basename(args.site))[0])
    m = _model_baseline(args, net)
    gpus_per_node = gpus_per_node or 4
    by_engine = predict_all(args.engine, m, args.gpus, gpus_per_node, net, args.scaling, args.global_batch,
                            not args.no_rehearsal, cores)
    rows = next(iter(by_engine.values()))
    warnings = disagreements(by_engine)
    measured = {}
    for run_dir in args.measured:
        point = measured_point(run_dir)
        measured[point["ranks"]] = point
    if args.plot:
        plot_components(by_engine, args.plot, measured or None, f"{args.scaling} scaling")
    for line in warnings:     # stderr: the table or JSON on stdout stays parseable
        print(line, file=sys.stderr)
    if args.format == "json":
        print(json.dumps(_jsonable({"engine": args.engine, "measured_components": m.__dict__,
                                    "network": net.__dict__ if net else None, "sources": m.sources,
                                    "predicted": rows, "measured": list(measured.values()),
                                    "predictions": by_engine, "disagreements": warnings}), indent=2))
        return 0
    if args.format == "text":
        link = ("none fitted" if not m.links else ", ".join(
            f"{b} {ln['scope']}-node {ln['latency_s'] * 1e6:.0f} us / {ln['bandwidth'] / 1e6:.2f} MB/s"
            for b, ln in m.links.items()) + f" fitted (wire {m.wire_bandwidth / 1e6:.2f} MB/s)")
        source = ", ".join(args.runs) or args.baseline_file
        print(f"{args.scaling} scaling predicted ({args.engine}) from {source} ({m.device}, "
              f"{m.backend} backend): compute {m.compute_s_per_sample * 1e6:.1f} us/sample, gradient "
              f"{m.gradient_bytes / 1e6:.2f} MB, fetch {m.fetch_s_per_rep * 1e6:.1f} us/representative "
              f"+ {m.fetch_s_per_owner * 1e6:.1f} us/owner; allreduce link {link}; {gpus_per_node} GPUs per node"
              + (f"; site links intra {net.intra_latency_s * 1e6:.0f} us / {net.intra_bandwidth / 1e9:.0f} GB/s, "
                 f"inter {net.inter_latency_s * 1e6:.0f} us / {net.inter_bandwidth / 1e9:.0f} GB/s" if net else ""))
        print("terms from: " + "; ".join(f"{k} <- {v}" for k, v in m.sources.items()))
    print(render(*engines_table(by_engine, measured or None), fmt=args.format))
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
    r.add_argument("-n", "--np", type=cli_args.ranks, default=None, help="ranks to start under local mpirun "
                   "(ignored inside an MPI launch)")
    r.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a job setting, e.g. --set train.lr=0.1 (repeatable)")
    r.add_argument("--out", default=None, metavar="DIR", help="run directory (default: LOG_DIR/NAME-TIME)")
    r.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run that stopped "
                   "on SIGUSR1/SIGTERM (preemption, time limit) from its checkpoint; exit code 99 "
                   "means such a stop")
    r.set_defaults(func=cmd_run)

    pt = _add(sub, "pretrain", "Pre-train the ViT of a job's model section on classes disjoint from "
              "its continual phase (pretrain.classes, or those not in scenario.classes) and save a "
              "plain state dict (timm ViT names) that model.pretrained loads; data-parallel like run.",
              "hpccl pretrain jobs/lorac_digits.yaml -n 2 && hpccl run jobs/lorac_digits.yaml -n 2")
    pt.add_argument("job", help="job YAML file (its data, model, train and pretrain sections)")
    pt.add_argument("-n", "--np", type=cli_args.ranks, default=None, help="ranks to start under local mpirun")
    pt.add_argument("--out", default=None, metavar="FILE", help="weights file (default: pretrain.out, "
                    "else model.pretrained)")
    pt.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                    help="override a job setting, e.g. --set pretrain.epochs=5 (repeatable)")
    pt.set_defaults(func=cmd_pretrain)

    v = _add(sub, "validate", "Check a job file (and its dataset file, if given) without running it.",
             "hpccl validate jobs/quickstart.yaml")
    v.add_argument("job")
    v.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    v.set_defaults(func=cmd_validate)

    c = _add(sub, "check", "Pre-flight test of the allocation, on every rank (job scripts run it before "
             "training): MPI thread level, the rehearsal buffer's windows across nodes, one-sided reads "
             "while their owner is busy outside MPI, one GPU per rank, Horovod's NCCL ops. Prints a "
             "table; exit code 2 when a check fails.",
             "srun -n 8 hpccl check job.yaml      # or locally: hpccl check jobs/quickstart.yaml -n 4")
    c.add_argument("job", nargs="?", help="job YAML file: its runtime and rehearsal settings are checked "
                   "(default: torch backend, async rehearsal, real nodes)")
    c.add_argument("-n", "--np", type=cli_args.ranks, default=None, help="ranks to start under local mpirun")
    c.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE")
    c.add_argument("--busy-seconds", type=cli_args.seconds, default=2.0, metavar="S",
                   help="how long owners stay busy outside MPI while others read (default 2)")
    c.add_argument("--timeout", type=cli_args.seconds, default=10.0, metavar="S",
                   help="a read still unfinished this long after the busy time is a hang (default 10)")
    c.set_defaults(func=cmd_check)

    i = _add(sub, "info", "Print versions: Python, torch, MPI library, mpi4py, h5py, Horovod and its "
             "ops, GPUs.", "hpccl info --json")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_info)

    a = _add(sub, "analyze", "Summarise run directories (accuracy matrix, forgetting, time, throughput, "
             "where iteration time went, per rank) or sweep directories (speedup, efficiency).",
             "hpccl analyze --compare runs/study/rehearsal runs/study/scratch --plot figures/")
    a.add_argument("runs", nargs="+", metavar="RUN_OR_SWEEP_DIR")
    a.add_argument("--plot", metavar="DIR", default=None, help="also write PNG figures into DIR")
    a.add_argument("--tensorboard", metavar="DIR", default=None, help="also write each run's scalars "
                   "as TensorBoard events into DIR/<run name>/ (the tags of log.tensorboard: true)")
    a.add_argument("--format", choices=("text", "json", "csv", "md"), default="text",
                   help="text (default), json (everything), csv or md (one row per run)")
    a.add_argument("--compare", action="store_true", help="one table, a row per run: final "
                   "accuracy, forgetting, training time, time relative to the fastest")
    a.set_defaults(func=cmd_analyze)

    st = _add(sub, "status", "One line per run (running, complete, killed, submitted...): progress, "
              "samples/s, ETA, age of the last record, scheduler job id and state. Reads logs "
              "while runs write them, without getting in their way.", "hpccl status runs/ --watch 10")
    st.add_argument("runs", nargs="*", metavar="RUN_OR_DIR", help="run, sweep or any directory "
                    "holding them (default: runs/)")
    st.add_argument("--watch", nargs="?", const=5.0, default=None, type=cli_args.seconds,
                    metavar="SECONDS", help="redraw every SECONDS (default 5) until Ctrl-C")
    st.add_argument("--format", choices=("text", "json", "csv", "md"), default="text")
    st.set_defaults(func=cmd_status)

    mo = _add(sub, "model", "Predict iteration time, throughput and efficiency on 1 to 1024 GPUs from "
              "small measured runs (1 rank, and 2+ ranks across nodes for the network) or a site's "
              "network; each term names the run it came from (formulas: docs/scaling.md).",
              "hpccl model runs/base-1rank --site polaris --gpus 1,2,4,8,16,32,64,128 --scaling weak")
    mo.add_argument("runs", nargs="*", metavar="RUN_DIR",
                    help="measured runs to calibrate from: one at 1 rank (compute, data, step, buffer "
                    "costs), and runs at 2+ ranks for the allreduce link and the per-owner get cost")
    mo.add_argument("--baseline-file", default=None, metavar="FILE",
                    help="instead of runs: a YAML file of published per-rank terms, each with its "
                    "source (e.g. benchmarks/published/resnet50_a100_amp.yaml; format in "
                    "hpccl/analysis/baseline.py); the network comes from --site")
    mo.add_argument("--engine", choices=("analytical", "simgrid", "both"), default="analytical",
                    help="analytical (closed-form terms; formulas in hpccl/analysis/model.py), simgrid "
                    "(the iteration replayed in SimGrid's SMPI: needs libsimgrid-dev; minutes at 1024 "
                    "GPUs) or both (an 'engine' column, and a warning per GPU count and term where "
                    "they differ by more than 25 %%)")
    mo.add_argument("--plot", default=None, metavar="FILE.png", help="also draw time per iteration "
                    "by component against GPUs, a panel per engine")
    mo.add_argument("--gpus", type=_int_list, default=[1, 2, 4, 8, 16, 32, 64, 128], metavar="N,N,...")
    mo.add_argument("--scaling", choices=("weak", "strong"), default="weak")
    mo.add_argument("--global-batch", type=cli_args.integer(1), default=None, help="strong scaling: the fixed global batch")
    mo.add_argument("--site", default=None, help="site config for GPUs per node, cores and network")
    mo.add_argument("--gpus-per-node", type=cli_args.integer(1, 64), default=None)
    mo.add_argument("--no-rehearsal", action="store_true", help="predict without the rehearsal buffer")
    mo.add_argument("--measured", nargs="*", default=[], metavar="RUN_DIR",
                    help="runs at other rank counts to show next to the prediction")
    mo.add_argument("--format", choices=("text", "json", "csv", "md"), default="text")
    mo.set_defaults(func=cmd_model)

    d = _add(sub, "data", "Dataset tools.", "hpccl data convert digits --out data/digits.h5")
    dsub = d.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    from hpccl.data.convert_cli import add_convert_parser
    add_convert_parser(dsub)
    from hpccl.sched.cli import add_sched_parsers
    add_sched_parsers(sub)
    return p


# Commands whose SIGTERM means something of their own (a checkpoint at the next epoch); every
# other command is ended by it as by Ctrl-C, unwinding, so a half-written file is removed
# (data convert left a 130 MB OUT.tmpPID beside --out, killed by the default action).
OWN_SIGTERM = ("run", "pretrain", "check")


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    if args.command not in OWN_SIGTERM and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return _main(args)
    finally:
        if previous is not None:          # called in process (tests): leave the caller's handler
            signal.signal(signal.SIGTERM, previous)


def _main(args) -> int:
    from hpccl.core.launch import drop_singleton_leftovers
    drop_singleton_leftovers()      # before any rank starts or MPI_Init reads them
    try:
        return args.func(args) or 0
    except HpcclError as e:
        print(f"hpccl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
