"""Anytime learning at macroscale (ALMA; Caccia et al., CoLLAs 2022, arXiv 2106.09563).

The data arrive as M i.i.d. mega-batches, one per time step; the learner decides when to
update (``wait``) and how much old data to revisit (``replay``); it is scored after every
arrival on the whole test set (cumulative error rate), and by its size and training compute.

Modules, MPI-free at the core (a rank's wrapper passes ``allreduce_mean``):

    stream.py    MegaBatchStream (permute + split + per-rank shards), Schedule/Update
    learners.py  SingleModel (finetune | reinit), GrowingEnsemble, FixedEnsemble, GrowingMoE,
                 MoENet/MoELayer; per update: validation hold-out + early stopping
    metrics.py   AnytimeMetrics (error after each arrival, CER, final error), FLOP counting
    driver.py    run(): the arrival loop tying the three together on in-memory tensors

and the job around them (``scenario: megabatch``): jobconfig.py (learner options), job.py
(one rank's run: rank groups, data, logs), report.py (``hpccl analyze``), study.py (study
files for ``scripts/alma_study.py``).
"""

from hpccl.core.exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "hpccl.alma.stream": "MegaBatchStream Schedule Update shard",
    "hpccl.alma.learners": ("ALMA_LEARNERS AlmaLearner FixedEnsemble GrowingEnsemble GrowingMoE "
        "MoELayer MoENet SingleModel TrainSettings make_alma_learner"),
    "hpccl.alma.metrics": ("AnytimeMetrics cumulative_error_rate error_count flops_per_sample "
        "num_parameters"),
})
