"""The hpccl dataset file: one HDF5 file per dataset.

Schema (version 1)::

    /train/x   float32 or uint8, [N, C, H, W] for images or [N, D] for vectors
    /train/y   int64 [N], labels in 0..num_classes-1
    /test/x    same dtype and per-sample shape as /train/x
    /test/y    int64 [M]
    attrs: num_classes (int), name (str), format_version (int, optional; 1 when absent)

uint8 images are scaled to [0, 1] when read. Readers open the file lazily and read only the
rows they are asked for, so a rank never loads the whole file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np

from hpccl.core.errors import DatasetError

FORMAT_VERSION = 1
SPLITS = ("train", "test")
READ_BLOCK_BYTES = 64 << 20   # rows read at once by DatasetFile.read


def write_dataset(path, train_x, train_y, test_x, test_y, num_classes: int, name: str,
                  chunk_rows: int | None = None) -> str:
    """Write arrays in the hpccl format (atomically: a temp file renamed into place)."""
    path = os.fspath(path)
    arrays = {"train": (np.asarray(train_x), np.asarray(train_y)),
              "test": (np.asarray(test_x), np.asarray(test_y))}
    for split, (x, y) in arrays.items():
        if x.dtype not in (np.float32, np.uint8):
            raise ValueError(f"{split}/x must be float32 or uint8, got {x.dtype}")
        if x.ndim not in (2, 4) or len(x) != len(y):
            raise ValueError(f"{split}/x must be [N, D] or [N, C, H, W] with N == len(y)")
    if arrays["train"][0].shape[1:] != arrays["test"][0].shape[1:]:
        raise ValueError("train and test samples must have the same shape")
    # Refuse a directory, an unwritable folder or a path under a file before writing anything.
    from hpccl.core.paths import check_output_file
    check_output_file(path, "dataset file", "a path for the HDF5 file to write", "data.h5")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["num_classes"] = int(num_classes)
            f.attrs["name"] = str(name)
            f.attrs["format_version"] = FORMAT_VERSION
            train_x = arrays["train"][0]
            if train_x.dtype == np.uint8 and train_x.ndim == 4 and len(train_x):
                f.attrs.update(image_stats(train_x))
            for split, (x, y) in arrays.items():
                g = f.create_group(split)
                # Row-chunked so that reading a rank's rows touches only their chunks.
                rows = chunk_rows or max(1, min(len(x), (1 << 20) // max(1, x[:1].nbytes)))
                g.create_dataset("x", data=x, chunks=(rows,) + x.shape[1:] if len(x) else None)
                g.create_dataset("y", data=np.asarray(y, dtype=np.int64))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def image_stats(x) -> dict:
    """Per-channel mean and std of uint8 images [N, C, H, W] in [0, 1] units, read in blocks
    (an ImageNet split does not fit in memory), as the root attributes ``mean`` and ``std``."""
    x = x if hasattr(x, "shape") else np.asarray(x)
    c = x.shape[1]
    total, total_sq, count = np.zeros(c), np.zeros(c), 0
    step = max(1, (64 << 20) // max(1, int(np.prod(x.shape[1:]))))
    for i in range(0, x.shape[0], step):
        block = np.asarray(x[i:i + step], dtype=np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        total_sq += (block ** 2).sum(axis=(0, 2, 3))
        count += block.shape[0] * block.shape[2] * block.shape[3]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean ** 2, 1e-12))
    return {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}


def _channel_stats(f, fail) -> dict:
    if "mean" not in f.attrs and "std" not in f.attrs:
        return {}
    mean, std = (f.attrs.get(k, np.zeros(0)) for k in ("mean", "std"))
    for key, value in (("mean", mean), ("std", std)):
        # An empty attribute, strings or complex numbers have no order: refused by name, not compared.
        if not isinstance(value, (np.ndarray, np.number, float, int)) or np.asarray(value).dtype.kind not in "iuf":
            found = "empty" if isinstance(value, h5py.Empty) else f"{value!r} ({type(value).__name__})"
            fail(f"root attribute {key!r} is {found}, expected numbers, one per image channel")
    mean, std = np.ravel(mean), np.ravel(std)
    channels = f["train/x"].shape[1] if f["train/x"].ndim == 4 else -1
    if len(mean) != channels or len(std) != channels or not (std > 0).all():
        fail(f"root attributes mean/std must hold one value per image channel ({channels}), std > 0; "
             f"found {mean.tolist()} / {std.tolist()}")
    return {"mean": tuple(float(v) for v in mean), "std": tuple(float(v) for v in std)}


# Far above any labelled dataset (ImageNet-21k: 21,841; extreme classification: a few million):
# the checks and the scenario build arrays of num_classes entries, and 10**12 asked for 7 TiB.
MAX_CLASSES = 10**7


@dataclass(frozen=True)
class DatasetInfo:
    path: str
    name: str
    num_classes: int
    sample_shape: tuple
    dtype: np.dtype
    num_train: int
    num_test: int
    mean: tuple | None = None       # per channel, in [0, 1] units (uint8 images' converters store them)
    std: tuple | None = None


class DatasetFile:
    """Lazy reader of an hpccl dataset file; validates the schema on open."""

    def __init__(self, path):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise DatasetError(
                f"dataset file {self.path!r} does not exist. Create one with "
                f"'hpccl data convert' (see 'hpccl data convert --help') or use 'data: {{builtin: digits}}'.")
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as e:
            raise DatasetError(f"dataset file {self.path!r} is not a readable HDF5 file ({e}).") from None
        self.info = self._validate()

    def _fail(self, what):
        self._f.close()
        raise DatasetError(f"dataset file {self.path!r}: {what}. Expected the hpccl schema: "
                           "/train/x, /train/y, /test/x, /test/y and root attributes "
                           "num_classes (int) and name (str); see docs/datasets.md.")

    def _validate(self) -> DatasetInfo:
        f = self._f
        for split in SPLITS:
            for key in ("x", "y"):
                if f"{split}/{key}" not in f:
                    self._fail(f"missing dataset /{split}/{key}")
                if not isinstance(f[f"{split}/{key}"], h5py.Dataset):
                    self._fail(f"/{split}/{key} is a group, expected a dataset (an array)")
            x, y = f[f"{split}/x"], f[f"{split}/y"]
            if x.dtype not in (np.float32, np.uint8):
                self._fail(f"/{split}/x has dtype {x.dtype}, expected float32 or uint8")
            if x.ndim not in (2, 4):
                self._fail(f"/{split}/x has shape {x.shape}, expected [N, D] or [N, C, H, W]")
            if y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype.kind not in "iu":
                self._fail(f"/{split}/y has shape {y.shape} and dtype {y.dtype}, "
                           f"expected int64 [{x.shape[0]}]")
        if f["train/x"].shape[1:] != f["test/x"].shape[1:]:
            self._fail("train and test samples have different shapes "
                       f"({f['train/x'].shape[1:]} vs {f['test/x'].shape[1:]})")
        for attr in ("num_classes", "name"):
            if attr not in f.attrs:
                self._fail(f"missing root attribute {attr!r}")
        version = self._int_attr("format_version", 1, lo=1)
        if version > FORMAT_VERSION:
            self._fail(f"format_version {version} is newer than this hpccl reads ({FORMAT_VERSION})")
        name = f.attrs["name"]
        if isinstance(name, np.ndarray) and name.ndim == 0:
            name = name.item()
        if not isinstance(name, (str, bytes)):
            self._fail(f"root attribute 'name' is {name!r} ({type(name).__name__}), expected a string")
        return DatasetInfo(path=self.path, name=name.decode(errors="replace") if isinstance(name, bytes) else name,
                           num_classes=self._int_attr("num_classes", None, lo=1, hi=MAX_CLASSES),
                           sample_shape=tuple(f["train/x"].shape[1:]), dtype=f["train/x"].dtype,
                           num_train=int(f["train/x"].shape[0]), num_test=int(f["test/x"].shape[0]),
                           **_channel_stats(f, self._fail))

    def _int_attr(self, key: str, default, lo: int, hi: int | None = None) -> int:
        """An integer root attribute: 10.5, "10", True or an array are refused, not truncated."""
        value = self._f.attrs.get(key, default)
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value.item()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < lo \
                or (hi is not None and value > hi):
            self._fail(f"root attribute {key!r} is {value!r} ({type(value).__name__}), expected an "
                       f"integer {f'in [{lo}, {hi}]' if hi is not None else f'>= {lo}'}")
        return int(value)

    def labels(self, split: str) -> np.ndarray:
        """All labels of a split (8 bytes a sample: small even for ImageNet)."""
        y = self._f[f"{split}/y"][...].astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= self.info.num_classes):
            self._fail(f"/{split}/y has labels outside 0..{self.info.num_classes - 1}")
        return y

    def read(self, split: str, indices, native: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``indices`` of a split as (x, int64 y), in the order given. x is float32 (uint8
        scaled to [0, 1]); ``native``: x as stored (uint8 stays uint8: 4x fewer bytes in host
        memory and in the rehearsal buffer; ``hpccl.data.pipeline`` converts on the device)."""
        indices = np.asarray(indices, dtype=np.int64)
        order = np.argsort(indices, kind="stable")
        sorted_idx = indices[order]
        x_ds, y_ds = self._f[f"{split}/x"], self._f[f"{split}/y"]
        out_x = np.empty((len(indices),) + x_ds.shape[1:], dtype=x_ds.dtype)
        out_y = np.empty((len(indices),), dtype=np.int64)
        # In blocks of at most READ_BLOCK_BYTES, so reading a task's shard holds the shard
        # plus one block, not twice the shard. h5py wants increasing, unique indices: each
        # block reads its unique sorted rows, then expands them.
        block = max(1, READ_BLOCK_BYTES // max(1, out_x[:1].nbytes))
        for start in range(0, len(sorted_idx), block):
            uniq, inverse = np.unique(sorted_idx[start:start + block], return_inverse=True)
            where = order[start:start + block]
            out_x[where] = x_ds[uniq][inverse]
            out_y[where] = y_ds[uniq][inverse]
        if native:
            return out_x, out_y
        if out_x.dtype == np.uint8:
            out_x = out_x.astype(np.float32) / 255.0
        return out_x.astype(np.float32, copy=False), out_y

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
