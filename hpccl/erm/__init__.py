"""Regularized empirical risk minimization at scale: DASVRDA and baselines over MPI.

    min_x  P(x) = (1/n) sum_i phi(a_i^T x, y_i) + l1 ||x||_1 + (l2/2) ||x||_2^2

Data-parallel: each MPI rank holds a shard of the samples (:class:`Problem`); full
gradients are one allreduce of the shards' sums, every mini-batch is drawn from all n
samples through a shared seed and its gradient is one allreduce, and the iterates are
identical on every rank.

Main entry point::

    from hpccl.erm import Problem, solve, reference_optimum
    prob = Problem(X_shard, y_shard, loss="logistic", l1=1e-4, l2=1e-6)
    ref = reference_optimum(prob, comm)            # certified f_star
    res = solve(prob, "dasvrda", comm, epochs=50, f_star=ref.f_star, target_subopt=1e-8)

Solvers: "dasvrda" (Murata & Suzuki 2017), "katyusha" (Allen-Zhu 2017, ns version),
"svrg" (proximal SVRG, Xiao & Zhang 2014), "sgd" (proximal SGD), "fista".

Communication of a DASVRDA stage (m = n/b inner steps): m + 1 allreduces, 8 (d + 1 + m d)
bytes per rank - see :mod:`hpccl.erm.solvers.dasvrda`; cost accounting ("passes") in
:mod:`hpccl.erm.oracle`.
"""

from hpccl.core.exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "hpccl.erm.losses": "Logistic Loss SmoothedHinge Squared get_loss",
    "hpccl.erm.oracle": "Oracle",
    "hpccl.data.libsvm": "shard_bounds",
    "hpccl.erm.problem": "Problem ProblemError",
    "hpccl.erm.prox": "L1 L2 ElasticNet soft_threshold",
    "hpccl.erm.reference": "ReferenceSolution reference_optimum",
    "hpccl.erm.sampling": "ShardSampler",
    "hpccl.erm.solvers": "SOLVERS Result StageRecord solve",
})
