"""The ``rnn`` section of a job file (``kind: online_rnn``): online recurrent learning with
an EGRU trained by sparse RTRL. Owned by the RTRL capability; hpccl.config includes it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class OnlineRnnConfig:
    mode: str = "rtrl_sparse"
