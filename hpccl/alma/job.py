"""``scenario: megabatch`` jobs: anytime learning at macroscale (ALMA), one rank's part.

A job file::

    name: alma_digits
    data: {builtin: digits}       # any hpccl HDF5 dataset: its train split is the stream,
                                  # its test split scores the model after every arrival
    scenario:
      kind: megabatch
      num_megabatches: 10         # M: the permuted training set in M (near-)equal parts
      wait: 2                     # train every w arrivals (1..M, or 'all' = M: offline)
      replay: 0.0                 # share of every past mega-batch added to each update [0, 1]
      val_share: 0.1              # of each update's data, held out for early stopping
      patience: 3                 # epochs without a better validation accuracy before stopping
      flush: true                 # when w does not divide M, also update at the last arrival
    learner:
      kind: growing_ensemble      # single | growing_ensemble | fixed_ensemble | growing_moe
      init: copy                  # and the learner's options (below)
    model: {kind: mlp, hidden: [64]}   # model size is a setting: study bigger vs smaller
    train: {epochs: 20, batch_size: 32, lr: 0.05, optimizer: sgd, momentum: 0.9}

Learners and their options:

* ``single``: one model. ``start`` [finetune]: ``finetune`` continues from the current
  model at every update, ``reinit`` starts each update from a fresh initialisation.
* ``growing_ensemble``: a new member per update, prediction by the mean of the members'
  logits. ``init`` [fresh]: ``copy`` (of the last member) or ``fresh``. ``groups`` [1].
* ``fixed_ensemble``: ``size`` [3] members from the start; ``train`` [all]: every update
  fine-tunes all of them, or ``round_robin`` one in turn. ``groups`` [1].
* ``growing_moe`` (needs ``model: {kind: moe, hidden, num_layers, num_experts}``): one
  mixture-of-experts network fine-tuned at every update; after every ``split_every`` [1]-th
  update the most used expert of each layer (gate usage on the validation data) is split,
  up to ``max_experts`` [null: no limit]; ``split_noise`` [0.001] breaks the copies' tie.

``groups`` (ensembles): the ranks form that many equal groups (ranks must divide evenly);
member i is trained data-parallel by group ``i % groups`` alone, on the update's data
sharded over the group, and each group keeps its members. A fixed ensemble trained with
``train: all`` then trains its members side by side instead of one after another; a
growing ensemble places its single new member per update on the next group in turn.
Prediction sums each group's member logits across groups.

Training per update (``hpccl.alma.learners.train_early_stopping``): a fresh optimizer of
``train.optimizer``/``lr``/``momentum``/``weight_decay``; at most ``train.epochs`` epochs of
``train.batch_size`` per rank (lr scaled by ``train.lr_scaling`` over the group's ranks),
gradients averaged over the group's ranks by MPI every step; validation accuracy after every
epoch, stop after ``patience`` epochs without improvement, restore the best epoch.

Run directory (conventions of the continual runs): ``config.yaml``; ``log.h5`` (rank 0) with
the common attributes (``job_kind=continual``, ``name``, ``config_yaml``, ``world_size``,
``hostnames``, ``device``, ``versions``, ...) plus ``scenario=megabatch``, ``learner``,
``num_megabatches``, ``wait``, ``replay``, ``val_share``, ``groups``, ``num_train``,
``num_test``, ``update_arrivals`` (JSON), ``flops_note``; at the end ``cer``,
``cer_normalized``, ``final_error``, ``train_flops``, ``parameters``, ``train_time_s``,
``wall_time_s``, ``updates``. Table ``arrivals/{arrival, updated, error, cer, parameters,
train_flops, train_time_s, wall_time_s, update_time_s}``, one row per arrival (flushed every
arrival): ``error`` is the test error of the model available after that arrival, ``cer`` the
running sum, ``train_flops`` cumulative training FLOPs over all ranks, ``train_time_s`` the
cumulative time spent in updates (slowest rank), ``wall_time_s`` since the stream started
(updates and evaluations). Table ``updates/{index, arrival, new_megabatches,
replay_samples, train_samples, val_samples, epochs, best_epoch, val_accuracy, time_s,
split}``, one row per update (``epochs``/``val_accuracy`` of the member(s) trained; for a
fixed ensemble the mean; ``split``: the experts split by growing_moe, JSON). Ranks:
``ranks/rankNNNNN.h5`` with ``group``, ``group_rank`` and ``train_flops``.

Resuming (``--resume``) is not supported for this scenario: logs are flushed at every
arrival, so a killed run keeps its curve so far.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from hpccl.alma.driver import run as drive
from hpccl.alma.learners import Placement, TrainSettings, make_alma_learner
from hpccl.alma.stream import MegaBatchStream, Schedule
from hpccl.data.datasets import open_dataset
from hpccl.core.errors import ConfigError, HpcclError
from hpccl.core.training import lr_multiplier
from hpccl.models import build_model
from hpccl.core.collectives import Collectives
from hpccl.core.session import RunSession


def _groups(cfg, world, source):
    """(group, group_comm, cross_comm, number of groups) of this rank."""
    g = int(cfg.learner.options.get("groups", 1))
    if world.size % g:
        raise ConfigError(f"{source}: key 'learner.groups': expected a number of rank groups that "
                          f"divides the {world.size} ranks evenly, found {g}.")
    per = world.size // g
    group = world.rank // per
    group_comm = world.comm.Split(group, world.rank)
    cross_comm = world.comm.Split(world.rank % per, world.rank)   # rank r of every group
    return group, group_comm, cross_comm, g


def _learner_options(cfg) -> dict:
    opts = {k: v for k, v in cfg.learner.options.items() if k != "groups"}
    if "start" in opts:
        opts["mode"] = opts.pop("start")
    return opts


def run(cfg, run_dir, argv, world, resume=False) -> dict:
    source = "job"
    session = RunSession(cfg, run_dir, argv, world, resume)
    progress = session.progress
    sc = cfg.scenario
    group, group_comm, cross_comm, num_groups = _groups(cfg, world, source)
    g_rank, g_size = group_comm.Get_rank(), group_comm.Get_size()
    dataset = open_dataset(cfg.data, world)
    info = dataset.info
    if sc.num_megabatches > info.num_train:
        raise ConfigError(f"{source}: key 'scenario.num_megabatches': expected at most the "
                          f"{info.num_train} training samples of {info.path!r}, found {sc.num_megabatches}.")
    if info.num_test == 0:
        raise HpcclError(f"{info.path}: 'scenario: megabatch' scores the model on the test split after "
                         "every arrival, but the file's /test split is empty.")
    device = world.device

    def read_rows(idx):
        x, y = dataset.read("train", idx)
        return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    # Every group holds the whole test set, sharded over its ranks.
    test_idx = np.arange(info.num_test)[g_rank::g_size]
    x_test, y_test = dataset.read("test", test_idx)
    x_test, y_test = torch.from_numpy(x_test).to(device), torch.from_numpy(y_test).to(device)

    def make_model():
        return build_model(cfg.model.kind, info.sample_shape, info.num_classes,
                           **cfg.model.options).to(device)

    t = cfg.train
    settings = TrainSettings(lr=t.lr * lr_multiplier(t, g_size), batch_size=t.batch_size, max_epochs=t.epochs,
                             patience=sc.patience, optimizer=t.optimizer, momentum=t.momentum,
                             weight_decay=t.weight_decay, seed=cfg.seed)
    across = Collectives(cross_comm)        # the ranks of the same place in every group
    placement = Placement(group=group, num_groups=num_groups, cross_sum=across.sum_tensors,
                          cross_bcast=across.bcast)
    learner = make_alma_learner(cfg.learner.kind, make_model, settings,
                                allreduce_mean=Collectives(group_comm).mean_tensors if g_size > 1 else None,
                                world_size=g_size, rank=g_rank, placement=placement, **_learner_options(cfg))
    schedule = Schedule(MegaBatchStream(info.num_train, sc.num_megabatches, cfg.seed), wait=sc.wait,
                        replay=sc.replay, flush=sc.flush)

    session.open_logs(rank_attrs={"group": group, "group_rank": g_rank, "test_rows": len(test_idx)},
                      run_attrs={
            "scenario": "megabatch", "learner": cfg.learner.kind,
            "learner_options": dict(cfg.learner.options), "model": cfg.model.kind,
            "num_megabatches": sc.num_megabatches, "wait": sc.wait, "replay": sc.replay,
            "val_share": sc.val_share, "patience": sc.patience, "groups": num_groups,
            "num_train": info.num_train, "num_test": info.num_test, "num_classes": info.num_classes,
            "update_arrivals": schedule.update_arrivals(), "arrivals_completed": 0,
            "flops_note": "torch.utils.flop_counter on one training step (forward+loss+backward) per "
                          "update, times samples processed, summed over ranks"})
    rank_log, log = session.rank_log, session.log
    progress.message(f"hpccl: {cfg.name}: ALMA, learner {cfg.learner.kind}, M={sc.num_megabatches}, "
                     f"wait {sc.wait}, replay {sc.replay:g}, {world.size} rank(s)"
                     + (f" in {num_groups} groups" if num_groups > 1 else "")
                     + f", {info.num_train} training samples, {info.num_test} test samples, {device.type}")
    start = time.perf_counter()
    train_time = 0.0

    def on_arrival(rec):
        nonlocal train_time
        train_time = rec["train_time_s"]
        info_all = cross_comm.allgather(rec["update"]) if num_groups > 1 else [rec["update"]]
        done = [i for i in info_all if i and not i.get("skipped")]
        if log is not None:
            wall = time.perf_counter() - start
            log.append("arrivals", arrival=rec["arrival"], updated=int(rec["updated"]), error=rec["error"],
                       cer=rec["cer"], parameters=rec["parameters"], train_flops=rec["train_flops"],
                       train_time_s=rec["train_time_s"], wall_time_s=wall, update_time_s=rec["update_time_s"])
            if rec["updated"]:
                val = [np.mean(np.atleast_1d(i["val_accuracy"])) for i in done]
                epochs = [np.mean(np.atleast_1d(i["epochs"])) for i in done]
                log.append("updates", index=rec["update_index"], arrival=rec["arrival"],
                           new_megabatches=json.dumps(rec["new_megabatches"]),
                           replay_samples=rec["replay_samples"], train_samples=rec["train_samples"],
                           val_samples=rec["val_samples"],
                           epochs=float(np.mean(epochs)) if epochs else float("nan"),
                           best_epoch=float(np.mean([i.get("best_epoch", np.nan) for i in done]))
                           if done else float("nan"),
                           val_accuracy=float(np.mean(val)) if val else float("nan"),
                           time_s=rec["update_time_s"],
                           split=json.dumps(next((i.get("split") for i in done if "split" in i), [])))
            log.set_attrs(arrivals_completed=rec["arrival"] + 1, train_time_s=rec["train_time_s"],
                          wall_time_s=wall)
            log.flush()
        what = "update" if rec["updated"] else "wait  "
        progress.message(f"arrival {rec['arrival'] + 1:3d}/{sc.num_megabatches} {what}: test error "
                         f"{rec['error'] * 100:5.1f}%  CER {rec['cer']:.3f}  params {rec['parameters']}  "
                         f"train FLOPs {rec['train_flops']:.3g}  train time {rec['train_time_s']:.2f}s")

    # After a failure MPI_Abort follows: nothing collective, so the groups are freed only on success.
    session.at_close(lambda ok: ok and (group_comm.Free(), cross_comm.Free()))
    with session.running():
        metrics = drive(schedule, learner, read_rows, x_test, y_test, val_share=sc.val_share, rank=g_rank,
                        size=g_size, allreduce_sum=lambda values: list(world.collectives.sum(values)),
                        allreduce_max=world.collectives.max,
                        on_arrival=on_arrival, replicas=num_groups)
        wall = world.collectives.max(time.perf_counter() - start)
        summary = {"cer": metrics.cer, "cer_normalized": metrics.cer_normalized,
                   "final_error": metrics.final_error, "train_flops": metrics.flops[-1],
                   "parameters": metrics.parameters[-1], "updates": int(sum(metrics.updated)),
                   "errors": list(metrics.errors), "wall_time_s": wall,
                   "train_time_s": train_time}
        rank_log.set_attrs(train_flops=learner.flops.total, train_samples=learner.flops.samples)
        if log is not None:
            log.set_attrs(cer=metrics.cer, cer_normalized=metrics.cer_normalized,
                          final_error=metrics.final_error, train_flops=metrics.flops[-1],
                          parameters=metrics.parameters[-1], updates=summary["updates"], wall_time_s=wall,
                          train_time_s=train_time)
    session.report(f"alma {cfg.learner.kind}: M={sc.num_megabatches} wait={sc.wait} replay={sc.replay:g}: "
                   f"CER {summary['cer']:.3f} (mean error {summary['cer_normalized'] * 100:.1f}%), final error "
                   f"{summary['final_error'] * 100:.1f}%, {summary['updates']} updates, train FLOPs "
                   f"{summary['train_flops']:.3g}, {summary['parameters']} parameters, training time "
                   f"{summary['train_time_s']:.1f}s (wall {summary['wall_time_s']:.1f}s)")
    return summary

