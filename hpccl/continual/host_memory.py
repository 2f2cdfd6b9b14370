"""The host memory one rank of a continual job holds, estimated from the job and the data
file alone (``hpccl submit`` checks it against the site's nodes before anything is queued).

Per rank, as the runner holds it (continual/job.py):

- **training data**: this rank's shard of the largest task, in the dataset's dtype (a learner
  that trains on all past tasks, ``scratch``, holds all of them); the reader holds one 64 MB
  block beside it;
- **test data**: this rank's shard of every task's test split, kept for the evaluations, and
  once more while the last evaluation gathers them;
- **rehearsal buffer**: the shard's shared-memory window (classes x slots x record);
- **model and optimizer** (CPU runs; on a GPU they live on the device): parameters,
  gradients, optimizer state and the flat allreduce buffer;
- **activations** (CPU runs, likewise): what a training step keeps for the backward pass,
  the outputs of every layer for one batch of b + r samples;
- **checkpoint copy** (CPU and GPU runs): an asynchronous checkpoint copies the model, the
  optimizer and the buffer shard to host memory, where the writer thread writes them from;
- **runtime**: Python, torch, MPI, HDF5, Horovod: 0.35 GB measured here (CPU torch); on a GPU
  the CUDA context adds host memory too, taken as 2 GB (driver dependent, not measured here).
"""

from __future__ import annotations

import math

import numpy as np

from hpccl.core.memory import GB, HostMemoryEstimate

RUNTIME_BYTES = 0.35 * GB
CUDA_CONTEXT_BYTES = 2.0 * GB


def estimate(cfg, ranks: int, on_gpu: bool) -> HostMemoryEstimate:
    import torch

    from hpccl.continual.catalog import LEARNERS
    from hpccl.continual.rehearsal.buffer import slots_per_class
    from hpccl.continual.rehearsal.shard import ShardLayout
    from hpccl.continual.scenario import ClassIncremental
    from hpccl.data.datasets import materialize_builtin
    from hpccl.data.h5format import READ_BLOCK_BYTES, DatasetFile
    from hpccl.data.pipeline import pipeline_for
    from hpccl.models import build_model

    path = cfg.data.path if cfg.data.path is not None else materialize_builtin(cfg.data.builtin)
    with DatasetFile(path) as ds:
        info = ds.info
        scenario = ClassIncremental(ds, cfg.scenario, cfg.seed, 0, ranks)
        train_counts = np.bincount(ds.labels("train"), minlength=info.num_classes)
        test_counts = np.bincount(ds.labels("test"), minlength=info.num_classes)
    sample = int(np.prod(info.sample_shape)) * np.dtype(info.dtype).itemsize
    learner = LEARNERS[cfg.learner.kind]

    task_rows = [math.ceil(train_counts[c].sum() / ranks) for c in scenario.task_classes]
    train_rows = sum(task_rows) if learner.needs_past_tasks else max(task_rows)
    train = train_rows * (sample + 8) + min(READ_BLOCK_BYTES, train_rows * sample)
    test_rows = math.ceil(sum(test_counts[c].sum() for c in scenario.task_classes) / ranks)
    test = test_rows * (2 * (sample + 8) + 8)

    buffer = 0
    if learner.holds_buffer:
        slots = slots_per_class(cfg.rehearsal, info.num_classes, info.num_train, ranks)
        buffer = ShardLayout(info.num_classes, slots, info.sample_shape, info.dtype).nbytes

    shape = pipeline_for(cfg.data, info, "cpu", cfg.seed, 0).output_shape(info.sample_shape)
    options = {k: v for k, v in cfg.model.options.items() if k != "pretrained"}
    with torch.device("meta"):        # shapes only: no memory, no time
        net = build_model(cfg.model.kind, shape, info.num_classes, **options)
        params = sum(p.numel() for p in net.parameters())
        batch = cfg.train.batch_size + (cfg.rehearsal.representatives if learner.holds_buffer else 0)
        activations = 0 if on_gpu else _activation_bytes(net, (batch,) + tuple(shape))
    states = {"adam": 2, "sgd": 1 if cfg.train.momentum else 0}.get(cfg.train.optimizer, 2)
    weights = 4 * params
    model = 0 if on_gpu else weights * (3 + states)   # parameters, gradients, allreduce buffer, state
    parts = {"training data": train, "test data": test, "rehearsal buffer": buffer,
             "model and optimizer": model, "activations": activations,
             "checkpoint copy": weights * (1 + states) + buffer,
             "runtime": RUNTIME_BYTES + (CUDA_CONTEXT_BYTES if on_gpu else 0)}
    notes = ("the CUDA context's host memory is assumed (2 GB), not measured",) if on_gpu else ()
    return HostMemoryEstimate(parts, notes)


def _activation_bytes(net, input_shape) -> int:
    """What a training step keeps for the backward pass, taken as the outputs of every leaf
    module for one batch (float32), found by a forward pass on the meta device."""
    import torch
    total = [0]

    def count(module, args, out):
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * 4
    hooks = [m.register_forward_hook(count) for m in net.modules() if not any(m.children())]
    try:
        net(torch.empty(input_shape, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return total[0]
