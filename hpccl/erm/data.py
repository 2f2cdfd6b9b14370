"""One rank's shard of an ERM job's data: from an HDF5 file (dense or CSR), a LIBSVM text file,
or a builtin, with labels mapped to -1/+1 for classification losses.

Rows are split in contiguous blocks (:func:`hpccl.erm.problem.shard_bounds`, sizes within one
of each other); a rank reads only its rows of the file (the labels of an HDF5 file are read
whole to find the label set, 8 bytes a sample; a LIBSVM file is scanned once by every rank).

HDF5 layouts accepted (``/SPLIT`` is ``/train`` or ``/test``):

* dense: ``/SPLIT/x`` a dataset ``[N, D]`` (float32/float64/uint8 as stored, uint8 not rescaled),
* sparse: ``/SPLIT/x`` a group with ``data``, ``indices``, ``indptr`` and attr ``shape``
  (what ``hpccl data convert libsvm`` writes),

and ``/SPLIT/y`` ``[N]``: two label values (0/1, -1/+1, 1/2 ...; the smaller maps to -1) for the
logistic and smoothed-hinge losses, any real values for the squared loss.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import h5py
import numpy as np
import scipy.sparse as sp

from hpccl.core.errors import DatasetError
from hpccl.data.libsvm import shard_bounds
from hpccl.core import env


@dataclass
class Shard:
    X: object                 # this rank's rows: ndarray or CSR
    y: np.ndarray             # float64; -1/+1 for classification losses
    n: int                    # global number of samples
    offset: int               # global index of local row 0
    dim: int
    source: str               # what was read: a path (with its format)
    fmt: str                  # "hdf5-dense" | "hdf5-csr" | "libsvm"
    label_values: list = field(default_factory=list)   # original labels of -1 and +1
    read_time_s: float = 0.0


def _map_labels(y, values, binary, where):
    if not binary:
        return np.asarray(y, dtype=np.float64), []
    values = sorted(float(v) for v in values)
    if len(values) > 2:
        raise DatasetError(f"{where}: {len(values)} label values {values[:5]}...; the logistic and "
                           "smoothed-hinge losses need two (use erm.loss: squared for regression).")
    y = np.asarray(y, dtype=np.float64)
    if len(values) == 2:
        return np.where(y == values[1], 1.0, -1.0), values
    return np.where(y > 0, 1.0, -1.0), values


def check_input(cfg, source: str) -> list[str]:
    """Before any rank starts: the data file an ERM job names exists, and is read as the
    ranks will read it (layout, shapes, label values for the loss), from one row and
    its labels: a file refused only on the ranks ended the job with exit 1 after launch."""
    path = cfg.data.path
    if path is not None and not os.path.isfile(path):
        raise DatasetError(f"data file {path!r} (data.path) does not exist. An ERM job reads "
                           "an HDF5 file (e.g. from 'hpccl data convert libsvm') or a LIBSVM text "
                           "file (.bz2/.gz/.xz ok).")
    # As many ranks as no file has rows: rank 0's shard is the first row alone. A LIBSVM
    # text file is scanned whole (every line checked), as each rank scans it again.
    if path is not None and h5py.is_hdf5(path):
        read_h5_shard(path, cfg.erm.split, 0, 2**62, cfg.erm.loss != "squared")
    elif path is not None:
        read_libsvm_shard(path, 0, 2**62, cfg.erm.loss != "squared")
    return []


def read_h5_shard(path, split, rank, size, binary=True, label_values=None) -> Shard:
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"data file {path!r} is not a readable HDF5 file ({e}).") from None
    with f:
        if f"{split}/x" not in f or f"{split}/y" not in f:
            raise DatasetError(f"data file {path!r}: missing /{split}/x or /{split}/y. An ERM data "
                               "file holds /train/x ([N, D] dense, or a CSR group data/indices/indptr "
                               "with attr shape) and /train/y [N]; see 'hpccl data convert libsvm --help'.")
        x, yd = f[f"{split}/x"], f[f"{split}/y"]
        y_all = yd[...]
        if isinstance(x, h5py.Group):
            for key in ("data", "indices", "indptr"):
                if key not in x:
                    raise DatasetError(f"data file {path!r}: sparse /{split}/x lacks '{key}'.")
            n, d = (int(v) for v in x.attrs["shape"])
            fmt = "hdf5-csr"
        else:
            if x.ndim != 2:
                raise DatasetError(f"data file {path!r}: /{split}/x has shape {x.shape}; an ERM job "
                                   "needs vectors [N, D].")
            n, d = x.shape
            fmt = "hdf5-dense"
        if y_all.shape != (n,):
            raise DatasetError(f"data file {path!r}: /{split}/y has shape {y_all.shape}, expected [{n}].")
        if n == 0:
            raise DatasetError(f"data file {path!r}: /{split} has no samples.")
        lo, hi = shard_bounds(n, size, rank)
        if fmt == "hdf5-csr":
            indptr = x["indptr"][lo:hi + 1].astype(np.int64)
            a, b = int(indptr[0]), int(indptr[-1])
            X = sp.csr_matrix((x["data"][a:b].astype(np.float64), x["indices"][a:b].astype(np.int64),
                               indptr - a), shape=(hi - lo, d))
        else:
            X = np.asarray(x[lo:hi], dtype=np.float64)
        values = (label_values or np.unique(y_all)) if binary else []
        y, labels = _map_labels(y_all[lo:hi], values, binary, f"{path} /{split}/y")
    return Shard(X, y, n, lo, d, path, fmt, labels)


def read_libsvm_shard(path, rank, size, binary=True) -> Shard:
    from hpccl.data.libsvm import read_libsvm, scan_libsvm

    scan = scan_libsvm(path)
    X, y, n, lo = read_libsvm(path, rank=rank, size=size, binary=False, scan=scan)
    y, labels = _map_labels(y, scan[1], binary, path)
    return Shard(X, y, n, lo, X.shape[1], path, "libsvm", labels)


def resolve_path(data_cfg, world) -> str:
    """The file behind ``data``: a builtin is converted once (rank 0) into the data cache."""
    if data_cfg.builtin is not None:
        from hpccl.data.datasets import open_dataset
        ds = open_dataset(data_cfg, world)   # rank 0 converts while the others wait
        path = ds.path
        ds.close()
        return path
    path = data_cfg.path
    if not os.path.isfile(path):
        raise DatasetError(f"data file {path!r} (data.path) does not exist. An ERM job reads an HDF5 "
                           "file (e.g. from 'hpccl data convert libsvm') or a LIBSVM text file "
                           "(.bz2/.gz/.xz ok).")
    return path


def load_shard(data_cfg, erm_cfg, rank, size, world=None, label_values=None) -> Shard:
    """This rank's rows, preprocessed; ``label_values`` fixes the label mapping (test split)."""
    import time

    t0 = time.perf_counter()
    path = resolve_path(data_cfg, world) if world is not None else (
        data_cfg.path or _builtin_path(data_cfg.builtin))
    binary = erm_cfg.loss != "squared"
    if h5py.is_hdf5(path):
        shard = read_h5_shard(path, erm_cfg.split, rank, size, binary, label_values)
    else:
        if erm_cfg.split != "train":
            raise DatasetError(f"erm.split: {erm_cfg.split!r} needs an HDF5 file with that split; "
                               f"{path!r} is a LIBSVM file (one split). Point data.path at the test file.")
        shard = read_libsvm_shard(path, rank, size, binary)
    if erm_cfg.row_normalize:
        norms = (np.sqrt(np.asarray(shard.X.multiply(shard.X).sum(axis=1)).ravel())
                 if sp.issparse(shard.X) else np.linalg.norm(shard.X, axis=1))
        scale = 1.0 / np.where(norms > 0, norms, 1.0)
        shard.X = sp.csr_matrix(sp.diags(scale) @ shard.X) if sp.issparse(shard.X) else shard.X * scale[:, None]
    if erm_cfg.intercept:
        ones = np.ones((shard.X.shape[0], 1))
        shard.X = sp.hstack([shard.X, sp.csr_matrix(ones)], format="csr") if sp.issparse(shard.X) \
            else np.hstack([shard.X, ones])
        shard.dim += 1
    shard.read_time_s = time.perf_counter() - t0
    return shard


def _builtin_path(name):
    from hpccl.data.datasets import materialize_builtin
    return materialize_builtin(name)


# -- reference optimum cache ----------------------------------------------------------------------

def cache_dir() -> str:
    return env.read("HPCCL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hpccl")


def reference_key(path, erm_cfg, dim) -> str:
    """Identity of an ERM problem for the P* cache: the file (real path, size, mtime), the loss,
    l1, l2, the preprocessing and the tolerance."""
    st = os.stat(path)
    ident = [os.path.realpath(path), st.st_size, st.st_mtime_ns, erm_cfg.split, erm_cfg.loss,
             repr(float(erm_cfg.l1)), repr(float(erm_cfg.l2)), erm_cfg.intercept,
             erm_cfg.row_normalize, repr(float(erm_cfg.reference_tol)), int(dim)]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:24]


def _cache_file():
    return os.path.join(cache_dir(), "erm_reference.json")


def cached_reference(key):
    try:
        with open(_cache_file()) as f:
            return json.load(f).get(key)
    except (OSError, ValueError):
        return None


def store_reference(key, entry):
    path = _cache_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = {}
        data[key] = entry
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs a recomputation next time
