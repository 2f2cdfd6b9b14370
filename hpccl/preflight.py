"""Everything a run depends on that can be checked before any rank starts.

``hpccl validate``, ``hpccl run`` (in the launcher, or on rank 0 of a direct MPI launch) and
``hpccl submit`` (on the login node, before anything is queued) call :func:`preflight`: the
data file is what the job kind reads, its contents fit the scenario (data/checks.py), the
model's options build a model for the data's shape (on torch's meta device: no memory, no
time), and a pre-trained backbone is there. Each failure is an HpcclError, one paragraph.
"""

from __future__ import annotations

from hpccl.core.errors import ConfigError


def preflight(cfg, source: str) -> list[str]:
    """Raise on the first problem; return notes on what could only be partly checked. What a
    job reads is its kind's to say (``hpccl.core.kinds``: ``inputs``)."""
    from hpccl.core import kinds
    return kinds.of_job(cfg).check_inputs(cfg, source)


def check_device(cfg, source: str) -> None:
    """``runtime.device: cuda`` where torch sees no GPU: refused before launch (exit 2, the run
    directory untouched) instead of failing on every rank after it."""
    if getattr(cfg.runtime, "device", "auto") != "cuda":
        return
    import torch
    if not torch.cuda.is_available():
        raise ConfigError(f"{source}: key 'runtime.device': expected a device this machine has, found "
                          f"'cuda', but torch {torch.__version__} sees no GPU here (CUDA build: "
                          f"{torch.version.cuda}). HINT: run it on a GPU node, or set 'device: auto' "
                          "to fall back to the CPU.")


def check_host_memory(cfg, source: str) -> None:
    """A size one rank cannot hold on this machine (``rnn.hidden: 1000000``): refused before
    launch instead of a MemoryError on the ranks. Only where the job runs here: hpccl submit
    checks the site's nodes instead (sched/host_memory.py), since a login node may be smaller."""
    if cfg.kind == "online_rnn":
        from hpccl.rtrl.host_memory import check_fits_this_machine
        check_fits_this_machine(cfg, source)


def check_dataset_job(cfg, source: str) -> list[str]:
    """The inputs of a job that trains a model on an hpccl dataset (continual, megabatch): the
    file's contents fit the scenario, the model builds for its samples, a pre-trained backbone
    is there."""
    from hpccl.continual.lora.jobconfig import check_pretrained_file
    from hpccl.data.checks import check_contents
    from hpccl.data.datasets import materialize_builtin
    from hpccl.data.h5format import DatasetFile
    check_pretrained_file(cfg, source)
    path = cfg.data.path if cfg.data.path is not None else materialize_builtin(cfg.data.builtin)
    ds = DatasetFile(path)
    try:
        notes = check_contents(ds, cfg, source)
        info = ds.info
        labels = ds.labels("train")
    finally:
        ds.close()
    shape = info.sample_shape
    if cfg.kind == "continual" and cfg.scenario.kind != "megabatch":
        check_batch_fits_tasks(cfg, info, labels, source)
        from hpccl.data.pipeline import pipeline_for
        shape = pipeline_for(cfg.data, info, "cpu", cfg.seed, 0, source).output_shape(shape)
    check_model(cfg, shape, info.num_classes, source)
    return notes


def check_batch_fits_tasks(cfg, info, train_labels, source: str) -> None:
    """``train.batch_size`` against the data it will meet: a rank's mini-batch is drawn from
    its shard of one task, repeating the shard's samples when it is larger (full-batch
    training on small shards). One larger than the whole training set of every task together
    can only be a mistake, and a huge one made each epoch build an index of batch x iterations
    samples: a run that spun for hours, deaf to SIGTERM."""
    import numpy as np

    from hpccl.continual.scenario import split_classes
    sizes = [int(np.isin(train_labels, classes).sum())
             for classes in split_classes(cfg.scenario, info, cfg.seed, source)]
    if cfg.train.batch_size > sum(sizes):
        raise ConfigError(f"{source}: key 'train.batch_size': expected at most the training samples of "
                          f"the scenario's {len(sizes)} tasks together ({sum(sizes)} in "
                          f"{info.path!r}; the smallest task has {min(sizes)}), found "
                          f"{cfg.train.batch_size}. A rank's mini-batch is drawn from its shard of one "
                          "task. HINT: train.batch_size is per rank (per GPU), not global.")


def check_model(cfg, sample_shape, num_classes: int, source: str) -> None:
    """Build the job's model for the data on the meta device, so an option that cannot work
    for this data (a CNN on vectors, a negative width) fails here, naming the job file."""
    import torch

    from hpccl.models import build_model
    options = {k: v for k, v in cfg.model.options.items() if k != "pretrained"}
    try:
        with torch.device("meta"):
            build_model(cfg.model.kind, sample_shape, num_classes, **options)
    except ConfigError as e:
        raise ConfigError(f"{source}: section 'model' (kind {cfg.model.kind!r}): {e}") from None
