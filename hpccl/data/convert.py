"""Converters from common dataset layouts to the hpccl HDF5 format (see ``h5format``).

Small sets (digits, CIFAR) fit in memory and go through ``write_dataset``. ImageNet-sized
sets (image folders, large synthetic sets) are streamed: the HDF5 datasets are created with
their final shape and filled block by block, so memory stays at one block whatever the size.
Every converter writes to a temporary file renamed into place, so an interrupted conversion
never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle

import h5py
import numpy as np

from hpccl.data.h5format import FORMAT_VERSION, image_stats, write_dataset
from hpccl.core.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
BLOCK_ROWS = 256  # images decoded and written at a time when streaming


# --- streaming writer ------------------------------------------------------------------------------

@contextlib.contextmanager
def _atomic_h5(out):
    """Open a temp HDF5 file next to ``out``; rename it to ``out`` only if the block succeeds."""
    out = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            yield f
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _create_split(f, split, n, sample_shape, dtype):
    """Create /split/x and /split/y with their final shape, chunked by rows like write_dataset."""
    g = f.create_group(split)
    sample_bytes = math.prod(sample_shape) * np.dtype(dtype).itemsize
    rows = max(1, min(n, (1 << 20) // max(1, sample_bytes)))
    x = g.create_dataset("x", shape=(n,) + tuple(sample_shape), dtype=dtype,
                         chunks=(rows,) + tuple(sample_shape) if n else None)
    y = g.create_dataset("y", shape=(n,), dtype=np.int64)
    return x, y


def _set_root_attrs(f, num_classes, name, **extra):
    f.attrs["num_classes"] = int(num_classes)
    f.attrs["name"] = str(name)
    f.attrs["format_version"] = FORMAT_VERSION
    for key, value in extra.items():
        f.attrs[key] = value


# --- digits ------------------------------------------------------------------------------------------

def _check_fraction(value, flag, allow_zero=False):
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise DatasetError(f"{flag} must be a fraction in {bound}, got {value}.")


def convert_digits(out, test_fraction: float = 0.2, seed: int = 0) -> str:
    """scikit-learn's bundled 8x8 digits (1797 images, no download) as float32 [N, 1, 8, 8]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_fraction(test_fraction, "--test-fraction")
    digits = load_digits()
    # Pixels are counts 0..16; scale to [0, 1] like uint8 images are when read.
    x = (digits.data.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    # A stratified split needs a sample of every class on each side; scikit-learn's own
    # refusal of a fraction near 0 or 1 was a ValueError traceback.
    n, classes = len(y), len(np.unique(y))
    n_test = math.ceil(n * test_fraction)
    if min(n_test, n - n_test) < classes:
        raise DatasetError(f"--test-fraction {test_fraction}: splits the {n} digits into {n - n_test} "
                           f"train / {n_test} test samples; each side needs at least one of each of the "
                           f"{classes} classes. HINT: a fraction in [{classes / n:.4f}, {1 - classes / n:.4f}].")
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                              stratify=y)
    return write_dataset(out, x_tr, y_tr, x_te, y_te, num_classes=10, name="digits")


# --- CIFAR -------------------------------------------------------------------------------------------

_CIFAR_LAYOUTS = {
    # name: (train files, test files, label key, meta file, class-names key)
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels",
                "batches.meta", b"label_names"),
    "cifar100": (["train"], ["test"], b"fine_labels", "meta", b"fine_label_names"),
}
_CIFAR_SUBDIRS = ("cifar-10-batches-py", "cifar-100-python")


def _load_pickle(path):
    # The CIFAR files are Python 2 pickles of byte-keyed dicts.
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DatasetError(f"CIFAR file {path!r} could not be read as a Python pickle ({e}); "
                           "expected the 'python version' of CIFAR from cs.toronto.edu.") from None


def _detect_cifar(src):
    if not os.path.isdir(src):
        hint = " Extract the archive first (tar xzf ...)." if str(src).endswith((".tar.gz", ".tgz")) else ""
        raise DatasetError(f"CIFAR source folder {src!r} does not exist or is not a folder.{hint}")
    # Accept the folder the archive was extracted into as well as the batches folder itself.
    for sub in _CIFAR_SUBDIRS:
        if os.path.isdir(os.path.join(src, sub)):
            src = os.path.join(src, sub)
            break
    present = set(os.listdir(src))
    for name, (train, test, *_) in _CIFAR_LAYOUTS.items():
        if set(train + test) <= present:
            return name, src
    raise DatasetError(
        f"CIFAR source folder {src!r} has neither the CIFAR-10 layout (data_batch_1..5, test_batch, "
        f"batches.meta) nor the CIFAR-100 layout (train, test, meta); found "
        f"{', '.join(sorted(present)[:10]) or 'nothing'}{' ...' if len(present) > 10 else ''}. "
        "Point it at the extracted 'cifar-10-batches-py' or 'cifar-100-python' folder.")


def _read_cifar_files(src, files, label_key):
    xs, ys = [], []
    for fname in files:
        path = os.path.join(src, fname)
        batch = _load_pickle(path)
        if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
            raise DatasetError(f"CIFAR file {path!r} lacks the keys b'data' and {label_key!r}.")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(batch[label_key]):
            raise DatasetError(f"CIFAR file {path!r}: b'data' has shape {data.shape}, expected "
                               f"[{len(batch[label_key])}, 3072] (one row of 3x32x32 pixels per label).")
        # Rows are channel-major (1024 R, 1024 G, 1024 B), i.e. already [C, H, W].
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def convert_cifar(src_dir, out) -> str:
    """CIFAR-10 or CIFAR-100 (python pickle version, auto-detected) as uint8 [N, 3, 32, 32]."""
    name, src = _detect_cifar(os.fspath(src_dir))
    train_files, test_files, label_key, meta_file, names_key = _CIFAR_LAYOUTS[name]
    x_tr, y_tr = _read_cifar_files(src, train_files, label_key)
    x_te, y_te = _read_cifar_files(src, test_files, label_key)
    num_classes = 10 if name == "cifar10" else 100
    class_names = None
    meta_path = os.path.join(src, meta_file)
    if os.path.exists(meta_path):
        meta = _load_pickle(meta_path)
        if isinstance(meta, dict) and names_key in meta:
            class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    for split, y in (("train", y_tr), ("test", y_te)):
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise DatasetError(f"CIFAR folder {src!r}: {split} labels span {y.min()}..{y.max()}, "
                               f"expected 0..{num_classes - 1} for {name}.")
    # write_dataset is atomic itself; write to a private name, add class names, then rename,
    # so that ``out`` only ever appears complete.
    out = os.fspath(out)
    tmp = write_dataset(f"{out}.cifar{os.getpid()}", x_tr, y_tr, x_te, y_te,
                        num_classes=num_classes, name=name)
    try:
        if class_names and len(class_names) == num_classes:
            with h5py.File(tmp, "a") as f:
                f.attrs["class_names"] = class_names
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out


# --- image folders (ImageNet layout) -----------------------------------------------------------------

def _list_classes(root, what):
    if not os.path.isdir(root):
        raise DatasetError(f"{what} folder {root!r} does not exist. Expected an ImageNet-style layout: "
                           "SRC/train/<class>/<image>.jpg (and optionally SRC/val/<class>/<image>.jpg).")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise DatasetError(f"{what} folder {root!r} has no class subfolders; expected "
                           f"{root}/<class>/<image>.jpg (one subfolder per class).")
    return classes


def _list_images(root, classes, class_ids, what):
    """(path, label) pairs in sorted order, so the output is deterministic."""
    items = []
    for name in classes:
        folder = os.path.join(root, name)
        files = sorted(e.path for e in os.scandir(folder)
                       if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DatasetError(f"{what} class folder {folder!r} has no images "
                               f"(looked for {', '.join(IMAGE_EXTENSIONS)}, any case).")
        items += [(p, class_ids[name]) for p in files]
    return items


def _load_image(path, size, resize):
    """Decode, resize the short side to ``resize``, center-crop ``size``; uint8 [3, size, size]."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            # Let the JPEG decoder downscale by a power of two while staying >= resize on both
            # sides: several times faster on full-size ImageNet photos.
            img.draft("RGB", (resize, resize))
            img = img.convert("RGB")
            w, h = img.size
            scale = resize / min(w, h)
            # Same rounding as torchvision's Resize(int): the long side is truncated.
            nw, nh = (resize, int(h * scale)) if w <= h else (int(w * scale), resize)
            img = img.resize((nw, nh), getattr(Image, "Resampling", Image).BILINEAR)
            left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
            img = img.crop((left, top, left + size, top + size))
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, ValueError) as e:
        raise DatasetError(f"image {path!r} could not be decoded ({e}); remove or replace it.") from None


def _split_items(items, test_fraction, seed):
    """Seeded split of each class's images into train and test (at least one train image a class)."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list] = {}
    for item in items:
        by_class.setdefault(item[1], []).append(item)
    train, test = [], []
    for label in sorted(by_class):
        group = by_class[label]
        perm = rng.permutation(len(group))
        n_test = min(len(group) - 1, int(round(len(group) * test_fraction)))
        test += [group[i] for i in sorted(perm[:n_test])]
        train += [group[i] for i in sorted(perm[n_test:])]
    return train, test


def _write_images(x_ds, y_ds, items, size, resize, pool, progress, total):
    for start in range(0, len(items), BLOCK_ROWS):
        block = items[start:start + BLOCK_ROWS]
        args = [(p, size, resize) for p, _ in block]
        imgs = pool.starmap(_load_image, args) if pool else [_load_image(*a) for a in args]
        x_ds[start:start + len(block)] = np.stack(imgs)
        y_ds[start:start + len(block)] = [label for _, label in block]
        if progress:
            progress(len(block), total)


def convert_imagefolder(src_dir, out, size: int = 224, resize: int | None = None, val_dir=None,
                        test_fraction: float = 0.0, seed: int = 0, workers: int = 1,
                        name: str | None = None, progress=None) -> str:
    """ImageNet-style folders as uint8 [N, 3, size, size], streamed to disk.

    ``src_dir/train/<class>/*`` is the training set; ``val_dir`` (default ``src_dir/val`` when
    it exists) with the same class subfolders is the test set, else ``test_fraction`` of each
    training class is held out. Class ids are the sorted class-folder names; the names are
    stored in the root attribute ``class_names``; ``name`` defaults to the folder's name.
    ``workers`` > 1 decodes in that many processes. ``progress(n, total)`` is called after each
    block of ``n`` images.
    """
    src_dir = os.fspath(src_dir)
    if not os.path.isdir(src_dir):
        raise DatasetError(f"image folder {src_dir!r} does not exist or is not a folder.")
    if resize is None:
        resize = int(round(size * 256 / 224))
    if size < 1 or resize < size:
        raise DatasetError(f"--resize ({resize}) must be at least --size ({size}), and --size positive: "
                           "images are resized so their short side is --resize, then center-cropped to --size.")
    train_root = os.path.join(src_dir, "train")
    classes = _list_classes(train_root, "training")
    class_ids = {name: i for i, name in enumerate(classes)}
    train = _list_images(train_root, classes, class_ids, "training")

    if val_dir is None and os.path.isdir(os.path.join(src_dir, "val")):
        val_dir = os.path.join(src_dir, "val")
    if val_dir is not None:
        val_dir = os.fspath(val_dir)
        if test_fraction:
            raise DatasetError(f"--test-fraction {test_fraction} was given but a validation folder "
                               f"{val_dir!r} exists; it is the test set. Drop --test-fraction, or "
                               "move the folder away to split the training images instead.")
        val_classes = _list_classes(val_dir, "validation")
        extra = sorted(set(val_classes) - set(classes))
        if extra:
            raise DatasetError(f"validation folder {val_dir!r} has classes not in {train_root!r}: "
                               f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}.")
        test = _list_images(val_dir, val_classes, class_ids, "validation")
    else:
        if not test_fraction:
            raise DatasetError(f"image folder {src_dir!r} has no 'val' folder, so a test set must be split "
                               "from the training images: pass --test-fraction (e.g. 0.1) or --val-dir.")
        _check_fraction(test_fraction, "--test-fraction")
        train, test = _split_items(train, test_fraction, seed)

    pool = None
    if workers > 1:
        import multiprocessing
        pool = multiprocessing.get_context("spawn").Pool(workers)
    try:
        with _atomic_h5(out) as f:
            name = name or os.path.basename(os.path.abspath(src_dir))
            _set_root_attrs(f, len(classes), name, class_names=classes)
            for split, items in (("train", train), ("test", test)):
                x_ds, y_ds = _create_split(f, split, len(items), (3, size, size), np.uint8)
                _write_images(x_ds, y_ds, items, size, resize, pool, progress, len(train) + len(test))
            if len(train):
                f.attrs.update(image_stats(f["train/x"]))
    finally:
        if pool:
            pool.close()
            pool.join()
    return os.fspath(out)


# --- synthetic ---------------------------------------------------------------------------------------

def _check_synthetic_size(out, num_classes, shape, train_per_class, test_per_class) -> None:
    """The samples are streamed to disk, but a split's labels and the prototypes are held in
    memory: a set beyond either (10**30 samples a class) raised OverflowError or MemoryError."""
    import shutil
    from hpccl.core.memory import node_memory_bytes
    sample = math.prod(shape) * 4
    samples = num_classes * (train_per_class + test_per_class)
    folder = os.path.dirname(os.path.abspath(out))
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    free, memory = shutil.disk_usage(folder).free, node_memory_bytes() or 0
    held = num_classes * sample + 2 * 8 * num_classes * max(train_per_class, test_per_class)
    sizes = (f"--num-classes {num_classes} x (--train-per-class {train_per_class} + --test-per-class "
             f"{test_per_class}) = {samples} samples of {sample} bytes")
    if samples * (sample + 8) > free:
        raise DatasetError(f"--out {out}: {sizes} need {samples * (sample + 8) / 1e9:.3g} GB on disk; "
                           f"{folder} has {free / 1e9:.3g} GB free. HINT: fewer samples a class, or "
                           "another file system.")
    if memory and held > memory / 2:
        raise DatasetError(f"{sizes}: the labels of a split and the class prototypes need "
                           f"{held / 1e9:.3g} GB of memory, more than half of this machine's "
                           f"{memory / 1e9:.3g} GB. HINT: fewer classes or samples a class.")


def convert_synthetic(out, num_classes: int = 10, shape=(3, 32, 32), train_per_class: int = 100,
                      test_per_class: int = 20, seed: int = 0, noise: float = 1.0) -> str:
    """Gaussian clusters: each class a random N(0, 1) prototype, samples = prototype + noise.

    Meant for scaling studies where only size and throughput matter, so it is streamed and can
    be as large as the disk allows. Larger ``noise`` makes the classes harder to separate.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise DatasetError(f"--shape must be D or C,H,W with positive sizes, got {shape}.")
    for flag, v in (("--num-classes", num_classes), ("--train-per-class", train_per_class),
                    ("--test-per-class", test_per_class)):
        if v < 1:
            raise DatasetError(f"{flag} must be a positive integer, got {v}.")
    if noise < 0:
        raise DatasetError(f"--noise must be >= 0, got {noise}.")
    _check_synthetic_size(out, num_classes, shape, train_per_class, test_per_class)
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((num_classes,) + shape, dtype=np.float32)
    with _atomic_h5(out) as f:
        _set_root_attrs(f, num_classes, "synthetic", noise=float(noise), seed=int(seed))
        for split, per_class in (("train", train_per_class), ("test", test_per_class)):
            # Shuffled so a contiguous slice of the file holds every class.
            labels = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int64), per_class))
            x_ds, y_ds = _create_split(f, split, len(labels), shape, np.float32)
            y_ds[...] = labels
            for start in range(0, len(labels), BLOCK_ROWS):
                y = labels[start:start + BLOCK_ROWS]
                eps = rng.standard_normal((len(y),) + shape, dtype=np.float32)
                x_ds[start:start + len(y)] = prototypes[y] + np.float32(noise) * eps
    return os.fspath(out)


# --- breast cancer (ERM builtin) ---------------------------------------------------------------------

def convert_breast_cancer(out) -> str:
    """scikit-learn's bundled Wisconsin breast-cancer set (569 x 30, 2 classes, no download),
    preprocessed for ERM: every feature standardized, then every row scaled to unit L2 norm
    (standardized rows vary ~14x in norm, which would slow every uniform-sampling solver).
    All 569 samples are in /train (the ERM objective is over all of them); /test is empty.
    float32 [N, 30], labels int64 0 (malignant) / 1 (benign)."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float32)
    with _atomic_h5(out) as f:
        _set_root_attrs(f, 2, "breast_cancer", preprocessing="standardized, unit-norm rows")
        for split, (xs, ys) in (("train", (x, y)), ("test", (x[:0], y[:0]))):
            g = f.create_group(split)
            g.create_dataset("x", data=xs)
            g.create_dataset("y", data=ys.astype(np.int64))
    return os.fspath(out)


# --- LIBSVM ------------------------------------------------------------------------------------------

def convert_libsvm(src, out, test=None, name=None) -> str:
    """A LIBSVM text file (``label index:value ...``, 1-based indices; .bz2/.gz/.xz read directly)
    as an HDF5 file with the samples stored sparse, as CSR arrays.

    Layout (format_version 1; the ERM job reads it, ``data: {path: FILE}`` with ``kind: erm``)::

        /train/x            group: a CSR matrix [N, D]
            attrs           encoding-type = "csr_matrix", encoding-version = "0.1.0",
                            shape = [N, D]     (the same convention as anndata)
            data            float64 [nnz]      the nonzero values, row by row
            indices         int32   [nnz]      their column, 0-based
            indptr          int64   [N + 1]    row i is data[indptr[i]:indptr[i+1]]
        /train/y            int64 [N]: 0/1 for two label values (the smaller one -> 0), or
                            float64 [N], the raw labels, for more than two (regression)
        /test/x, /test/y    the same for --test (N = 0 without it)
        root attrs          name, num_classes (2, or 0 for regression), num_features (D),
                            label_values (float64: the original labels of 0 and 1), source,
                            format_version (1)

    D is the largest feature index in train and test. A rank reads only its rows: indptr[lo:hi+1],
    then data/indices[indptr[lo]:indptr[hi]].
    """
    from hpccl.data.libsvm import read_libsvm, scan_libsvm

    src = os.fspath(src)
    scans = {"train": scan_libsvm(src)}
    if test is not None:
        scans["test"] = scan_libsvm(os.fspath(test))
    if scans["train"][0] == 0:
        raise DatasetError(f"LIBSVM file {src!r} has no samples.")
    d = max(s[2] for s in scans.values())
    labels = scans["train"][1]
    binary = len(labels) <= 2
    if test is not None and binary:
        extra = sorted(set(scans["test"][1]) - set(labels))
        if extra:
            raise DatasetError(f"test file {test!r} has label values {extra[:5]} that the training "
                               f"file {src!r} lacks (it has {labels}).")
    with _atomic_h5(out) as f:
        _set_root_attrs(f, 2 if binary else 0, name or os.path.basename(src).split(".")[0],
                        num_features=int(d), label_values=np.asarray(labels if binary else [], float),
                        source=os.path.basename(src))
        for split in ("train", "test"):
            g = f.create_group(split)
            if split in scans:
                path = src if split == "train" else os.fspath(test)
                X, y, _, _ = read_libsvm(path, rank=0, size=1, n_features=d, binary=False,
                                         scan=scans[split])
            else:
                import scipy.sparse as sp
                X, y = sp.csr_matrix((0, d)), np.zeros(0)
            xg = g.create_group("x")
            xg.attrs["encoding-type"] = "csr_matrix"
            xg.attrs["encoding-version"] = "0.1.0"
            xg.attrs["shape"] = np.asarray([X.shape[0], d], dtype=np.int64)
            xg.create_dataset("data", data=X.data.astype(np.float64))
            xg.create_dataset("indices", data=X.indices.astype(np.int32))
            xg.create_dataset("indptr", data=X.indptr.astype(np.int64))
            if binary:
                # The larger label value -> 1 (a single-valued file keeps its sign).
                pos = labels[-1] if len(labels) == 2 else 0.0
                y = (y == pos) if len(labels) == 2 else (y > pos)
                g.create_dataset("y", data=y.astype(np.int64))
            else:
                g.create_dataset("y", data=np.asarray(y, dtype=np.float64))
    return os.fspath(out)
