"""The ``erm`` section of a job file (``kind: erm``): regularized ERM solved by DASVRDA or a
baseline. Owned by the ERM capability; hpccl.config includes it in the job schema.
The keys are documented in :mod:`hpccl.erm.job`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from hpccl.core.errors import ConfigError
from hpccl.core.schema import Loader, ranged, suggest

ERM_SOLVERS = ("dasvrda", "svrg", "katyusha", "sgd", "fista")
ERM_LOSSES = ("logistic", "squared", "smoothed_hinge")
# Solver options that may go in `erm.options` (passed through to the solver), per solver.
SOLVER_OPTIONS = {
    "dasvrda": ("m", "gamma", "eta", "importance", "restart", "restart_period"),
    "svrg": ("m", "eta", "importance", "snapshot"),
    "katyusha": ("m", "L", "importance", "tau2"),
    "sgd": ("eta", "importance", "m"),
    "fista": ("L0", "restart"),
}


@dataclass
class ErmConfig:
    solver: str = "dasvrda"                  # dasvrda | svrg | katyusha | sgd | fista
    loss: Literal["logistic", "squared", "smoothed_hinge"] = "logistic"   # phi(a_i^T x, y_i)
    l1: float = ranged(1e-4, ge=0)                        # weight of ||x||_1
    l2: float = ranged(1e-4, ge=0)                        # weight of (1/2)||x||_2^2 (strong convexity)
    epochs: float = ranged(100.0, gt=0)      # at most this many passes over the data
    target_subopt: Optional[float] = ranged(1e-8, gt=0)    # stop once P(x) - P* <= this (null: run all epochs)
    max_time_s: Optional[float] = ranged(None, gt=0)       # stop after this many solver seconds
    batch_size: Optional[int] = ranged(None, ge=1)         # mini-batch (global); null: floor(sqrt(n)) for all
    step_scale: float = ranged(1.0, gt=0)    # multiplier of the solver's theoretical step size
    options: dict = field(default_factory=dict)   # further solver options (see SOLVER_OPTIONS)
    reference: bool = True                   # compute the certified reference optimum P* first
    reference_tol: float = ranged(1e-12, gt=0, lt=1)   # relative accuracy of P*
    reference_cache: bool = True             # reuse P* for the same data/loss/l1/l2 (cache dir)
    f_star: Optional[float] = ranged(None)   # give P* instead of computing it
    intercept: bool = False                  # append a constant-1 feature
    row_normalize: bool = False              # scale every sample to unit L2 norm
    split: Literal["train", "test"] = "train"   # which split of an HDF5 file to fit
    verify_sync: bool = False                # check iterates are bit-identical on all ranks each stage

    def check(self, loader: Loader, path: str):
        p = f"{path}." if path else ""
        if self.solver not in ERM_SOLVERS:
            raise loader.error(f"{p}solver", "one of " + ", ".join(map(repr, ERM_SOLVERS)),
                               self.solver, suggest(self.solver, ERM_SOLVERS))
        allowed = SOLVER_OPTIONS[self.solver]
        for key in self.options:
            if key not in allowed:
                hint = suggest(key, allowed)
                if key in ("batch_size", "step_scale"):
                    hint = f" Give it as 'erm.{key}'."
                raise ConfigError(f"{loader.source}: unknown key '{p}options.{key}' for solver "
                                  f"'{self.solver}'; its options are: {', '.join(allowed)}.{hint}")
        if self.target_subopt is not None and not self.reference and self.f_star is None:
            raise ConfigError(f"{loader.source}: key '{p}target_subopt' ({self.target_subopt:g}) needs "
                              f"the optimum P*: set '{p}reference: true' or give '{p}f_star', or set "
                              f"'{p}target_subopt: null'.")
