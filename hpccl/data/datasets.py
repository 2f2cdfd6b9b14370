"""Resolving a job's ``data`` section to an hpccl dataset file on disk.

Built-in datasets are converted once into a cache directory ($HPCCL_DATA_CACHE, default
~/.cache/hpccl/data) by rank 0 while the other ranks wait, then read like any other file.
"""

from __future__ import annotations

import os

from hpccl.data.h5format import DatasetFile
from hpccl.core import env


def data_cache_dir() -> str:
    return env.read("HPCCL_DATA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hpccl", "data")


def builtin_path(name: str) -> str:
    return os.path.join(data_cache_dir(), f"{name}.h5")


def materialize_builtin(name: str) -> str:
    path = builtin_path(name)
    if not os.path.exists(path):
        from hpccl.data import convert
        getattr(convert, f"convert_{name}")(path)
    return path


def open_dataset(data_cfg, world=None) -> DatasetFile:
    """Open the job's dataset; with a World, rank 0 converts a builtin while others wait."""
    if data_cfg.builtin is not None:
        if world is None or world.rank == 0:
            error = None
            try:
                path = materialize_builtin(data_cfg.builtin)
            except Exception as e:  # noqa: BLE001 - re-raised after releasing the others
                error, path = e, None
            if world is not None:
                world.bcast(path)
            if error is not None:
                raise error
        else:
            path = world.bcast(None)
            if path is None:
                raise RuntimeError("rank 0 failed to prepare the builtin dataset")
    else:
        path = data_cfg.path
    return DatasetFile(path)
