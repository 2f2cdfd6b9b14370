"""Online recurrent learning with an event-based GRU (EGRU) trained by exact sparse RTRL.

Subramoney, Nazeer, Schoene, Mayr, Kappel, "Efficient Real Time Recurrent Learning through
combined activity and parameter sparsity" (arXiv 2303.05641).

Modules: ``cell`` (EGRU + pseudo-derivative), ``rtrl`` (dense and sparse RTRL), ``bptt``
(reference), ``tasks`` (spiral, digits, arrays), ``trainer`` (OnlineTrainer), ``dist``
(mpi4py ``allreduce_mean``).
"""
from .bptt import BPTTLearner
from .cell import EGRUCell, EGRUNet, pseudo_derivative, spike
from .dist import mpi_allreduce_mean
from .rtrl import ParamLayout, RTRLLearner
from .tasks import SequenceTask, digits_task, from_arrays, spiral_task
from .trainer import MODES, OnlineTrainer, evaluate, make_learner

__all__ = [
    "BPTTLearner", "EGRUCell", "EGRUNet", "pseudo_derivative", "spike", "mpi_allreduce_mean",
    "ParamLayout", "RTRLLearner", "SequenceTask", "digits_task", "from_arrays", "spiral_task",
    "MODES", "OnlineTrainer", "evaluate", "make_learner",
]
