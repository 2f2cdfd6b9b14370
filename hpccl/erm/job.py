"""``kind: erm`` jobs: regularized empirical risk minimization over MPI, one rank's part.

    min_x  P(x) = (1/n) sum_i phi(a_i^T x, y_i) + l1 ||x||_1 + (l2/2) ||x||_2^2

Every rank reads only its contiguous block of rows (sizes within one of each other), the
solver runs data-parallel (:mod:`hpccl.erm`: full gradients and mini-batch gradients are one
allreduce each, the mini-batch is drawn from all n samples through a shared seed, iterates are
identical on all ranks), and rank 0 writes ``log.h5`` after every stage.

Job file::

    name: erm_breast_cancer
    kind: erm
    seed: 0                        # the mini-batch sampling seed
    data: {builtin: breast_cancer} # or {path: FILE}: HDF5 (dense [N, D] or CSR, e.g. from
                                   # 'hpccl data convert libsvm') or a LIBSVM text file (.bz2/.gz/.xz)
    erm:
      solver: dasvrda              # dasvrda | svrg | katyusha | sgd | fista
      loss: logistic               # logistic | squared | smoothed_hinge
      l1: 1.0e-4                   # weight of ||x||_1 (>= 0)
      l2: 1.0e-4                   # weight of (1/2)||x||^2 (>= 0; > 0 makes P* certifiable)
      epochs: 100                  # at most this many passes over the data
      target_subopt: 1.0e-8        # stop once P(x) - P* <= this; null: run all epochs
      max_time_s: null             # stop after this many solver seconds
      batch_size: null             # global mini-batch; null: floor(sqrt(n)) (every solver)
      step_scale: 1.0              # multiplier of the solver's theoretical step size
      options: {}                  # more solver options: dasvrda: m, gamma, eta, importance,
                                   #   restart (function|gradient|none|fixed), restart_period;
                                   #   svrg: m, eta, importance, snapshot; katyusha: m, L,
                                   #   importance, tau2; sgd: eta, importance, m; fista: L0, restart
      reference: true              # compute the certified optimum P* first (FISTA + Newton polish)
      reference_tol: 1.0e-12       # its relative accuracy
      reference_cache: true        # reuse P* of the same file/loss/l1/l2/preprocessing
                                   #   ($HPCCL_CACHE/erm_reference.json, default ~/.cache/hpccl)
      f_star: null                 # or give P* directly
      intercept: false             # append a constant-1 feature
      row_normalize: false         # scale every sample to unit L2 norm
      split: train                 # which split of an HDF5 file to fit (train | test)
      verify_sync: false           # check after every stage that all ranks hold identical iterates
    runtime: {backend: mpi}        # the ERM solvers allreduce with MPI (the default and only choice)
    log: {dir: runs, progress: lines}

Labels: two values for logistic / smoothed_hinge (the smaller one becomes -1, e.g. 0/1, -1/+1,
1/2), any real values for squared. ``target_subopt`` needs ``reference: true`` or ``f_star``.

Run directory (same conventions as continual runs): ``config.yaml``; ``log.h5`` (rank 0) with
attributes ``schema_version``, ``kind=run``, ``job_kind=erm``, ``status`` (running, complete,
failed), ``name``, ``config_yaml``, ``command_line``, ``world_size``, ``num_nodes``,
``hostnames``, ``device``, ``start_time``, ``versions``, and ``solver``, ``loss``, ``l1``, ``l2``,
``n``, ``dim``, ``nnz``, ``data_source``, ``data_format``, ``shard_sizes`` (JSON),
``f_star`` (NaN without a reference), ``reference_gap_bound``, ``reference_time_s``,
``reference_cached``, ``solver_params`` (JSON), ``target_subopt``; at the end ``stop_reason``
(target | epochs | max_time | diverged), ``stages_completed``, ``passes``, ``solve_time_s``,
``final_objective``, ``final_subopt``, ``allreduces``, ``allreduce_bytes``,
``train_accuracy`` and, when the HDF5 file has a test split, ``test_accuracy``. Table
``stages/{stage, objective, subopt, passes, time_s, elapsed_s, allreduces, allreduce_bytes}``,
one row per stage (row 0: the start point), flushed after every stage: ``time_s`` is rank 0's
solver time (monitoring and logging excluded), ``elapsed_s`` the wall clock since the solve
started, ``allreduces``/``allreduce_bytes`` the method's own communication (payload per rank),
all cumulative. ``solution/x``: the final iterate. ``ranks/rankNNNNN.h5``: attributes
``rank``, ``rows``, ``offset``, ``nnz``, ``read_time_s``.
"""
from __future__ import annotations

import json
import time

import numpy as np
import scipy.sparse as sp

from hpccl.erm.data import (cached_reference, load_shard, reference_key, resolve_path,
                            store_reference)
from hpccl.core.session import RunSession


def solver_options(erm_cfg, n: int) -> dict:
    """What goes to :func:`hpccl.erm.solve` as ``**solver_options``."""
    opts = dict(erm_cfg.options)
    if erm_cfg.solver != "fista":
        opts["batch_size"] = erm_cfg.batch_size or max(1, int(np.floor(np.sqrt(n))))
        opts["step_scale"] = erm_cfg.step_scale
    return opts


def _nnz(X) -> int:
    return int(X.nnz) if sp.issparse(X) else int(np.count_nonzero(X))


def _accuracy(X, y, x, comm_sum) -> float:
    correct = float(np.sum(np.where(X @ x >= 0, 1.0, -1.0) == y)) if len(y) else 0.0
    c, n = comm_sum([correct, len(y)])
    return c / n if n else float("nan")


def run(cfg, run_dir, argv, world, resume=False) -> dict:
    from hpccl.erm import Oracle, Problem, reference_optimum, solve

    session = RunSession(cfg, run_dir, argv, world, resume)
    progress = session.progress
    ecfg = cfg.erm
    path = resolve_path(cfg.data, world)
    shard = load_shard(cfg.data, ecfg, world.rank, world.size, world=world)
    comm = world.comm if world.size > 1 else None
    problem = Problem(shard.X, shard.y, n=shard.n, loss=ecfg.loss, l1=ecfg.l1, l2=ecfg.l2,
                      offset=shard.offset, name=cfg.name)
    sizes = world.comm.allgather(problem.n_local)
    nnz = int(world.allreduce_sum([_nnz(shard.X)])[0])

    session.open_logs(rank_attrs={"rows": problem.n_local, "offset": shard.offset, "nnz": _nnz(shard.X),
                                  "read_time_s": shard.read_time_s},
                      run_attrs={
            "solver": ecfg.solver, "loss": ecfg.loss, "l1": ecfg.l1, "l2": ecfg.l2, "n": shard.n,
            "dim": shard.dim, "nnz": nnz, "data_source": path, "data_format": shard.fmt,
            "shard_sizes": sizes, "seed": cfg.seed,
            "target_subopt": float("nan") if ecfg.target_subopt is None else ecfg.target_subopt,
            "f_star": float("nan"), "stages_completed": 0})
    log = session.log
    progress.message(f"hpccl: {cfg.name}: ERM, solver {ecfg.solver}, {ecfg.loss} loss, l1 {ecfg.l1:g}, "
                     f"l2 {ecfg.l2:g}; n {shard.n}, d {shard.dim}, {nnz} nonzeros ({shard.fmt}); "
                     f"{world.size} rank(s), shard rows {min(sizes)}..{max(sizes)}")
    with session.running():
        # -- reference optimum P* ---------------------------------------------------------------
        f_star, gap, ref_time, cached = ecfg.f_star, None, 0.0, False
        if f_star is None and ecfg.reference:
            key = reference_key(path, ecfg, shard.dim)
            entry = world.bcast(cached_reference(key) if world.is_root and ecfg.reference_cache else None)
            if entry is not None:
                f_star, gap, ref_time, cached = entry["f_star"], entry["gap_bound"], entry["seconds"], True
                progress.message(f"reference optimum P* = {f_star:.15g} (cached; gap bound "
                                 f"{gap if gap is not None else 'none'})")
            else:
                progress.message("computing the reference optimum P* (FISTA + Newton polish, "
                                 f"relative tolerance {ecfg.reference_tol:g}) ...")
                t0 = time.perf_counter()
                ref = reference_optimum(problem, comm, tol=ecfg.reference_tol)
                ref_time = time.perf_counter() - t0
                f_star, gap = ref.f_star, ref.gap_bound
                if world.is_root and ecfg.reference_cache:
                    store_reference(key, {"f_star": f_star, "gap_bound": gap, "seconds": ref_time,
                                          "fista_iterations": ref.fista_iterations,
                                          "source": path, "n": shard.n, "dim": shard.dim})
                progress.message(f"reference optimum P* = {f_star:.15g} in {ref_time:.2f}s "
                                 f"({ref.fista_iterations} FISTA iterations; certified gap "
                                 f"{gap if gap is not None else 'none (l2 = 0)'})")
        if log is not None:
            log.set_attrs(f_star=float("nan") if f_star is None else float(f_star),
                          reference_gap_bound=float("nan") if gap is None else float(gap),
                          reference_time_s=ref_time, reference_cached=cached)

        # -- solve ----------------------------------------------------------------------------
        oracle = Oracle(problem, comm)
        opts = solver_options(ecfg, shard.n)
        P0 = oracle.objective(np.zeros(oracle.dim))
        t_start = time.perf_counter()

        def row(stage, P, passes, wall, allreduces, nbytes):
            sub = float("nan") if f_star is None else P - f_star
            if log is not None:
                log.append("stages", stage=stage, objective=P, subopt=sub, passes=passes,
                           time_s=wall, elapsed_s=time.perf_counter() - t_start,
                           allreduces=allreduces, allreduce_bytes=nbytes)
                log.set_attrs(stages_completed=stage)
                log.flush()
            return sub

        row(0, P0, 0.0, 0.0, 0, 0)

        def on_stage(rec):
            sub = row(rec.stage, rec.objective, rec.passes, rec.wall_time, rec.allreduces,
                      rec.allreduce_bytes)
            progress.message(f"stage {rec.stage:4d}: P {rec.objective:.12f}"
                             + (f"  P-P* {sub:.3e}" if f_star is not None else "")
                             + f"  passes {rec.passes:7.2f}  time {rec.wall_time:7.3f}s  "
                             f"allreduces {rec.allreduces}")
            return None

        target = ecfg.target_subopt if f_star is not None else None
        res = solve(problem, ecfg.solver, comm, epochs=ecfg.epochs, target_subopt=target,
                    f_star=f_star, seed=cfg.seed, callback=on_stage, max_time=ecfg.max_time_s,
                    verify_sync=ecfg.verify_sync, oracle=oracle, **opts)
        last = res.history[-1]

        # -- accuracy -------------------------------------------------------------------------
        train_acc = _accuracy(problem.X, problem.y, res.x, world.allreduce_sum) \
            if ecfg.loss != "squared" else float("nan")
        test_acc = float("nan")
        if shard.fmt.startswith("hdf5") and ecfg.split == "train" and ecfg.loss != "squared":
            import h5py
            with h5py.File(path, "r") as f:
                has_test = "test/y" in f and len(f["test/y"]) > 0
            if has_test:
                from dataclasses import replace
                tshard = load_shard(cfg.data, replace(ecfg, split="test"), world.rank, world.size,
                                    label_values=shard.label_values)
                test_acc = _accuracy(tshard.X, tshard.y, res.x, world.allreduce_sum)
        if log is not None:
            log.put("solution/x", res.x)
            log.set_attrs(stop_reason=res.stop_reason, stages_completed=last.stage,
                          passes=last.passes, solve_time_s=last.wall_time,
                          final_objective=last.objective,
                          final_subopt=float("nan") if last.subopt is None else last.subopt,
                          allreduces=last.allreduces, allreduce_bytes=last.allreduce_bytes,
                          solver_params=json.dumps(res.params, default=float),
                          train_accuracy=train_acc, test_accuracy=test_acc)
    summary = {"solver": ecfg.solver, "passes": last.passes, "solve_time_s": last.wall_time,
               "final_objective": last.objective, "final_subopt": last.subopt, "f_star": f_star,
               "stop_reason": res.stop_reason, "allreduces": last.allreduces,
               "train_accuracy": train_acc, "test_accuracy": test_acc}
    if world.is_root:   # the text only rank 0 prints
        sub = "" if last.subopt is None else f", P - P* {last.subopt:.3e}"
        reach = ""
        if f_star is not None:
            marks = []
            for t in (1e-4, 1e-6, 1e-8):
                r = res.first_reaching(t)
                marks.append(f"{t:g}: " + ("-" if r is None else f"{r.passes:.1f} passes/{r.wall_time:.2f}s"))
            reach = "\nreached " + ", ".join(marks)
        acc = "" if not np.isfinite(train_acc) else f", train accuracy {train_acc * 100:.2f}%"
        if np.isfinite(test_acc):
            acc += f", test accuracy {test_acc * 100:.2f}%"
        session.report(f"erm {ecfg.solver}: {last.passes:.1f} passes, {last.wall_time:.2f}s solver time, "
                       f"{last.allreduces} allreduces ({last.allreduce_bytes / 1e6:.2f} MB per rank), "
                       f"stop: {res.stop_reason}; final P {last.objective:.12f}{sub}{acc}{reach}")
    return summary
