"""LIBSVM reader: shards, global dimension, label mapping, compressed files."""
import bz2

import numpy as np
import pytest

from hpccl.core.errors import DatasetError
from hpccl.erm import Problem, shard_bounds
from hpccl.data.libsvm import read_libsvm, scan_libsvm

LINES = [
    "2 1:0.5 3:1",
    "1 2:-1.5",
    "# a comment line",
    "2 1:1 2:2 3:3",
    "",
    "1 3:0.25 7:1  # the largest index appears once, on the last-but-one line",
    "2 4:4",
]
DENSE = np.array([
    [0.5, 0, 1, 0, 0, 0, 0],
    [0, -1.5, 0, 0, 0, 0, 0],
    [1, 2, 3, 0, 0, 0, 0],
    [0, 0, 0.25, 0, 0, 0, 1],
    [0, 0, 0, 4, 0, 0, 0],
])
LABELS = np.array([1.0, -1.0, 1.0, -1.0, 1.0])  # {1, 2} -> {-1, +1}


@pytest.fixture(params=["plain", "bz2"])
def path(tmp_path, request):
    text = ("\n".join(LINES) + "\n").encode()
    if request.param == "bz2":
        p = tmp_path / "toy.bz2"
        p.write_bytes(bz2.compress(text))
    else:
        p = tmp_path / "toy.txt"
        p.write_bytes(text)
    return str(p)


def test_scan(path):
    assert scan_libsvm(path) == (5, [1.0, 2.0], 7)


def test_whole_file(path):
    X, y, n, off = read_libsvm(path)
    assert (n, off) == (5, 0)
    np.testing.assert_array_equal(X.toarray(), DENSE)
    np.testing.assert_array_equal(y, LABELS)


@pytest.mark.parametrize("size", [2, 3, 4, 7])
def test_shards_reassemble(path, size):
    parts = [read_libsvm(path, rank=r, size=size) for r in range(size)]
    for r, (X, y, n, off) in enumerate(parts):
        assert n == 5 and off == shard_bounds(5, size, r)[0]
        assert X.shape[1] == 7  # global dimension even if the shard never uses feature 7
    X = np.vstack([p[0].toarray() for p in parts])
    np.testing.assert_array_equal(X, DENSE)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), LABELS)
    # Shards plug straight into Problem.
    X0, y0, n0, off0 = parts[0]
    Problem(X0, y0, n=n0, offset=off0)


def test_dense_option_and_errors(tmp_path, path):
    X, _, _, _ = read_libsvm(path, dense=True)
    assert isinstance(X, np.ndarray)
    bad = tmp_path / "multi.txt"
    bad.write_text("1 1:1\n2 1:1\n3 1:1\n")
    with pytest.raises(DatasetError, match="label"):
        read_libsvm(str(bad))
    X, y, _, _ = read_libsvm(str(bad), binary=False)
    np.testing.assert_array_equal(y, [1, 2, 3])
    with pytest.raises(DatasetError):
        read_libsvm(str(tmp_path / "missing.txt"))


def test_zero_one_labels(tmp_path):
    p = tmp_path / "zo.txt"
    p.write_text("0 1:1\n1 2:1\n")
    assert read_libsvm(str(p))[1].tolist() == [-1.0, 1.0]
