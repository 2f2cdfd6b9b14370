"""One job seed, derived per purpose (and per rank where ranks must differ).

A rerun of the same job reproduces the same numbers; adding a new purpose never shifts the
random streams of the others (each is keyed by name, not by call order).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(seed: int, *purpose) -> int:
    """A 63-bit seed for ``purpose`` (e.g. ("shuffle", rank, task)) from the job seed."""
    key = [int.from_bytes(hashlib.sha256(str(p).encode()).digest()[:4], "little") for p in purpose]
    return int(np.random.SeedSequence(entropy=int(seed), spawn_key=key).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


def numpy_rng(seed: int, *purpose) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *purpose))


def torch_generator(seed: int, *purpose) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *purpose))
    return g
