"""The ``erm`` section of a job file (``kind: erm``): regularized ERM solved by DASVRDA or a
baseline. Owned by the ERM capability; hpccl.config includes it in the job schema."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ErmConfig:
    solver: str = "dasvrda"
