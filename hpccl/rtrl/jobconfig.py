"""The ``rnn`` section of a job file (``kind: online_rnn``): online recurrent learning with
an EGRU trained by sparse RTRL. Owned by the RTRL capability; hpccl.config includes it.

The keys are documented in :mod:`hpccl.rtrl.job`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Optional

from hpccl.errors import ConfigError

TASKS = ("spiral", "digits", "file")
MODES = ("rtrl_sparse", "rtrl_dense", "bptt")


@dataclass
class OnlineRnnConfig:
    # -- the task ---------------------------------------------------------------------------
    task: Literal["spiral", "digits", "file"] = "spiral"
    path: Optional[str] = None          # task: file -- HDF5 with x [N, T, D] and y [N]
    num_examples: int = 4096            # spiral: examples generated
    seq_len: int = 17                   # spiral: steps per sequence
    test_fraction: float = 0.2          # held-out share (file: unless it has x_test/y_test)
    # -- the network --------------------------------------------------------------------------
    hidden: int = 32                    # EGRU units
    weight_sparsity: float = 0.0        # share of recurrent weights masked to zero, [0, 1)
    activity_sparse: bool = True        # EGRU events (false: a plain GRU, every unit active)
    thr_mean: float = 0.3               # thresholds ~ Beta(alpha, 3) with this mean (EGRU paper)
    learn_threshold: bool = True
    pseudo_support: float = 1.0         # pseudo-derivative half-width (EGRU paper: 1.0)
    dampening: float = 0.7              # pseudo-derivative height (EGRU paper: 0.7)
    input_gain: float = 1.0             # input weight init scale (spiral: 3 helps cross thresholds)
    # -- learning ----------------------------------------------------------------------------
    mode: Literal["rtrl_sparse", "rtrl_dense", "bptt"] = "rtrl_sparse"
    update_every: Optional[int] = None  # steps between updates; null: once per sequence
    loss_at: Literal["last", "all"] = "last"
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 0.01
    grad_clip: Optional[float] = None   # max global gradient norm (null: off)
    num_sequences: int = 1000           # stream length, per rank
    eval_every: int = 200               # sequences (per rank) between test evaluations + log flushes
    acc_window: int = 100               # sequences in the running stream accuracy
    track_nnz: bool = True              # count the influence matrix's non-zeros every step
    spmm: Literal["csr", "dense", "auto"] = "csr"    # sparse engine's product kernel
    save_state: bool = True             # rank 0 writes the final network to RUN/rnn_state.pt

    def check(self, loader, path: str):
        if self.task == "file":
            if self.path is None:
                raise ConfigError(f"{loader.source}: key '{path}.path': 'task: file' needs the "
                                  "path of an HDF5 file with datasets x [N, T, D] and y [N], "
                                  "found none.")
            if not os.path.isfile(self.path):
                raise loader.error(f"{path}.path", "an existing HDF5 file with x [N, T, D] and y [N]",
                                   self.path)
        elif self.path is not None:
            raise ConfigError(f"{loader.source}: key '{path}.path' is read only with 'task: file', "
                              f"found task {self.task!r}. HINT: set '{path}.task: file'.")
        positive = {"hidden": self.hidden, "num_examples": self.num_examples,
                    "seq_len": self.seq_len, "lr": self.lr, "num_sequences": self.num_sequences,
                    "eval_every": self.eval_every, "acc_window": self.acc_window,
                    "pseudo_support": self.pseudo_support, "input_gain": self.input_gain}
        for key, value in positive.items():
            if value <= 0:
                raise loader.error(f"{path}.{key}", "a value > 0", value)
        if not 0.0 <= self.weight_sparsity < 1.0:
            raise loader.error(f"{path}.weight_sparsity", "a number in [0, 1)", self.weight_sparsity)
        if not 0.0 < self.thr_mean < 1.0:
            raise loader.error(f"{path}.thr_mean", "a number in (0, 1)", self.thr_mean)
        if not 0.0 < self.test_fraction < 1.0:
            raise loader.error(f"{path}.test_fraction", "a number in (0, 1)", self.test_fraction)
        if self.dampening < 0:
            raise loader.error(f"{path}.dampening", "a value >= 0", self.dampening)
        if self.update_every is not None and self.update_every < 1:
            raise loader.error(f"{path}.update_every", "an integer >= 1 or null", self.update_every)
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise loader.error(f"{path}.grad_clip", "a number > 0 or null", self.grad_clip)
