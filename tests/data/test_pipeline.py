"""uint8 samples stay uint8 on the host and become float32 on the device (data/pipeline.py):
the same numbers as converting on read, a quarter of the bytes until then."""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import hpccl_cmd, run_cmd, write_job
from hpccl.core.logs import read_h5
from hpccl.data.h5format import DatasetFile, write_dataset
from hpccl.core.errors import ConfigError
from hpccl.data.pipeline import InputPipeline, center_crop, cifar_augment, pipeline_for, resized_crop_flip


def _images(seed=0, n=400, classes=4, side=8, by_channel=False):
    """Class-dependent uint8 images with noise, learnable: a bright quadrant per class, or
    (``by_channel``, what crops and flips leave intact) a bright centre in one colour channel,
    or in none."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 96, size=(n, 3, side, side), dtype=np.uint8)
    q = side // 2
    for c in range(classes):
        if by_channel:
            if c < 3:
                x[y == c, c, q // 2:q // 2 + q, q // 2:q // 2 + q] += 150
        else:
            r, col = divmod(c, 2)
            x[y == c, :, q * r:q * r + q, q * col:q * col + q] += 150
    return x, y


def _write(path, as_float: bool, side=8, by_channel=False):
    (xtr, ytr) = _images(0, side=side, by_channel=by_channel)
    (xte, yte) = _images(1, n=160, side=side, by_channel=by_channel)
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
        job = write_job(tmp_path / f"{name}.yaml", data={"path": data, "normalize": False}, scenario={"num_tasks": 2},
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


def test_image_converters_store_per_channel_statistics_and_normalize_uses_them(tmp_path):
    path = _write(tmp_path / "u8.h5", as_float=False)
    (xtr, _), _ = _images(0), None
    scaled = xtr.astype(np.float64) / 255
    with DatasetFile(path) as ds:
        info = ds.info
        np.testing.assert_allclose(info.mean, scaled.mean(axis=(0, 2, 3)), rtol=1e-6)
        np.testing.assert_allclose(info.std, scaled.std(axis=(0, 2, 3)), rtol=1e-5)
        x, _ = ds.read("train", np.arange(info.num_train), native=True)
    pipe = pipeline_for(SimpleNamespace(augment="none", crop=None, normalize="auto"), info, "cpu", 0, 0)
    out = pipe(torch.from_numpy(x))
    np.testing.assert_allclose(out.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(dim=(0, 2, 3)).numpy(), 1, atol=1e-3)
    with DatasetFile(_write(tmp_path / "f32.h5", as_float=True)) as ds:
        assert ds.info.mean is None          # float files carry no statistics: left as they are


def test_cifar_augmentation_crops_and_flips_exactly_and_is_seeded():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    gen = lambda s: torch.Generator().manual_seed(s)       # noqa: E731
    out = cifar_augment(x, gen(1), pad=2)
    assert torch.equal(out, cifar_augment(x, gen(1), pad=2))           # same seed, same batch
    assert not torch.equal(out, cifar_augment(x, gen(2), pad=2))
    # Recompute what the generator drew: each sample is a window of the padded image, flipped or not.
    g = gen(1)
    dy, dx = torch.randint(0, 5, (2,), generator=g), torch.randint(0, 5, (2,), generator=g)
    flip = torch.rand(2, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        window = padded[i, :, dy[i]:dy[i] + 6, dx[i]:dx[i] + 6]
        assert torch.equal(out[i], window.flip(-1) if flip[i] else window), i
    # Over many draws every offset and both orientations occur.
    seen = {(int(a), int(b)) for s in range(200) for a, b in [torch.randint(0, 5, (2,), generator=gen(s))]}
    assert len(seen) > 10


def test_resized_crop_of_the_whole_image_is_the_image_and_center_crop_is_central():
    x = torch.rand(3, 2, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = resized_crop_flip(x, 8, g, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    # the whole image, resized to its own size: itself, or its mirror image
    for i in range(3):
        assert torch.allclose(out[i], x[i], atol=1e-6) or torch.allclose(out[i], x[i].flip(-1), atol=1e-6)
    assert resized_crop_flip(x, 4, torch.Generator().manual_seed(3)).shape == (3, 2, 4, 4)
    assert torch.equal(center_crop(x, 4), x[..., 2:6, 2:6])


def test_the_pipeline_augments_training_batches_only_with_a_key_seeded_per_step():
    pipe = InputPipeline("cpu", augment="cifar", seed=5, rank=1)
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    plain = x.float() / 255
    assert torch.equal(pipe(x), plain)                                   # evaluation: untouched
    a, b = pipe(x, (0, 0, 0)), pipe(x, (0, 0, 0))
    assert torch.equal(a, b) and not torch.equal(a, plain)               # same step, same draw
    assert not torch.equal(a, pipe(x, (0, 0, 1)))                        # next iteration, new draw
    assert not torch.equal(a, InputPipeline("cpu", augment="cifar", seed=5, rank=2)(x, (0, 0, 0)))
    crop = InputPipeline("cpu", augment="imagenet", crop=6, seed=5)
    assert crop(x, (0, 0, 0)).shape == (4, 3, 6, 6) and crop(x).shape == (4, 3, 6, 6)
    assert crop.output_shape((3, 8, 8)) == (3, 6, 6)


@pytest.mark.parametrize("data, fragments", [
    ({"augment": "cifar", "crop": 24}, ["data.crop", "augment: imagenet"]),
    ({"augment": "imagenet", "crop": 64}, ["data.crop", "at most the stored image side 8", "64"]),
    ({"normalize": True, "as_float": True}, ["data.normalize", "mean and std", "hpccl data convert"]),
])
def test_bad_pipeline_settings_are_refused_before_launch(tmp_path, data, fragments):
    path = _write(tmp_path / "d.h5", as_float=data.pop("as_float", False))
    job = write_job(tmp_path / "job.yaml", data={"path": path, **data}, scenario={"num_tasks": 2},
                    model={"kind": "cnn", "width": 8})
    r = run_cmd(hpccl_cmd("validate", job), timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    for fragment in fragments:
        assert fragment in r.stderr, r.stderr


def test_augmenting_vectors_or_another_kind_is_refused():
    from hpccl.config import job_from_dict
    with pytest.raises(ConfigError, match="data.augment"):
        job_from_dict({"name": "x", "kind": "erm", "data": {"builtin": "breast_cancer", "augment": "cifar"}})
    info = SimpleNamespace(mean=None, std=None, sample_shape=(64,), path="vectors.h5")
    with pytest.raises(ConfigError, match="augments images"):
        pipeline_for(SimpleNamespace(augment="cifar", crop=None, normalize="auto"), info, "cpu", 0, 0)


def test_an_augmented_normalized_uint8_run_learns(tmp_path):
    # Colour-coded classes: a flip or a 4-pixel shift leaves the label true (quadrants would not).
    data = _write(tmp_path / "u8.h5", as_float=False, side=16, by_channel=True)
    job = write_job(tmp_path / "aug.yaml", data={"path": data, "augment": "cifar"}, scenario={"num_tasks": 1},
                    model={"kind": "cnn", "width": 8}, train={"epochs": 3, "batch_size": 16, "lr": 0.05})
    r = run_cmd(hpccl_cmd("run", job, "-n", "2", "--out", str(tmp_path / "run")), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert read_h5(str(tmp_path / "run" / "log.h5"))["eval/top1"][0, 0] > 0.8

