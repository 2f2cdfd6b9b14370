"""The continual kind's runner: one rank's part of a class-incremental job, from its data,
scenario and learner through training, evaluation, checkpoints and logs.

Every rank runs ``run`` (from ``hpccl.core.rundir.run_job``); rank 0 alone prints and writes
the shared ``log.h5``; every rank writes its own ``ranks/rankNNNNN.h5`` (timers). Logs are
flushed after every epoch.
"""

from __future__ import annotations

import os
import time

import numpy as np

from hpccl.core import checkpoint
from hpccl.data.datasets import open_dataset
from hpccl.data.pipeline import pipeline_for
from hpccl.continual.scenario import ClassIncremental
from hpccl.continual.evaluate import evaluate
from hpccl.continual.learners.base import DataSpec
from hpccl.continual.catalog import make_learner
from hpccl.continual.learners.loop import LoopContext
from hpccl.core.training import lr_multiplier
from hpccl.continual.metrics import average_accuracy, backward_transfer, forgetting, format_matrix
from hpccl.core.session import RunSession
from hpccl.core.timers import IterationTimers, Stopwatch, flush_timers
from hpccl.core import env
from hpccl.core.errors import ConfigError


def _log_rescale(session, state, world, cfg, report) -> None:
    """A resume on another number of ranks, in the run log's ``rescales`` table."""
    before = state["world_size"]
    row = {"task": state["task"], "from_ranks": before, "to_ranks": world.size,
           "lr_multiplier_from": lr_multiplier(cfg.train, before),
           "lr_multiplier_to": lr_multiplier(cfg.train, world.size)}
    text = (f"hpccl: resuming on {world.size} ranks a checkpoint written by {before}: data dealt "
            f"again, lr multiplier {row['lr_multiplier_from']:g} -> {row['lr_multiplier_to']:g} "
            f"(train.lr_scaling: {cfg.train.lr_scaling})")
    if report:
        row.update({k: report[k] for k in ("stored_before", "stored_after", "dropped", "dropped_per_class",
                                           "slots_per_class_from", "slots_per_class_to")})
        text += (f"; rehearsal buffer {report['stored_before']} -> {report['stored_after']} samples "
                 f"({report['slots_per_class_from']} -> {report['slots_per_class_to']} slots per class "
                 f"and rank), dropped {report['dropped']}"
                 + (f" (class:count {report['dropped_per_class']})" if report["dropped"] else ""))
    if session.log is not None:
        session.log.append("rescales", **row)
        session.log.flush()
    session.progress.message(text)


def _maybe_inject_failure(world, record):
    """Fault injection for tests of the abort path: HPCCL_INJECT_FAILURE="rank=R,task=T"
    raises on rank R after the first epoch of task T, while other ranks are mid-training;
    ",epoch=E" picks another epoch (0-based), ",how=sigkill" kills the rank instead, and
    ",once=PATH" fails only while PATH does not exist (it creates it), so a requeue succeeds."""
    spec = env.read("HPCCL_INJECT_FAILURE")
    if not spec:
        return
    try:
        where = dict(item.split("=") for item in spec.split(","))
        [int(where[k]) for k in ("rank", "task", "epoch") if k in where]
    except ValueError:
        raise ConfigError(f"environment variable HPCCL_INJECT_FAILURE: expected "
                          f"rank=R,task=T[,epoch=E][,how=sigkill][,once=PATH], found {spec!r}.") from None
    if (int(where.get("rank", 0)) == world.rank and int(where.get("task", 0)) == record["task"]
            and int(where.get("epoch", record["epoch"])) == record["epoch"]):
        once = where.get("once")            # a marker file: fail only the first time
        if once:
            if os.path.exists(once):
                return
            open(once, "w").close()
        if where.get("how") == "sigkill":     # a rank that dies without a word (node failure)
            import signal
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected failure on rank {world.rank} in task {record['task']} "
                           "(HPCCL_INJECT_FAILURE)")


def run(cfg, run_dir, argv, world, resume=False) -> dict:
    """One rank's part of a continual (class-incremental) job."""
    session = RunSession(cfg, run_dir, argv, world, resume)
    ckpt = checkpoint.load(run_dir, world) if resume else None
    dataset = open_dataset(cfg.data, world)
    scenario = ClassIncremental(dataset, cfg.scenario, cfg.seed, world.rank, world.size)
    rows, rank_rows = (ckpt[0].get("log_rows"), ckpt[2].get("log_rows")) if ckpt else (None, None)
    multiplier = lr_multiplier(cfg.train, world.size)
    session.open_logs(run_attrs={"learner": cfg.learner.kind, "lr_multiplier": multiplier},
                      rows=rows, rank_rows=rank_rows, lr_multiplier=multiplier)
    log, progress = session.log, session.progress
    timers = IterationTimers(world.device, sync=cfg.runtime.profile_sync)
    if resume:
        kept = (rank_rows or {}).get("timers")
        timers.preload({name: session.rank_log.read(f"timers/{name}")[:kept]
                        for name in timers.columns if f"timers/{name}" in session.rank_log.lengths()})
    signals = checkpoint.StopSignals()

    def on_epoch(record):
        if log is not None:
            log.append("epochs", **record)
            log.flush()
        flush_timers(session.rank_log, timers)
        _maybe_inject_failure(world, record)
        progress.end_epoch(f"task {record['task']} epoch {record['epoch'] + 1}: loss {record['loss']:.4f} "
                           f"train acc {record['train_accuracy'] * 100:.1f}% lr {record['lr']:.4g} "
                           f"{record['time_s']:.2f}s")

    inputs = pipeline_for(cfg.data, dataset.info, world.device, cfg.seed, world.rank)
    ctx = LoopContext(world=world, train=cfg.train, seed=cfg.seed, timers=timers,
                      progress=progress, run_dir=run_dir, on_epoch=on_epoch,
                      stop_requested=signals.requested, inputs=inputs)
    spec = DataSpec(input_shape=inputs.output_shape(scenario.sample_shape), num_classes=scenario.num_classes,
                    num_train=dataset.info.num_train, dtype=str(scenario.dtype),
                    sample_shape=scenario.sample_shape)
    learner = make_learner(cfg, world, spec, ctx)
    if log is not None and not resume:
        log.set_attrs(sample_shape=list(scenario.sample_shape),
                      model_parameters=sum(p.numel() for p in learner.model.parameters()),
                      model_gradient_bytes=sum(p.numel() * p.element_size()
                                               for p in learner.model.parameters() if p.requires_grad))
    T = scenario.num_tasks
    top1 = np.full((T, T), np.nan)
    top5 = np.full((T, T), np.nan)
    tasks = []
    first_task, fit_resume, train_time = 0, None, 0.0
    if ckpt is not None:
        state, shared, local = ckpt
        report = learner.restore(shared, local["learner"], checkpoint.checkpoint_dir(run_dir))
        if state["world_size"] != world.size:
            _log_rescale(session, state, world, cfg, report)
        first_task, fit_resume, train_time = state["task"], local["fit"], state["train_time_s"]
        top1, top5 = np.array(state["top1"], dtype=float), np.array(state["top5"], dtype=float)
        progress.message(f"hpccl: resuming {run_dir} at task {first_task}"
                         + (f", epoch {fit_resume['epoch']}" if fit_resume else ""))

    periodic = checkpoint.PeriodicCheckpoints(cfg.checkpoint.every, world.is_root)
    current = {"task": first_task, "start": time.perf_counter()}

    def log_checkpoint(state, stall_s, write_s):
        log.append("checkpoints", task=state["task"], epoch=state["epoch"], reason=state["reason"],
                   stall_s=stall_s, write_s=write_s)

    writer = checkpoint.CheckpointWriter(run_dir, world, keep=cfg.checkpoint.keep,
                                         asynchronous=cfg.checkpoint.write_async,
                                         on_commit=log_checkpoint if world.is_root else None)

    def save_checkpoint(next_task, fit_state, task_time, why="signal"):
        started = time.perf_counter()     # the stall: from here to the end of the copy
        flush_timers(session.rank_log, timers)    # the checkpoint counts the timer rows of now
        local = {"fit": fit_state, "learner": learner.local_state(),
                 "log_rows": {**session.rank_log.lengths(), "timers": len(timers)}}
        writer.save(state={"task": next_task, "epoch": (fit_state or {}).get("epoch", 0), "reason": why,
                           "train_time_s": train_time + task_time,
                           "top1": top1.tolist(), "top5": top5.tolist(),
                           "signal": signals.received, "log_rows": session.table_rows()},
                    shared=learner.shared_state(), local=local, files=learner.checkpoint_files(),
                    wait=why == "signal", started=started)
        session.memory.sample()          # the host copy is held until the writer is done
        periodic.saved()
        if why == "signal":
            progress.message(f"hpccl: stop signal ({signals.received or 'on another rank'}): "
                             f"checkpoint written to {checkpoint.checkpoint_dir(run_dir)}; resume with "
                             f"'hpccl run --resume {run_dir}'")

    def epoch_end_checkpoint_due():
        writer.poll()           # commit a checkpoint every rank has finished writing
        return periodic.epoch_due()

    ctx.checkpoint_due = epoch_end_checkpoint_due
    ctx.save_checkpoint = lambda point: save_checkpoint(
        current["task"], point, time.perf_counter() - current["start"], "periodic")
    progress.message(f"hpccl: {cfg.name}: learner {cfg.learner.kind}, {world.size} rank(s) on "
                     f"{world.num_nodes} node(s), {world.device.type}, backend {cfg.runtime.backend}, "
                     f"{T} tasks of {scenario.num_classes} classes")
    session.at_close(lambda ok: writer.close(ok))
    session.at_close(lambda ok: learner.close(ok))
    session.at_close(lambda ok: flush_timers(session.rank_log, timers))
    session.at_close(lambda ok: signals.restore())
    with session.running():
        for t in range(T):
            task = scenario.task(t) if t >= first_task or learner.needs_past_tasks else None
            tasks.append(task)
            if t < first_task:
                continue
            world.barrier()  # time the task on all ranks from a common start
            current["task"], current["start"] = t, time.perf_counter()
            with Stopwatch() as sw:
                stats = learner.learn_task(task, tasks, resume=fit_resume if t == first_task else None)
                world.barrier()
            if "stopped_at" in stats:
                save_checkpoint(t, stats["stopped_at"], sw.seconds)
                raise checkpoint.Preempted()
            train_time += sw.seconds
            # The task's data, the full buffer and a checkpoint copy still being written are all
            # held here: a peak the 0.25 s watch would catch only by chance.
            session.memory.sample()
            x, y, task_ids = scenario.test_upto(t)
            session.memory.sample()          # the task and the gathered test data, at their peak
            a1, a5 = evaluate(learner.predict, x, y, task_ids, t + 1, world, cfg.train.eval_batch_size,
                              ctx.inputs)
            top1[t, :t + 1], top5[t, :t + 1] = a1, a5
            samples = int(world.allreduce_sum([stats["samples"]])[0])
            facts = learner.rank_facts()
            if facts:
                session.rank_log.append("tasks", index=t, **facts)
                session.rank_log.flush()   # on disk before a checkpoint counts this row
            if log is not None:
                log.append("tasks", index=t, train_time_s=sw.seconds, samples=samples,
                           iterations=stats["iterations"],
                           average_accuracy=float(np.mean(a1)), classes=" ".join(map(str, task.classes)),
                           **learner.task_facts())
                log.put("eval/top1", top1)
                log.put("eval/top5", top5)
                log.set_attrs(tasks_completed=t + 1, train_time_s=train_time)
                log.flush()
            progress.message(f"after task {t}: average accuracy {np.mean(a1) * 100:.1f}% "
                             f"(top-5 {np.mean(a5) * 100:.1f}%), task time {sw.seconds:.2f}s")
            writer.poll()
            stop, due = world.allreduce_sum([signals.requested(), periodic.task_due()])
            if t + 1 < T and stop > 0:
                save_checkpoint(t + 1, None, 0.0)
                raise checkpoint.Preempted()
            if t + 1 < T and due > 0:
                save_checkpoint(t + 1, None, 0.0, "periodic")
            if not learner.needs_past_tasks:
                tasks[t] = task = None      # released before the next task is read
    summary = {"final_average_accuracy": float(average_accuracy(top1)[-1]),
               "forgetting": float(forgetting(top1)[-1]), "backward_transfer": backward_transfer(top1),
               "train_time_s": train_time, "accuracy_matrix": top1}
    session.report(f"{format_matrix(top1)}\nfinal average accuracy "
                   f"{summary['final_average_accuracy'] * 100:.1f}%  forgetting {summary['forgetting'] * 100:.1f}%  "
                   f"BWT {summary['backward_transfer'] * 100:+.1f}%  training time {train_time:.1f}s")
    return summary
