"""Every learner of continual jobs, registered: importing a learner's module registers its
name in ``hpccl.learners.base.LEARNERS``. Apart from ``base`` so that ``base`` imports none
of its subclasses."""

from hpccl.learners import finetune, incremental, lorac, rehearsal, scratch  # noqa: F401
from hpccl.learners.base import LEARNERS, DataSpec, Learner


def make_learner(cfg, world, data: DataSpec, loop_ctx) -> Learner:
    return LEARNERS[cfg.learner.kind](cfg, world, data, loop_ctx)
