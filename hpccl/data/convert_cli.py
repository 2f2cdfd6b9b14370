"""``hpccl data convert {digits,cifar,imagefolder,synthetic,libsvm}``: argparse wiring for convert.py.

``add_convert_parser(subparsers)`` mounts the command; each format sets ``func`` so the main
CLI runs ``args.func(args)``, and that function's docstring is the format's --help text.
Converters raise DatasetError for bad input, which the main CLI prints without a traceback;
``--out`` is checked (hpccl.core.paths) before a converter starts.
"""

from __future__ import annotations

import argparse
import inspect
import sys

from hpccl.core import cli_args
from hpccl.data import convert

_FORMATTER = argparse.RawDescriptionHelpFormatter


def _shape(text: str) -> tuple:
    """'3,32,32', '3x32x32' or '64' -> a tuple of positive ints."""
    try:
        shape = tuple(int(p) for p in text.lower().replace("x", ",").split(",") if p.strip())
    except ValueError:
        shape = ()
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected D or C,H,W (e.g. 3,32,32), got {text!r}")
    return shape


def _summary(path: str) -> str:
    from hpccl.data.h5format import DatasetFile

    with DatasetFile(path) as ds:
        i = ds.info
    shape = "x".join(str(s) for s in i.sample_shape)
    return (f"wrote {path}: {i.name}, {i.num_classes} classes, {i.num_train} train / {i.num_test} test, "
            f"samples {shape} {i.dtype}")


def _run_digits(args):
    """Write scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes) as float32
    [N, 1, 8, 8] in [0, 1], with a seeded stratified train/test split.

    example:
      hpccl data convert digits --out data/digits.h5
    """
    print(_summary(convert.convert_digits(args.out, test_fraction=args.test_fraction, seed=args.seed)))


def _run_cifar(args):
    """Write CIFAR-10 or CIFAR-100 from the extracted 'python version' folder (auto-detected:
    data_batch_1..5 + test_batch, or train + test) as uint8 [N, 3, 32, 32].

    example:
      tar xzf cifar-10-python.tar.gz
      hpccl data convert cifar --src cifar-10-batches-py --out data/cifar10.h5
    """
    print(_summary(convert.convert_cifar(args.src, args.out)))


def _run_imagefolder(args):
    """Write an ImageNet-style folder tree SRC/train/<class>/*.jpg (and SRC/val/<class>/*.jpg)
    as uint8 [N, 3, SIZE, SIZE]: short side resized to --resize, center crop --size.
    Class ids are the sorted folder names. Images are streamed in blocks, so memory
    stays small whatever the size. Without a val folder, --test-fraction of each class
    is held out.

    example:
      hpccl data convert imagefolder --src /scratch/imagenet --out imagenet224.h5 --workers 16
    """
    bar = None

    def progress(n, total):
        nonlocal bar
        if bar is None:
            from tqdm import tqdm
            bar = tqdm(total=total, unit="img", file=sys.stderr, disable=None)
        bar.update(n)

    try:
        path = convert.convert_imagefolder(
            args.src, args.out, size=args.size, resize=args.resize, val_dir=args.val_dir,
            test_fraction=args.test_fraction, seed=args.seed, workers=args.workers, name=args.name,
            progress=progress)
    finally:
        if bar is not None:
            bar.close()
    print(_summary(path))


def _run_synthetic(args):
    """Write learnable synthetic data: each class is a random N(0,1) prototype and samples are
    prototype + NOISE * N(0,1), float32. Streamed, so it can be made as large as needed.

    example:
      hpccl data convert synthetic --num-classes 100 --shape 3,32,32 --train-per-class 500 --out data/synth.h5
    """
    print(_summary(convert.convert_synthetic(
        args.out, num_classes=args.num_classes, shape=args.shape, train_per_class=args.train_per_class,
        test_per_class=args.test_per_class, seed=args.seed, noise=args.noise)))


def _run_libsvm(args):
    """Write a LIBSVM file ('label index:value ...', 1-based; .bz2/.gz/.xz read directly) as
    HDF5 with the samples sparse: /train/x is a CSR group (data float64, indices int32,
    indptr int64, attr shape [N, D]); /train/y int64 0/1 for two label values (smaller -> 0),
    else the raw float64 labels. --test fills /test the same way. ERM jobs (kind: erm)
    read it with data: {path: FILE}, every rank only its rows.

    example:
      hpccl data convert libsvm --src ../shared/data/libsvm/a9a.bz2 --test ../shared/data/libsvm/a9a.t.bz2 --out data/a9a.h5
    """
    import h5py

    path = convert.convert_libsvm(args.src, args.out, test=args.test, name=args.name)
    with h5py.File(path, "r") as f:
        parts = [f"{s} {int(f[s]['x'].attrs['shape'][0])} rows, {len(f[s]['x']['data'])} nonzeros"
                 for s in ("train", "test")]
        print(f"wrote {path}: {f.attrs['name']}, {int(f.attrs['num_features'])} features, "
              f"{int(f.attrs['num_classes'])} classes, sparse CSR; " + "; ".join(parts))


def _checked_out(func):
    """``func`` after checking --out: a file path that can be written (not a directory, its
    folder creatable and writable), so that a bad --out fails before any reading or converting."""
    def run(args):
        from hpccl.core.paths import check_output_file
        check_output_file(args.out, "--out", "a path for the HDF5 file to write", "data.h5")
        return func(args)
    return run


def _add(sub, name, summary, func):
    """The subcommand ``name``, running ``func``; the docstring of ``func`` is its --help text."""
    p = sub.add_parser(name, help=summary, description=inspect.getdoc(func), formatter_class=_FORMATTER)
    p.add_argument("--out", required=True, metavar="PATH", help="HDF5 file to write (replaced if it exists)")
    p.set_defaults(func=_checked_out(func))
    return p


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``convert`` command (with one subcommand per source format) to ``subparsers``."""
    parser = subparsers.add_parser(
        "convert", help="convert a dataset to the hpccl HDF5 format", formatter_class=_FORMATTER,
        description="Convert a dataset to the hpccl HDF5 format (/train/x, /train/y, /test/x, "
                    "/test/y).\n\nexamples:\n"
                    "  hpccl data convert digits --out data/digits.h5\n"
                    "  hpccl data convert cifar --src cifar-10-batches-py --out data/cifar10.h5\n"
                    "  hpccl data convert imagefolder --src /scratch/imagenet --out imagenet.h5 --workers 16\n"
                    "  hpccl data convert synthetic --num-classes 100 --out data/synth.h5\n"
                    "  hpccl data convert libsvm --src a9a.bz2 --test a9a.t.bz2 --out data/a9a.h5")
    sub = parser.add_subparsers(dest="convert_format", metavar="FORMAT", required=True)

    p = _add(sub, "digits", "scikit-learn's 8x8 digits (bundled, no download)", _run_digits)
    p.add_argument("--test-fraction", type=cli_args.number(0, 1, lo_open=True, hi_open=True), default=0.2,
                   help="share held out for test (default 0.2)")
    p.add_argument("--seed", type=cli_args.seed, default=0, help="seed of the split (default 0)")

    p = _add(sub, "cifar", "CIFAR-10/100 python pickle folder", _run_cifar)
    p.add_argument("--src", required=True, metavar="DIR", help="extracted CIFAR folder")

    p = _add(sub, "imagefolder", "ImageNet-style class folders (streamed)", _run_imagefolder)
    p.add_argument("--src", required=True, metavar="DIR", help="folder holding train/ (and val/)")
    p.add_argument("--size", type=cli_args.integer(1, 8192), default=224, help="crop size in pixels (default 224)")
    p.add_argument("--resize", type=cli_args.integer(1, 16384), default=None,
                   help="short side before cropping (default size*256/224, e.g. 256 for 224)")
    p.add_argument("--val-dir", default=None, metavar="DIR", help="test-set folder (default SRC/val if present)")
    p.add_argument("--test-fraction", type=cli_args.number(0, 1, hi_open=True), default=0.0,
                   help="share of each training class held out when there is no val folder")
    p.add_argument("--seed", type=cli_args.seed, default=0, help="seed of the held-out split (default 0)")
    p.add_argument("--workers", type=cli_args.integer(1, 1024), default=1, help="decoding processes (default 1)")
    p.add_argument("--name", default=None, help="dataset name (default: the folder's name)")

    p = _add(sub, "synthetic", "Gaussian-cluster data for scaling studies", _run_synthetic)
    p.add_argument("--num-classes", type=cli_args.integer(2, 1_000_000), default=10, help="number of classes (default 10)")
    p.add_argument("--shape", type=_shape, default=(3, 32, 32), help="sample shape D or C,H,W (default 3,32,32)")
    p.add_argument("--train-per-class", type=cli_args.integer(1), default=100, help="training samples a class (default 100)")
    p.add_argument("--test-per-class", type=cli_args.integer(1), default=20, help="test samples a class (default 20)")
    p.add_argument("--noise", type=cli_args.number(0), default=1.0, help="noise std relative to prototypes (default 1.0)")
    p.add_argument("--seed", type=cli_args.seed, default=0, help="random seed (default 0)")

    p = _add(sub, "libsvm", "LIBSVM text file (sparse, for ERM jobs)", _run_libsvm)
    p.add_argument("--src", required=True, metavar="FILE", help="LIBSVM training file")
    p.add_argument("--test", default=None, metavar="FILE", help="LIBSVM test file (optional)")
    p.add_argument("--name", default=None, help="dataset name (default: the file's name)")
    return parser
