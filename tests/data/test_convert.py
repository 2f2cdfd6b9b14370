import argparse
import os
import pickle

import h5py
import numpy as np
import pytest
from PIL import Image

from hpccl.data import convert
from hpccl.data.convert import convert_cifar, convert_digits, convert_imagefolder, convert_synthetic
from hpccl.data.convert_cli import add_convert_parser
from hpccl.data.h5format import DatasetFile, write_dataset
from hpccl.core.errors import DatasetError


def raw(path, split):
    """Stored arrays as written (DatasetFile.read scales uint8 to float)."""
    with h5py.File(path, "r") as f:
        return f[f"{split}/x"][...], f[f"{split}/y"][...]


def leftovers(folder):
    return [n for n in os.listdir(folder) if ".tmp" in n or ".cifar" in n]


# --- digits ------------------------------------------------------------------------------------------

def test_digits_stratified_and_deterministic(tmp_path):
    a = convert_digits(tmp_path / "a.h5", test_fraction=0.2, seed=1)
    with DatasetFile(a) as ds:
        i = ds.info
        assert (i.name, i.num_classes, i.sample_shape, i.dtype) == ("digits", 10, (1, 8, 8), np.float32)
        assert i.num_train + i.num_test == 1797 and abs(i.num_test - 0.2 * 1797) <= 1
        x, y = ds.read("train", np.arange(i.num_train))
        assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
        counts_all = np.bincount(np.concatenate([ds.labels("train"), ds.labels("test")]), minlength=10)
        counts_test = np.bincount(ds.labels("test"), minlength=10)
    # Stratified: every class is held out in proportion (to within rounding).
    assert np.all(np.abs(counts_test - 0.2 * counts_all) <= 1)
    b = convert_digits(tmp_path / "b.h5", test_fraction=0.2, seed=1)
    c = convert_digits(tmp_path / "c.h5", test_fraction=0.2, seed=2)
    for split in ("train", "test"):
        np.testing.assert_array_equal(raw(a, split)[0], raw(b, split)[0])
        np.testing.assert_array_equal(raw(a, split)[1], raw(b, split)[1])
    assert not np.array_equal(raw(a, "test")[1], raw(c, "test")[1])


def test_digits_bad_fraction(tmp_path):
    with pytest.raises(DatasetError, match="--test-fraction"):
        convert_digits(tmp_path / "d.h5", test_fraction=1.5)


# --- CIFAR -------------------------------------------------------------------------------------------

def _pickle(path, obj):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def make_cifar10(root, per_batch=3, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        batches[name] = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        _pickle(root / name, batches[name])
    _pickle(root / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return batches


def test_cifar10(tmp_path):
    batches = make_cifar10(tmp_path / "cifar-10-batches-py")
    out = convert_cifar(tmp_path / "cifar-10-batches-py", tmp_path / "c10.h5")
    x, y = raw(out, "train")
    assert x.dtype == np.uint8 and x.shape == (15, 3, 32, 32) and y.dtype == np.int64
    np.testing.assert_array_equal(x[:3], batches["data_batch_1"][b"data"].reshape(3, 3, 32, 32))
    np.testing.assert_array_equal(y[12:], batches["data_batch_5"][b"labels"])
    xt, yt = raw(out, "test")
    np.testing.assert_array_equal(xt.reshape(4, -1), batches["test_batch"][b"data"])
    np.testing.assert_array_equal(yt, batches["test_batch"][b"labels"])
    with DatasetFile(out) as ds:
        assert (ds.info.name, ds.info.num_classes) == ("cifar10", 10)
    with h5py.File(out, "r") as f:
        assert list(f.attrs["class_names"]) == [f"c{i}" for i in range(10)]
    # The folder the archive was extracted into works as well.
    assert DatasetFile(convert_cifar(tmp_path, tmp_path / "again.h5")).info.num_train == 15
    assert not leftovers(tmp_path)


def test_cifar100(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "cifar-100-python"
    src.mkdir()
    for name, n in (("train", 5), ("test", 2)):
        _pickle(src / name, {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                             b"fine_labels": [99, 0, 42, 7, 3][:n], b"coarse_labels": [1] * n})
    _pickle(src / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
    out = convert_cifar(src, tmp_path / "c100.h5")
    with DatasetFile(out) as ds:
        assert (ds.info.name, ds.info.num_classes, ds.info.num_train, ds.info.num_test) == ("cifar100", 100, 5, 2)
        assert ds.labels("train").tolist() == [99, 0, 42, 7, 3]
        assert ds.info.dtype == np.uint8 and ds.info.sample_shape == (3, 32, 32)


def test_cifar_bad_inputs(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError, match=str(missing)):
        convert_cifar(missing, tmp_path / "x.h5")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "data_batch_1").write_bytes(b"")
    with pytest.raises(DatasetError, match=f"{wrong}.*neither the CIFAR-10 layout"):
        convert_cifar(wrong, tmp_path / "x.h5")
    broken = tmp_path / "broken"
    make_cifar10(broken)
    (broken / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="test_batch"):
        convert_cifar(broken, tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


# --- image folders -----------------------------------------------------------------------------------

COLORS = {"ant": (255, 0, 0), "cat": (0, 255, 0), "dog": (0, 0, 255)}


def make_tree(root, split, sizes_per_class, ext=".png"):
    for cls, sizes in sizes_per_class.items():
        d = root / split / cls
        d.mkdir(parents=True)
        for k, (w, h) in enumerate(sizes):
            img = Image.new("RGB", (w, h), COLORS[cls])
            img.save(d / f"img{k}{ext}")


def test_imagefolder_with_val(tmp_path, monkeypatch):
    monkeypatch.setattr(convert, "BLOCK_ROWS", 2)  # several blocks even for a tiny set
    src = tmp_path / "tiny"
    make_tree(src, "train", {"dog": [(40, 30), (20, 50)], "ant": [(30, 30)], "cat": [(64, 24), (24, 24), (33, 47)]})
    make_tree(src, "val", {"cat": [(50, 40)], "ant": [(25, 25)]}, ext=".JPEG")
    Image.new("L", (30, 40), 128).save(src / "train" / "ant" / "gray.jpg")  # grayscale -> RGB
    Image.new("RGBA", (30, 30), (0, 255, 0, 10)).save(src / "train" / "cat" / "alpha.png")
    (src / "train" / "ant" / "notes.txt").write_text("ignored")

    out = convert_imagefolder(src, tmp_path / "tiny.h5", size=16)
    with DatasetFile(out) as ds:
        i = ds.info
        assert (i.name, i.num_classes, i.sample_shape, i.dtype) == ("tiny", 3, (3, 16, 16), np.uint8)
        assert (i.num_train, i.num_test) == (8, 2)
    with h5py.File(out, "r") as f:
        assert list(f.attrs["class_names"]) == ["ant", "cat", "dog"]
    x, y = raw(out, "train")
    # Sorted classes then sorted file names: ant (gray, img0), cat (alpha, img0..2), dog (img0, img1).
    assert y.tolist() == [0, 0, 1, 1, 1, 1, 2, 2]
    # the training images' per-channel statistics, for data.normalize (streamed, in [0, 1])
    np.testing.assert_allclose(i.mean, (x / 255).mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(i.std, (x / 255).std(axis=(0, 2, 3)), rtol=1e-4)
    assert np.all(x[0] == 128)
    for row, label in enumerate(y):
        if row == 0:
            continue
        color = np.array(COLORS[["ant", "cat", "dog"][label]], dtype=np.uint8)
        assert np.all(x[row] == color[:, None, None]), row
    xt, yt = raw(out, "test")
    assert yt.tolist() == [0, 1]  # ids from the training classes, not the val folder's own order
    assert np.abs(xt[1].astype(int) - np.array(COLORS["cat"])[:, None, None]).max() <= 2  # JPEG
    assert not leftovers(tmp_path)


def test_imagefolder_resize_and_center_crop(tmp_path):
    # A 3:1 image of red | green | blue thirds: short side to 8 gives 24x8, the center crop is green.
    src = tmp_path / "src"
    (src / "train" / "a").mkdir(parents=True)
    img = np.zeros((30, 90, 3), dtype=np.uint8)
    img[:, :30, 0] = img[:, 30:60, 1] = img[:, 60:, 2] = 255
    Image.fromarray(img).save(src / "train" / "a" / "x.png")
    Image.fromarray(img).save(src / "train" / "a" / "y.png")
    out = convert_imagefolder(src, tmp_path / "o.h5", size=8, resize=8, test_fraction=0.5)
    x, _ = raw(out, "train")
    assert x.shape == (1, 3, 8, 8)
    assert np.all(x[0, 1, :, 1:-1] == 255) and np.all(x[0, [0, 2], :, 1:-1] == 0)
    # With a larger resize the crop sits inside the green third as well; default resize = size*256/224.
    out = convert_imagefolder(src, tmp_path / "p.h5", size=7, test_fraction=0.5)
    x, _ = raw(out, "train")
    assert x.shape == (1, 3, 7, 7) and np.all(x[0, 1, :, 1:-1] == 255)


def test_imagefolder_split_without_val(tmp_path):
    src = tmp_path / "src"
    make_tree(src, "train", {"ant": [(10, 10)] * 10, "cat": [(12, 9)] * 5})
    out = convert_imagefolder(src, tmp_path / "o.h5", size=8, test_fraction=0.2, seed=3)
    with DatasetFile(out) as ds:
        assert np.bincount(ds.labels("test")).tolist() == [2, 1]
        assert np.bincount(ds.labels("train")).tolist() == [8, 4]
    again = convert_imagefolder(src, tmp_path / "p.h5", size=8, test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(raw(out, "test")[1], raw(again, "test")[1])
    with pytest.raises(DatasetError, match=f"{src}.*--test-fraction"):
        convert_imagefolder(src, tmp_path / "q.h5", size=8)


def test_imagefolder_workers(tmp_path):
    src = tmp_path / "src"
    make_tree(src, "train", {"ant": [(10, 10)] * 3, "dog": [(12, 9)] * 3})
    one = convert_imagefolder(src, tmp_path / "one.h5", size=8, test_fraction=0.3)
    two = convert_imagefolder(src, tmp_path / "two.h5", size=8, test_fraction=0.3, workers=2)
    for split in ("train", "test"):
        np.testing.assert_array_equal(raw(one, split)[0], raw(two, split)[0])


def test_imagefolder_bad_inputs(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(DatasetError, match=str(missing)):
        convert_imagefolder(missing, tmp_path / "o.h5")
    no_train = tmp_path / "no_train"
    (no_train / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match=str(no_train / "train")):
        convert_imagefolder(no_train, tmp_path / "o.h5")
    src = tmp_path / "src"
    make_tree(src, "train", {"ant": [(10, 10)]})
    (src / "train" / "empty").mkdir()
    with pytest.raises(DatasetError, match=str(src / "train" / "empty")):
        convert_imagefolder(src, tmp_path / "o.h5", size=8, test_fraction=0.5)
    (src / "train" / "empty" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="bad.png"):
        convert_imagefolder(src, tmp_path / "o.h5", size=8, test_fraction=0.5)
    make_tree(src, "val", {"dog": [(10, 10)]})
    with pytest.raises(DatasetError, match="dog"):
        convert_imagefolder(src, tmp_path / "o.h5", size=8)
    with pytest.raises(DatasetError, match="--resize"):
        convert_imagefolder(src, tmp_path / "o.h5", size=8, resize=4)
    # Failed conversions leave neither the output nor a temp file behind.
    assert not (tmp_path / "o.h5").exists() and not leftovers(tmp_path)


# --- synthetic ---------------------------------------------------------------------------------------

def test_synthetic_learnable_and_deterministic(tmp_path, monkeypatch):
    monkeypatch.setattr(convert, "BLOCK_ROWS", 7)
    out = convert_synthetic(tmp_path / "s.h5", num_classes=4, shape=(2, 4, 4), train_per_class=30,
                            test_per_class=10, seed=5, noise=1.0)
    with DatasetFile(out) as ds:
        i = ds.info
        assert (i.name, i.num_classes, i.sample_shape, i.dtype) == ("synthetic", 4, (2, 4, 4), np.float32)
        assert (i.num_train, i.num_test) == (120, 40)
        xtr, ytr = ds.read("train", np.arange(120))
        xte, yte = ds.read("test", np.arange(40))
    assert np.bincount(ytr).tolist() == [30] * 4 and np.bincount(yte).tolist() == [10] * 4
    # Learnable: nearest class mean beats chance by far.
    means = np.stack([xtr[ytr == c].reshape(30, -1).mean(0) for c in range(4)])
    pred = ((xte.reshape(40, 1, -1) - means[None]) ** 2).sum(-1).argmin(1)
    assert (pred == yte).mean() > 0.9
    again = convert_synthetic(tmp_path / "t.h5", num_classes=4, shape=(2, 4, 4), train_per_class=30,
                              test_per_class=10, seed=5, noise=1.0)
    np.testing.assert_array_equal(raw(out, "train")[0], raw(again, "train")[0])
    vec = convert_synthetic(tmp_path / "v.h5", num_classes=3, shape=(5,), train_per_class=2, test_per_class=1)
    assert DatasetFile(vec).info.sample_shape == (5,)
    with pytest.raises(DatasetError, match="--shape"):
        convert_synthetic(tmp_path / "w.h5", shape=(3, 4))


# --- h5format reader ---------------------------------------------------------------------------------

def test_read_keeps_requested_order(tmp_path):
    x = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    y = np.arange(6, dtype=np.int64) % 3
    path = write_dataset(tmp_path / "r.h5", x, y, x[:2], y[:2], num_classes=3, name="r", chunk_rows=2)
    idx = [5, 0, 3, 3, 1, 5]
    with DatasetFile(path) as ds:
        xr, yr = ds.read("train", idx)
        np.testing.assert_array_equal(xr, x[idx])
        np.testing.assert_array_equal(yr, y[idx])
        xe, ye = ds.read("train", [])
        assert xe.shape == (0, 4) and ye.shape == (0,)


def test_read_in_blocks_keeps_order_and_duplicates_across_block_edges(tmp_path, monkeypatch):
    from hpccl.data import h5format
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 3, 2, 2), dtype=np.uint8)
    y = np.arange(50, dtype=np.int64) % 5
    path = write_dataset(tmp_path / "b.h5", x, y, x[:10], y[:10], num_classes=5, name="b", chunk_rows=7)
    monkeypatch.setattr(h5format, "READ_BLOCK_BYTES", 3 * x[0].nbytes)     # 3 rows a block
    idx = rng.integers(0, 50, 40)                                           # repeats, any order
    with DatasetFile(path) as ds:
        xr, yr = ds.read("train", idx, native=True)
    np.testing.assert_array_equal(xr, x[idx])
    np.testing.assert_array_equal(yr, y[idx])


def test_read_uint8_scaled(tmp_path):
    x = np.full((2, 1, 2, 2), 255, dtype=np.uint8)
    path = write_dataset(tmp_path / "u.h5", x, [0, 1], x, [1, 0], num_classes=2, name="u")
    with DatasetFile(path) as ds:
        xr, _ = ds.read("test", [1, 0])
    assert xr.dtype == np.float32 and np.all(xr == 1.0)


def test_missing_test_y(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.attrs["num_classes"], f.attrs["name"] = 2, "bad"
        f["train/x"] = np.zeros((2, 3), np.float32)
        f["train/y"] = np.zeros(2, np.int64)
        f["test/x"] = np.zeros((1, 3), np.float32)
    with pytest.raises(DatasetError, match=f"{path}.*/test/y"):
        DatasetFile(path)


# --- CLI ---------------------------------------------------------------------------------------------

def cli():
    parser = argparse.ArgumentParser(prog="hpccl data")
    add_convert_parser(parser.add_subparsers(dest="command"))
    return parser


def test_cli_synthetic(tmp_path, capsys):
    out = tmp_path / "s.h5"
    args = cli().parse_args(["convert", "synthetic", "--out", str(out), "--shape", "3x8x8",
                             "--num-classes", "3", "--train-per-class", "4", "--test-per-class", "2"])
    args.func(args)
    line = capsys.readouterr().out.strip()
    assert str(out) in line and "synthetic, 3 classes, 12 train / 6 test" in line and "3x8x8 float32" in line


def test_cli_imagefolder_and_help(tmp_path, capsys):
    src = tmp_path / "src"
    make_tree(src, "train", {"ant": [(10, 10)] * 2, "dog": [(12, 9)] * 2})
    args = cli().parse_args(["convert", "imagefolder", "--src", str(src), "--out", str(tmp_path / "i.h5"),
                             "--size", "8", "--test-fraction", "0.5"])
    args.func(args)
    assert "2 classes, 2 train / 2 test, samples 3x8x8 uint8" in capsys.readouterr().out
    for argv in (["convert", "--help"], ["convert", "cifar", "--help"]):
        with pytest.raises(SystemExit):
            cli().parse_args(argv)
        assert "example" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli().parse_args(["convert", "synthetic", "--out", "x.h5", "--shape", "3,4"])
    with pytest.raises(SystemExit):
        cli().parse_args(["convert", "digits"])  # --out is required
