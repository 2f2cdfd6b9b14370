"""LIBSVM-format reader that loads one rank's shard, with labels mapped to +-1.

Format: one sample per line, ``label index:value index:value ...`` with 1-based,
ascending indices (https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/);
.bz2/.gz/.xz files are read transparently.

Two streaming passes, so that a rank never holds more than its own shard:
1. count the samples, collect the label set and the largest feature index (labels and
   dimension must be global, and a shard alone may miss a class or the last feature);
2. keep the lines of this rank's contiguous block and parse them with scikit-learn's
   ``load_svmlight_file`` (C-speed parser, indices forced 1-based: auto-detection on a
   shard could guess differently on different ranks).

Binary labels are mapped to -1/+1: the smaller label value to -1 and the larger to +1
({-1,1}, {0,1}, {1,2} all work).  ``binary=False`` keeps raw labels (regression).
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
from typing import Optional

import numpy as np
import scipy.sparse as sp

from hpccl.core.errors import DatasetError


def shard_bounds(n: int, size: int, rank: int) -> tuple[int, int]:
    """Balanced contiguous split of range(n) over `size` ranks (first n % size get +1)."""
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def _open(path: str):
    if path.endswith(".bz2"):
        return bz2.open(path, "rb")
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".xz"):
        return lzma.open(path, "rb")
    return open(path, "rb")


# CSR indices are int32 (scikit-learn's parser and the HDF5 layout): a larger index cannot be stored.
MAX_INDEX = 2**31 - 1


def _shown(text: bytes) -> str:
    """A token as an error shows it: a binary file's first 'label' can be kilobytes long."""
    s = text.decode(errors="replace")
    return repr(s if len(s) <= 40 else s[:40] + "...")


def _finite(text: bytes, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{what} {_shown(text)} is not a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{what} {_shown(text)} is not a finite number")
    return v


def _check_line(parts: list) -> tuple[float, int]:
    """(label, largest index) of one sample, or ValueError saying what is wrong with it: the
    whole line is checked here, in the scan, so that scikit-learn's parser (which names no
    line) and the solvers (which would train on NaN) never meet a malformed one."""
    label = _finite(parts[0], "the label")
    last = 0
    for k, p in enumerate(parts[1:]):
        if p.startswith(b"qid:"):
            if k:                 # scikit-learn's parser takes a query id only before the features
                raise ValueError(f"{p.decode(errors='replace')!r} comes after a feature; a qid: goes "
                                 "right after the label")
            continue
        idx, sep, value = p.partition(b":")
        if not sep:
            raise ValueError(f"{p.decode(errors='replace')!r} is not index:value")
        try:
            i = int(idx)
        except ValueError:
            raise ValueError(f"the index {idx.decode(errors='replace')!r} is not an integer") from None
        if not 1 <= i <= MAX_INDEX:
            raise ValueError(f"the index {i} is outside [1, {MAX_INDEX}] (LIBSVM indices are 1-based)")
        if i <= last:     # the format's rule, and scikit-learn's parser refuses anything else
            raise ValueError(f"the index {i} follows {last}: indices must be strictly ascending "
                             "(each feature once)")
        _finite(value, f"the value of index {i}")
        last = i
    return label, last


def scan_libsvm(path: str):
    """(number of samples, sorted label values, number of features) of a LIBSVM file; a line
    that is not 'label index:value ...' with finite numbers and strictly ascending 1-based indices is
    a DatasetError naming the file and line."""
    n = 0
    labels = set()
    max_index = 0
    lineno = 0
    try:
        with _open(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.split(b"#", 1)[0].strip()
                if not line:
                    continue
                n += 1
                label, last = _check_line(line.split())
                labels.add(label)
                max_index = max(max_index, last)
    except ValueError as e:
        raise DatasetError(f"LIBSVM file {path}, line {lineno}: {e}; expected 'label index:value ...' "
                           "with finite numbers and ascending indices >= 1.") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        raise DatasetError(f"cannot read LIBSVM file {path}: {e.strerror}.") from None
    except (OSError, EOFError) as e:
        raise DatasetError(f"cannot read LIBSVM file {path}: {e} (after line {lineno}; a truncated or "
                           "damaged compressed file?)") from None
    return n, sorted(labels), max_index


def read_libsvm(path: str, comm=None, rank: Optional[int] = None, size: Optional[int] = None,
                n_features: Optional[int] = None, binary: bool = True,
                dense: bool = False, scan=None):
    """Read rank's shard of a LIBSVM file.

    Returns ``(X, y, n, offset)``: the shard's rows (CSR, or ndarray if ``dense``), its
    labels, the global number of samples and the global index of its first row, ready
    for ``Problem(X, y, n=n, offset=offset, ...)``.  ``rank``/``size`` default to
    ``comm``'s (or 0/1).  Shards are balanced contiguous blocks (``shard_bounds``).
    ``scan`` may pass a precomputed ``scan_libsvm(path)`` to skip the first pass.
    """
    from sklearn.datasets import load_svmlight_file

    if rank is None:
        rank = 0 if comm is None else comm.Get_rank()
    if size is None:
        size = 1 if comm is None else comm.Get_size()
    n, labels, max_index = scan or scan_libsvm(path)
    if n == 0:
        raise DatasetError(f"LIBSVM file {path} has no samples")
    d = max_index if n_features is None else int(n_features)
    if d < max_index:
        raise DatasetError(f"{path} uses feature index {max_index} > n_features={d}")
    lo, hi = shard_bounds(n, size, rank)

    buf = io.BytesIO()
    i = 0
    with _open(path) as f:
        for line in f:
            body = line.split(b"#", 1)[0].strip()
            if not body:
                continue
            if lo <= i < hi:
                buf.write(body + b"\n")
            i += 1
            if i >= hi:
                break
    buf.seek(0)
    if hi > lo:
        X, y = load_svmlight_file(buf, n_features=d, zero_based=False, dtype=np.float64)
    else:
        X, y = sp.csr_matrix((0, d)), np.zeros(0)
    X = sp.csr_matrix(X)

    if binary:
        if len(labels) > 2:
            raise DatasetError(
                f"{path} has {len(labels)} label values {labels[:5]}...; binary=True needs 2")
        if len(labels) == 2:
            y = np.where(y == labels[1], 1.0, -1.0)
        else:  # a single class: keep its sign
            y = np.where(y > 0, 1.0, -1.0)
    if dense:
        X = X.toarray()
    return X, y, n, lo
