"""``hpccl pretrain JOB``: pre-train the job's ViT on classes disjoint from its continual phase
and save a plain state dict (timm ViT names) that ``model.pretrained`` then loads.

Data-parallel like ``hpccl run``: every rank trains on its shard of the pre-training classes
with the job's backend; the same loop (:func:`hpccl.continual.learners.loop.fit`) and lr scaling.
Rank 0 writes the file (atomically) and ``FILE.json`` (classes, accuracy, settings).
"""

from __future__ import annotations

import dataclasses
import json
import os

import torch

from hpccl.data.datasets import open_dataset
from hpccl.data.pipeline import pipeline_for
from hpccl.continual.scenario import ClassIncremental
from hpccl.continual.evaluate import evaluate
from hpccl.continual.learners.loop import LoopContext, fit, make_optimizer
from hpccl.continual.lora.jobconfig import pretrain_classes
from hpccl.models import build_model, place_model
from hpccl.core.progress import Progress
from hpccl.core.seeding import derive_seed
from hpccl.core.timers import IterationTimers, Stopwatch


def pretrain_train_config(cfg):
    """The job's train section with the pretrain section's overrides."""
    p = cfg.pretrain
    over = {k: getattr(p, k) for k in ("epochs", "batch_size", "lr", "optimizer", "weight_decay")
            if getattr(p, k) is not None}
    return dataclasses.replace(cfg.train, **over)


def check_pretrain_out(out: str, what: str = "pretrain output") -> None:
    """HpcclError, before any training, unless ``out`` and its ``out.json`` summary can be written
    as files (not an existing directory, their folder creatable and writable). ``what`` names
    where ``out`` came from: ``--out``, or the job file and key."""
    from hpccl.core.paths import check_output_file
    check_output_file(out, what, "a file path for the pre-trained weights", "vit.pt")
    check_output_file(out + ".json", f"{what} {out!r}: summary file",
                      "a file path for the pre-training summary")


def pretrain(cfg, out: str, world, source: str = "job") -> dict:
    if world.is_root:
        check_pretrain_out(out)
    dataset = open_dataset(cfg.data, world)
    info = dataset.info
    classes = pretrain_classes(cfg, info.num_classes, source)
    one_task = dataclasses.replace(cfg.scenario, num_tasks=1, class_order="natural", classes=classes)
    scenario = ClassIncremental(dataset, one_task, cfg.seed, world.rank, world.size, source=source)
    train = pretrain_train_config(cfg)
    options = {k: v for k, v in cfg.model.options.items() if k != "pretrained"}
    torch.manual_seed(derive_seed(cfg.seed, "model", "pretrain"))
    inputs = pipeline_for(cfg.data, info, world.device, cfg.seed, world.rank, source)
    model = place_model(build_model(cfg.model.kind, inputs.output_shape(scenario.sample_shape), info.num_classes,
                                    **options), world.device)
    optimizer = make_optimizer(model, train, world)
    progress = Progress(cfg.log.progress, enabled=world.is_root)

    def on_epoch(r):
        progress.end_epoch(f"pretrain epoch {r['epoch'] + 1}/{train.epochs}: loss {r['loss']:.4f} "
                           f"train acc {r['train_accuracy'] * 100:.1f}% lr {r['lr']:.4g} {r['time_s']:.2f}s")

    ctx = LoopContext(world=world, train=train, seed=cfg.seed, timers=IterationTimers(world.device),
                      progress=progress, run_dir=os.path.dirname(out) or ".", on_epoch=on_epoch, inputs=inputs)
    progress.message(f"hpccl: pretraining {cfg.model.kind} on classes {classes} of {info.path} "
                     f"({world.size} rank(s), backend {cfg.runtime.backend}, {train.epochs} epochs)")
    task = scenario.task(0)
    world.barrier()
    with Stopwatch() as sw:
        fit(model, optimizer, task.x, task.y, task.global_size, ctx, 0, train.epochs)
        world.barrier()
    x, y, task_ids = scenario.test_upto(0)

    @torch.no_grad()
    def predict(xb):
        model.eval()
        return model(xb)
    top1, _ = evaluate(predict, x, y, task_ids, 1, world, train.eval_batch_size, ctx.inputs)
    result = {"classes": classes, "test_accuracy": float(top1[0]), "train_time_s": sw.seconds,
              "epochs": train.epochs, "ranks": world.size, "model": {"kind": cfg.model.kind, **options},
              "seed": cfg.seed, "dataset": info.path, "out": out}
    if world.is_root:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        try:
            torch.save(state, out + ".tmp")
            os.replace(out + ".tmp", out)
        finally:
            if os.path.exists(out + ".tmp"):
                os.remove(out + ".tmp")
        with open(out + ".json", "w") as f:
            json.dump(result, f, indent=2)
        progress.message(f"pretrained on classes {classes}: test accuracy {top1[0] * 100:.1f}% "
                         f"({sw.seconds:.1f}s); wrote {out}")
    world.barrier()
    return result
