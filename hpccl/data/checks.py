"""What a continual job will rely on in its dataset, checked before any rank starts.

``DatasetFile`` checks the schema (datasets, dtypes, shapes, attributes) when it opens a file.
These checks read the contents: every split has samples, every label lies in
0..num_classes-1, every value is finite, and the scenario fits the data (its classes exist
and have training samples, it has no more tasks than classes, no more mega-batches than
training samples). A mistake found here is one paragraph naming the file, the dataset path
and the first offending row; found later it would be an MPI abort, or worse, a run that
trains on NaN and reports an accuracy.

The finite-value scan reads the file in row blocks; past ``HPCCL_SCAN_LIMIT_GB`` (default 4)
of floats per split it stops and says how much it read, so validating a 1 TB dataset stays
quick. Training itself also stops on a non-finite loss (learners/loop.py).
"""

from __future__ import annotations

import os

import numpy as np

from hpccl.core.errors import ConfigError, DatasetError
from hpccl.core import env

_BLOCK_BYTES = 64 << 20


def scan_limit_bytes() -> int:
    return int(env.read("HPCCL_SCAN_LIMIT_GB") * (1 << 30))


def check_contents(ds, cfg, source: str) -> list[str]:
    """Raise on the first problem; return notes about what was not fully read."""
    info, path, notes = ds.info, ds.path, []
    labels = {}
    for split in ("train", "test"):
        n = info.num_train if split == "train" else info.num_test
        if n == 0:
            raise DatasetError(f"dataset file {path!r}: /{split}/x holds no samples; a continual job "
                               f"trains on /train and scores on /test, so both need at least one.")
        y = ds._f[f"{split}/y"][...]
        bad = np.flatnonzero((y < 0) | (y >= info.num_classes))
        if len(bad):
            i = int(bad[0])
            raise DatasetError(f"dataset file {path!r}: /{split}/y[{i}] = {int(y[i])} lies outside "
                               f"0..{info.num_classes - 1} (the file's num_classes attribute is "
                               f"{info.num_classes}); {len(bad)} of its {n} labels do.")
        labels[split] = y.astype(np.int64)
        note = _check_finite(ds._f[f"{split}/x"], path, split)
        if note:
            notes.append(note)
    _check_scenario(cfg, labels, info, path, source)
    return notes


def _check_finite(x, path: str, split: str) -> str | None:
    if x.dtype.kind != "f":
        return None         # integers (uint8 images) are finite by construction
    row_bytes = max(1, int(np.prod(x.shape[1:])) * x.dtype.itemsize)
    block = max(1, _BLOCK_BYTES // row_bytes)
    last = min(len(x), max(1, scan_limit_bytes() // row_bytes))
    for start in range(0, last, block):
        rows = x[start:min(start + block, last)]
        finite = np.isfinite(rows.reshape(len(rows), -1)).all(axis=1)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            flat = rows[i].reshape(-1)
            j = int(np.flatnonzero(~np.isfinite(flat))[0])
            raise DatasetError(f"dataset file {path!r}: /{split}/x[{start + i}] holds a non-finite "
                               f"value ({flat[j]} at flat index {j}); {int((~finite).sum())} of rows "
                               f"{start}..{start + len(rows) - 1} do. Training on it would turn the "
                               "loss into NaN. Fix or drop those rows and convert the data again.")
    if last < len(x):
        return (f"{path}: /{split}/x: scanned the first {last} of {len(x)} rows for non-finite "
                f"values (HPCCL_SCAN_LIMIT_GB={scan_limit_bytes() / (1 << 30):g}); training stops "
                "on a non-finite loss if the rest holds any.")
    return None


def scenario_classes(sc, info, source: str) -> np.ndarray:
    """The sorted classes a class-incremental scenario splits into tasks (``scenario.classes``,
    or all of the file's), refusing labels the file does not have and more tasks than classes."""
    if sc.classes is not None:
        outside = [c for c in sc.classes if c >= info.num_classes]
        if outside:
            raise ConfigError(f"{source}: key 'scenario.classes': expected labels in "
                              f"0..{info.num_classes - 1} (the classes of {info.path!r}), found "
                              f"{outside}.")
    pool = np.arange(info.num_classes) if sc.classes is None else np.sort(np.asarray(sc.classes, np.int64))
    if sc.num_tasks > len(pool):
        raise ConfigError(f"{source}: key 'scenario.num_tasks': expected at most the number of "
                          f"scenario classes ({len(pool)}, of {info.path!r}), found {sc.num_tasks}.")
    return pool


def _check_scenario(cfg, labels, info, path: str, source: str) -> None:
    sc = cfg.scenario
    in_train = np.unique(labels["train"])
    if sc.kind == "megabatch":
        if sc.num_megabatches > info.num_train:
            raise ConfigError(f"{source}: key 'scenario.num_megabatches': expected at most the "
                              f"{info.num_train} training samples of {path!r}, found "
                              f"{sc.num_megabatches}.")
        wanted, what = np.unique(labels["test"]), "classes of /test/y"
    else:
        wanted = scenario_classes(sc, info, source)
        what = "scenario classes" if sc.classes is not None else "classes (num_classes)"
    missing = np.setdiff1d(wanted, in_train)
    if len(missing):
        shown = missing[:10].tolist()
        raise DatasetError(f"dataset file {path!r}: {what} {shown}{' ...' if len(missing) > 10 else ''} "
                           f"have no samples in /train/y, so they could never be learnt, yet they "
                           "would be scored. Drop them (scenario.classes) or add training data.")
