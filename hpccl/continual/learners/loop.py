"""The training loop shared by the learners: epochs of mini-batches from this rank's shard,
one optimizer step per mini-batch with gradients averaged over ranks.

Reads top to bottom: data -> (rehearsal) -> forward/backward -> allreduce+step. Metrics stay
on the device during the epoch and are reduced over ranks once per epoch, not per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from hpccl.core.errors import TrainingDiverged
from hpccl.data.pipeline import InputPipeline
from hpccl.core.optim import make_local_optimizer
from hpccl.core.seeding import torch_generator
from hpccl.core.training import Precision, lr_at, parameters_finite


@dataclass
class LoopContext:
    world: object                 # hpccl.core.runtime.World
    train: object                 # TrainConfig
    seed: int
    timers: object                # IterationTimers
    progress: object              # Progress (rank 0 prints)
    run_dir: str = "."
    on_epoch: Callable[[dict], None] = lambda record: None
    stop_requested: Callable[[], int] = lambda: 0   # this rank got a stop signal (preemption)
    checkpoint_due: Callable[[], int] = lambda: 0   # at an epoch end: a periodic checkpoint is due
    save_checkpoint: Optional[Callable[[dict], None]] = None   # (resume point) mid-task, collective
    inputs: Optional[InputPipeline] = None   # stored samples -> the model's input on the device

    def __post_init__(self):
        if self.inputs is None:
            self.inputs = InputPipeline(self.world.device)


def make_optimizer(model, train, world):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_local_optimizer(params, train.optimizer, train.lr, train.momentum, train.weight_decay)
    return world.backend.distributed_optimizer(model, opt)


def iterations_per_epoch(global_size: int, world_size: int, batch_size: int) -> int:
    # The same count on every rank (collectives must match), from the global size, so each
    # rank sees its whole shard once an epoch (shards differ by at most one sample).
    return max(1, math.ceil(global_size / (world_size * batch_size)))


def _epoch_order(n: int, needed: int, gen: torch.Generator) -> torch.Tensor:
    """``needed`` indices into the shard: whole permutations, concatenated as needed."""
    if n == 0:
        return torch.empty(0, dtype=torch.long)
    reps = math.ceil(needed / n)
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)])[:needed]


def _stop_diverged(world, task: int, epoch: int, iters: int, bad_at) -> None:
    """Every rank raises together, with where the first rank saw it (a collective all call)."""
    seen = world.comm.allgather(bad_at)
    ranks = [r for r, at in enumerate(seen) if at is not None]
    with_iter = [(at, r) for r, at in enumerate(seen) if at is not None and at >= 0]
    if with_iter:
        at, rank = min(with_iter)
        where = f"first at iteration {at + 1} of {iters} on rank {rank}"
    else:
        where = f"the parameters of rank {ranks[0]} at the end of the epoch"
    raise TrainingDiverged(
        f"training diverged: non-finite loss in task {task}, epoch {epoch + 1} ({where}). "
        "HINT: lower train.lr (or set train.grad_clip_norm), and check the data with 'hpccl "
        "validate'. The log keeps the epochs so far; the status is 'failed: non-finite loss'.")


def fit(model, optimizer, x: torch.Tensor, y: torch.Tensor, global_size: int, ctx: LoopContext,
        task: int, epochs: int, rehearsal: Optional[object] = None, resume: Optional[dict] = None,
        loss_fn: Optional[Callable] = None, after_step: Optional[Callable[[], None]] = None) -> dict:
    """Train on this rank's (x, y) for ``epochs``; returns totals for the log.

    ``loss_fn(logits, y)``: the training loss (default: cross-entropy over all classes).
    ``after_step()``: called after every optimizer step, when ``.grad`` holds the
    rank-averaged gradients the step used (e.g. importance tracking). A param group's
    ``lr_scale`` (default 1) multiplies the scheduled lr for that group.

    If any rank received a stop signal, all ranks stop after the same epoch (the flag rides
    on the epoch's metrics allreduce) and the result carries ``stopped_at``: what a resumed
    ``fit(..., resume=stopped_at)`` needs to continue exactly where this one stopped. A
    periodic checkpoint due at an epoch end (same allreduce) hands that point to
    ``ctx.save_checkpoint`` and training goes on.
    """
    world, train, timers = ctx.world, ctx.train, ctx.timers
    watchdog = world.watchdog
    device, b = world.device, train.batch_size
    iters = iterations_per_epoch(global_size, world.size, b)
    gen = torch_generator(ctx.seed, "batches", world.rank, task)
    samples, iterations, start_epoch = 0, 0, 0
    if resume is not None:
        if resume["generator"] is not None:
            gen.set_state(resume["generator"])
        else:   # resumed on another number of ranks: new shards, new orders
            gen = torch_generator(ctx.seed, "batches", world.rank, task, "rescaled", resume["epoch"])
        torch.set_rng_state(resume["torch_rng"])
        samples, iterations, start_epoch = resume["samples"], resume["iterations"], resume["epoch"]
    first_iteration = len(timers)
    precision = Precision(train.precision, device)
    for epoch in range(start_epoch, epochs):
        order = _epoch_order(len(x), iters * b, gen)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        first_nonfinite = torch.full((), -1, dtype=torch.long, device=device)
        ctx.progress.start_epoch(f"task {task} epoch {epoch + 1}/{epochs}", iters)
        epoch_start = len(timers)
        watchdog.where = f"task {task}, epoch {epoch + 1}"

        def start_batch(it):
            with timers.phase("data_load"):
                idx = order[it * b:(it + 1) * b]
                xb, yb = x[idx], y[idx]
            if rehearsal is not None:
                # On the CPU batch, so picking candidates costs no device-to-host copy.
                # Blocks only if the background fetch of representatives is not finished.
                with timers.phase("rehearsal_wait"), watchdog.waiting("a rehearsal draw"):
                    reps = rehearsal.representatives(xb, yb)
            with timers.phase("data_load"):
                if rehearsal is not None:
                    xb, yb = rehearsal.mix(xb, yb, reps)
                return ctx.inputs.start(xb), ctx.inputs.h2d.start(yb)

        next_batch = None
        for it in range(iters):
            timers.start_iteration()
            staged = next_batch or start_batch(it)
            with timers.phase("data_load"):
                xb = ctx.inputs.finish(staged[0], (task, epoch, it))
                yb = ctx.inputs.h2d.finish(staged[1])
            lr = lr_at(train, world.size, epoch + it / iters)
            with timers.phase("forward_backward"):
                optimizer.zero_grad()  # Horovod's wrapper takes no set_to_none; None is the default
                with precision.autocast():
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb) if loss_fn is None else loss_fn(logits, yb)
                precision.backward(loss)
            with timers.phase("allreduce_step"), watchdog.waiting("the gradient allreduce"):
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                # Clipping acts on the rank-averaged gradient, so every replica takes the same step.
                precision.step(optimizer, model.parameters(), train.grad_clip_norm)
            if after_step is not None:
                after_step()
            # The next batch's host work and copy overlap the compute queued above (on CUDA);
            # its time counts in this iteration. Not across epochs: a stop comes between them.
            next_batch = start_batch(it + 1) if it + 1 < iters else None
            with torch.no_grad():
                # Noted on the device (no sync per step); acted on at the epoch's allreduce.
                first_nonfinite = torch.where((first_nonfinite < 0) & ~torch.isfinite(loss.detach()),
                                              it, first_nonfinite)
                loss_sum += loss.detach() * len(yb)
                correct += (logits.argmax(1) == yb).sum()
            seen += len(yb)
            timers.end_iteration(task, epoch)
            ctx.progress.step()
        # One small allreduce an epoch for the metrics and the stop flag (a CPU-GPU sync
        # point, once an epoch).
        bad_at = int(first_nonfinite.item())
        diverged = bad_at >= 0 or not parameters_finite(model)
        totals = world.allreduce_sum([loss_sum.item(), correct.item(), seen, ctx.stop_requested(),
                                      int(diverged), ctx.checkpoint_due()],
                                     what="the epoch's metrics allreduce")
        times = timers.totals(since=epoch_start)
        samples += seen
        record = {"task": task, "epoch": epoch, "loss": totals[0] / max(totals[2], 1),
                  "train_accuracy": totals[1] / max(totals[2], 1), "lr": lr,
                  "samples": int(totals[2]), "time_s": times["total"], "iterations": iters}
        ctx.on_epoch(record)
        if totals[4] > 0:          # the same decision on every rank
            _stop_diverged(world, task, epoch, iters, bad_at if diverged else None)
        if epoch + 1 < epochs and (totals[3] > 0 or (totals[5] > 0 and ctx.save_checkpoint)):
            # Where a resumed fit(..., resume=...) continues: the next epoch, same batches.
            point = {"epoch": epoch + 1, "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                     "samples": samples, "iterations": iterations + len(timers) - first_iteration}
            if totals[3] > 0:
                return {"samples": samples, "iterations": point["iterations"], "stopped_at": point}
            ctx.save_checkpoint(point)
    return {"samples": samples, "iterations": iterations + len(timers) - first_iteration}
