"""The ``rnn`` section of a job file (``kind: online_rnn``): online recurrent learning with
an EGRU trained by sparse RTRL. Owned by the RTRL capability; hpccl.config includes it.

The keys are documented in :mod:`hpccl.rtrl.job`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Optional

from hpccl.core.errors import ConfigError
from hpccl.core.schema import ranged, user_path

TASKS = ("spiral", "digits", "file")
MODES = ("rtrl_sparse", "rtrl_dense", "bptt")


@dataclass
class OnlineRnnConfig:
    # -- the task ---------------------------------------------------------------------------
    task: Literal["spiral", "digits", "file"] = "spiral"   # spiral: rotation direction; digits: row by row; file: path
    path: Optional[str] = user_path()   # task: file -- HDF5 with x [N, T, D] and y [N]
    num_examples: int = ranged(4096, ge=1)  # spiral: examples generated
    seq_len: int = ranged(17, ge=1)     # spiral: steps per sequence
    test_fraction: float = ranged(0.2, gt=0, lt=1)  # held-out share (file: unless it has x_test/y_test)
    # -- the network --------------------------------------------------------------------------
    hidden: int = ranged(32, ge=1)      # EGRU units
    weight_sparsity: float = ranged(0.0, ge=0, lt=1)  # share of recurrent weights masked to zero, [0, 1)
    activity_sparse: bool = True        # EGRU events (false: a plain GRU, every unit active)
    thr_mean: float = ranged(0.3, gt=0, lt=1)  # thresholds ~ Beta(alpha, 3) with this mean (EGRU paper)
    learn_threshold: bool = True        # train the EGRU thresholds too
    pseudo_support: float = ranged(1.0, gt=0)  # pseudo-derivative half-width (EGRU paper: 1.0)
    dampening: float = ranged(0.7, ge=0)  # pseudo-derivative height (EGRU paper: 0.7)
    input_gain: float = ranged(1.0, gt=0)  # input weight init scale (spiral: 3 helps cross thresholds)
    # -- learning ----------------------------------------------------------------------------
    mode: Literal["rtrl_sparse", "rtrl_dense", "bptt"] = "rtrl_sparse"   # sparse RTRL, or the dense RTRL and BPTT references
    update_every: Optional[int] = ranged(None, ge=1)  # steps between updates; null: once per sequence
    loss_at: Literal["last", "all"] = "last"   # the loss at the last step of a sequence, or at every step
    optimizer: Literal["adam", "sgd"] = "adam"   # the optimizer of the updates
    lr: float = ranged(0.01, gt=0)      # learning rate of the optimizer
    grad_clip: Optional[float] = ranged(None, gt=0)  # max global gradient norm (null: off)
    num_sequences: int = ranged(1000, ge=1)  # stream length, per rank
    eval_every: int = ranged(200, ge=1)  # sequences (per rank) between test evaluations + log flushes
    acc_window: int = ranged(100, ge=1)  # sequences in the running stream accuracy
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
