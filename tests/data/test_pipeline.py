"""uint8 samples stay uint8 on the host and become float32 on the device (data/pipeline.py):
the same numbers as converting on read, a quarter of the bytes until then."""

import os

import numpy as np
import torch

from helpers import hpccl_cmd, run_cmd, write_job
from hpccl.core.logs import read_h5
from hpccl.data.h5format import DatasetFile, write_dataset
from hpccl.data.pipeline import InputPipeline


def _images(seed=0, n=400, classes=4):
    """Class-dependent uint8 images (a bright quadrant per class) with noise: learnable."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 96, size=(n, 3, 8, 8), dtype=np.uint8)
    for c in range(classes):
        r, col = divmod(c, 2)
        x[y == c, :, 4 * r:4 * r + 4, 4 * col:4 * col + 4] += 150
    return x, y


def _write(path, as_float: bool):
    (xtr, ytr), (xte, yte) = _images(0), _images(1, n=160)
    if as_float:
        xtr, xte = xtr.astype(np.float32) / 255.0, xte.astype(np.float32) / 255.0
    return write_dataset(path, xtr, ytr, xte, yte, num_classes=4, name="quadrants")


def test_native_reads_keep_uint8_and_the_pipeline_converts_like_the_reader(tmp_path):
    path = _write(tmp_path / "u8.h5", as_float=False)
    idx = [5, 1, 5, 300]
    with DatasetFile(path) as ds:
        native, y_native = ds.read("train", idx, native=True)
        converted, y = ds.read("train", idx)
    assert native.dtype == np.uint8 and converted.dtype == np.float32
    assert np.array_equal(y_native, y) and native.nbytes * 4 == converted.nbytes
    on_device = InputPipeline("cpu")(torch.from_numpy(native))
    assert on_device.dtype == torch.float32
    assert torch.equal(on_device, torch.from_numpy(converted))       # bit for bit
    floats = torch.from_numpy(converted)
    assert torch.equal(InputPipeline("cpu")(floats), floats)          # float32 passes unchanged


def test_a_uint8_dataset_trains_exactly_like_its_float32_copy(tmp_path):
    """Rehearsal on one rank (synchronous, so the run is deterministic): the uint8 file, whose
    samples and buffer slots stay uint8, gives the same losses and accuracies bit for bit as
    the float32 file of the same images converted on write."""
    logs = {}
    for name, as_float in (("u8", False), ("f32", True)):
        data = _write(tmp_path / f"{name}.h5", as_float)
        job = write_job(tmp_path / f"{name}.yaml", data={"path": data}, scenario={"num_tasks": 2},
                        model={"kind": "cnn", "width": 8}, learner={"kind": "rehearsal"},
                        rehearsal={"async": False, "representatives": 4, "candidates": 8},
                        train={"epochs": 2, "batch_size": 16, "lr": 0.05})
        out = tmp_path / name
        r = run_cmd(hpccl_cmd("run", job, "-n", "1", "--out", str(out)), timeout=240)
        assert r.returncode == 0, r.stdout + r.stderr
        logs[name] = read_h5(str(out / "log.h5"))
        rank = read_h5(str(out / "ranks" / "rank00000.h5"))
        logs[name]["stored_bytes"] = int(rank["tasks/buffer_bytes_stored"][-1])
        logs[name]["stored"] = int(rank["tasks/buffer_stored"][-1])
    u8, f32 = logs["u8"], logs["f32"]
    assert np.array_equal(u8["epochs/loss"], f32["epochs/loss"])
    assert np.array_equal(u8["eval/top1"], f32["eval/top1"], equal_nan=True)   # NaN: tasks not seen yet
    assert u8["eval/top1"][1, :2].mean() > 0.5                      # it did learn
    assert u8["stored"] == f32["stored"] > 0
    assert u8["stored_bytes"] * 4 == f32["stored_bytes"]             # 192 vs 768 bytes a sample
    assert os.path.getsize(tmp_path / "u8" / "buffer" / "rank00000.h5") < \
        os.path.getsize(tmp_path / "f32" / "buffer" / "rank00000.h5")
