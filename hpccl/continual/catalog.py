"""Every learner of continual jobs, registered: importing a learner's module registers its
name in ``hpccl.continual.learners.base.LEARNERS``. Above both ``learners`` and ``lora`` (whose
LoRAC learner builds on ``learners``), so neither package imports the other's learners."""

from hpccl.continual.learners import finetune, incremental, rehearsal, scratch  # noqa: F401
from hpccl.continual.lora import learner as lorac  # noqa: F401
from hpccl.continual.learners.base import LEARNERS, DataSpec, Learner


def make_learner(cfg, world, data: DataSpec, loop_ctx) -> Learner:
    return LEARNERS[cfg.learner.kind](cfg, world, data, loop_ctx)
