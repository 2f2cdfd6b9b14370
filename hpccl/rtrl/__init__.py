"""Online recurrent learning with an event-based GRU (EGRU) trained by exact sparse RTRL.

Subramoney, Nazeer, Schoene, Mayr, Kappel, "Efficient Real Time Recurrent Learning through
combined activity and parameter sparsity" (arXiv 2303.05641).

Modules: ``cell`` (EGRU + pseudo-derivative), ``rtrl`` (dense and sparse RTRL), ``bptt``
(reference), ``tasks`` (spiral, digits, arrays), ``trainer`` (OnlineTrainer; data parallel through an
``allreduce_mean`` callable, e.g. ``hpccl.core.collectives.Collectives(comm).mean_tensors``).
"""

from hpccl.core.exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "hpccl.rtrl.bptt": "BPTTLearner",
    "hpccl.rtrl.cell": "EGRUCell EGRUNet pseudo_derivative spike",
    "hpccl.rtrl.rtrl": "ParamLayout RTRLLearner",
    "hpccl.rtrl.tasks": "SequenceTask digits_task from_arrays spiral_task",
    "hpccl.rtrl.trainer": "MODES OnlineTrainer evaluate make_learner",
})
