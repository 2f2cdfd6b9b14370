"""Hostile files that are not YAML, for tests/test_fuzz.py: hpccl dataset files (HDF5) with
wrong attributes, dtypes and shapes, and run directories whose log has been tampered with.

A generated file is a JSON spec, so that a case the fuzzer finds can be kept in
tests/fuzz_corpus/cases.json as it was drawn and written again, byte for byte, when it is
replayed. ``write_dataset_spec`` and ``write_rundir_spec`` turn a spec into files."""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np

# [type, value] pairs for one HDF5 attribute: the value as JSON holds it, the type as h5py writes it.
ATTR_VALUES = [
    ["int", 0], ["int", -1], ["int", 1], ["int", 2], ["int", 10 ** 6], ["int", 2 ** 62], ["int", -2 ** 63],
    ["uint64", 2 ** 64 - 1], ["int8", -3], ["uint8", 200], ["float", 10.5], ["float", 3.0],
    ["float", "nan"], ["float", "inf"], ["float", "-inf"], ["float", -0.0], ["float", 1e300],
    ["float32", 2.0], ["bool", True], ["bool", False], ["str", ""], ["str", "10"], ["str", "x"],
    ["str", "a\nb"], ["str", "\x00"], ["str", "é中文"], ["str", "x" * 5000], ["bytes", "10"], ["bytes", "\xff"],
    ["intarr", [3]], ["intarr", []], ["intarr", [2, 3]], ["intarr", [[1, 2], [3, 4]]], ["floatarr", [0.5, 0.5]],
    ["floatarr", [-1.0]], ["floatarr", ["nan"]], ["strarr", ["a", "b"]], ["strarr", []], ["complex", [1, 2]],
    ["empty", None], ["missing", None],
]
ATTRS = ["num_classes", "name", "format_version", "mean", "std", "nosuch"]
DTYPES = ["float32", "uint8", "float64", "float16", "int64", "int32", "int8", "uint64", "bool",
          "complex64", "S4", "vlen_str"]
FILLS = ["rand", "labels", "zeros", "nan", "inf", "big", "neg", "half", "huge"]
ARRAYS = ["train/x", "train/y", "test/x", "test/y"]


def base_dataset(r) -> dict:
    """A small valid dataset: 1 to 4 classes, vectors or 1-channel images."""
    ncls = r.choice([1, 2, 3, 4])
    image = r.random() < 0.4
    per = r.choice([1, 2, 3])
    sample = [1, 4, 4] if image else [r.choice([1, 8])]
    xdtype = "uint8" if image and r.random() < 0.6 else "float32"
    arrays = {}
    for split in ("train", "test"):
        n = ncls * per
        arrays[f"{split}/x"] = {"dtype": xdtype, "shape": [n] + sample, "fill": "rand"}
        arrays[f"{split}/y"] = {"dtype": "int64", "shape": [n], "fill": "labels"}
    attrs = {"num_classes": ["int", ncls], "name": ["str", "fz"], "format_version": ["int", 1]}
    if image and xdtype == "uint8" and r.random() < 0.5:
        attrs["mean"], attrs["std"] = ["floatarr", [0.5]], ["floatarr", [0.25]]
    return {"ncls": ncls, "attrs": attrs, "arrays": arrays}


def mutate_dataset(r, spec) -> dict:
    """1 to 3 hostile changes: an attribute, an array's dtype, shape or contents, or the file."""
    for _ in range(r.randint(1, 3)):
        op = r.random()
        if op < 0.4:
            spec["attrs"][r.choice(ATTRS)] = list(r.choice(ATTR_VALUES))
        elif op < 0.85:
            key = r.choice(ARRAYS)
            a = spec["arrays"][key]
            if a in ("missing", "group", "scalar"):
                continue
            what = r.random()
            if what < 0.25:
                a["dtype"] = r.choice(DTYPES)
            elif what < 0.5:
                a["fill"] = r.choice(FILLS)
            elif what < 0.6:
                a["shape"][0] = 0
            elif what < 0.7:
                a["shape"][0] = max(0, a["shape"][0] + r.choice([1, -1]))
            elif what < 0.8:
                a["shape"] = a["shape"] + [1] if r.random() < 0.5 else a["shape"][:1]
            elif what < 0.85:
                a["shape"] = a["shape"][:1] + [r.choice([0, 2, 3])] + a["shape"][2:]
            else:
                spec["arrays"][key] = r.choice(["missing", "group", "scalar"])
        elif op < 0.9:
            spec["truncate"] = r.choice([0.0, 0.1, 0.5, 0.9])
        elif op < 0.95:
            spec["raw"] = r.choice(["", "not hdf5\n", "\x89HDF\r\n\x1a\n" + "\x00" * 40, "name: x\n"])
        else:
            spec["extra"] = r.choice(["/train/extra", "/nosuch/x", "/train/x_attr"])
    return spec


def _attr(kind, value):
    if kind == "int":
        return np.int64(value)
    if kind in ("uint64", "int8", "uint8"):
        return np.dtype(kind).type(value)
    if kind in ("float", "float32"):
        return np.dtype("float64" if kind == "float" else kind).type(float(value))
    if kind == "bool":
        return np.bool_(value)
    if kind == "str":       # h5py's variable-length strings cannot hold a NUL: fixed-length bytes can
        return np.bytes_(value.encode()) if "\x00" in value else value
    if kind == "bytes":
        return np.bytes_(value.encode("latin-1"))
    if kind == "intarr":
        return np.asarray(value, dtype=np.int64)
    if kind == "floatarr":
        return np.asarray([float(v) for v in value], dtype=np.float64)
    if kind == "strarr":
        return np.asarray(value, dtype=h5py.string_dtype()) if value else np.asarray([], dtype="S1")
    if kind == "complex":
        return np.complex128(complex(*value))
    if kind == "empty":
        return h5py.Empty("f")
    raise ValueError(kind)


def _array(a, ncls, rng):
    shape = tuple(a["shape"])
    n = shape[0] if shape else 1
    fill = a["fill"]
    labels = (np.arange(n) % max(ncls, 1)).reshape((n,) + (1,) * (len(shape) - 1)) * np.ones(shape)
    values = {"rand": lambda: rng.random(shape), "labels": lambda: labels, "zeros": lambda: np.zeros(shape),
              "nan": lambda: np.full(shape, np.nan), "inf": lambda: np.full(shape, np.inf),
              "big": lambda: labels + ncls, "neg": lambda: labels - ncls - 1, "half": lambda: labels + 0.5,
              "huge": lambda: np.full(shape, 2.0 ** 62)}[fill]()
    dtype = a["dtype"]
    if dtype == "vlen_str":
        return np.asarray(values.astype(str), dtype=h5py.string_dtype())
    if dtype == "S4":
        return values.astype("S4")
    if dtype == "uint8" and fill == "rand":
        values = values * 255
    with np.errstate(all="ignore"):
        return values.astype(dtype)


def write_dataset_spec(path, spec) -> None:
    if "raw" in spec:
        with open(path, "wb") as f:
            f.write(spec["raw"].encode("latin-1"))
        return
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for key, value in spec["attrs"].items():
            if value[0] != "missing":
                f.attrs[key] = _attr(*value)
        for key, a in spec["arrays"].items():
            if a == "missing":
                continue
            if a == "group":
                f.create_group(key)
            elif a == "scalar":
                f.create_dataset(key, data=np.int64(3))
            else:
                f.create_dataset(key, data=_array(a, spec["ncls"], rng))
        if "extra" in spec:
            f.create_dataset(spec["extra"], data=np.zeros(2))
    _truncate(path, spec.get("truncate"))


def _truncate(path, fraction):
    if fraction is not None:
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(int(size * fraction))


# --- run directories -----------------------------------------------------------------------------

LOG_ATTRS = ["world_size", "status", "kind", "name", "learner", "backend", "tasks_completed",
             "train_time_s", "sample_shape", "config_yaml", "schema_version", "job_kind", "scenario", "nosuch"]
LOG_DATASETS = ["epochs/loss", "epochs/samples", "epochs/time_s", "tasks/average_accuracy", "tasks/classes",
                "eval/top1", "epochs", "_attrs/key"]
RANK_PATHS = ["timers/total", "timers/task", "timers/data_load", "timers"]
MANIFESTS = ["{}", "[]", "", "{", '{"mode": "weak", "points": []}', '{"mode": "weak", "points": [{}]}',
             '{"mode": 3, "points": "x"}', '{"mode": "strong", "site": null, "points": [{"gpus": 1, "run_dir": "base"}]}',
             '{"mode": "weak", "points": [{"gpus": "x", "run_dir": "/nonexistent"}]}', "\xff\xfe"]


def mutate_rundir(r) -> dict:
    """What to do to a copy of the fuzz baseline run: 1 to 2 changes to its log, rank log or
    directory."""
    ops = []
    for _ in range(r.randint(1, 2)):
        op = r.random()
        if op < 0.35:
            ops.append(["attr", r.choice(LOG_ATTRS), list(r.choice(ATTR_VALUES))])
        elif op < 0.55:
            ops.append(["dataset", r.choice(LOG_DATASETS),
                        r.choice(["missing", "scalar", "strings", "empty", "2d", "nan"])])
        elif op < 0.65:
            ops.append(["rank", r.choice(RANK_PATHS), r.choice(["missing", "scalar", "strings", "empty", "nan"])])
        elif op < 0.75:
            ops.append(["truncate", r.choice(["log.h5", "ranks/rank00000.h5"]), r.choice([0.0, 0.3, 0.8])])
        elif op < 0.82:
            ops.append(["remove", r.choice(["log.h5", "ranks", "ranks/rank00000.h5"])])
        else:
            ops.append(["manifest", r.choice(MANIFESTS)])
    return {"rundir": ops}


def _replace(f, key, how):
    parent = key.rsplit("/", 1)[0] if "/" in key else ""
    if parent and parent in f and not isinstance(f[parent], h5py.Group):
        return                  # an earlier change made the group a dataset
    old = f[key] if key in f else None
    n = len(old) if isinstance(old, h5py.Dataset) and old.shape else 3
    if key in f:
        del f[key]
    if how == "missing":
        return
    data = {"scalar": lambda: np.float64(1.0), "strings": lambda: np.asarray(["x"] * n, dtype="S1"),
            "empty": lambda: np.zeros(0), "2d": lambda: np.ones((n, 2)), "nan": lambda: np.full(n, np.nan)}[how]()
    f.create_dataset(key, data=data)


def write_rundir_spec(path, baseline, spec) -> None:
    shutil.copytree(baseline, path)
    # edits inside the files first: a file truncated or removed can no longer be edited
    for op in sorted(spec["rundir"], key=lambda op: op[0] in ("truncate", "remove")):
        if op[0] == "attr":
            with h5py.File(os.path.join(path, "log.h5"), "a") as f:
                if op[2][0] == "missing":
                    f.attrs.pop(op[1], None)
                else:
                    f.attrs[op[1]] = _attr(*op[2])
        elif op[0] in ("dataset", "rank"):
            name = "log.h5" if op[0] == "dataset" else "ranks/rank00000.h5"
            if os.path.exists(os.path.join(path, name)):
                with h5py.File(os.path.join(path, name), "a") as f:
                    _replace(f, op[1], op[2])
        elif op[0] == "truncate":
            if os.path.isfile(os.path.join(path, op[1])):
                _truncate(os.path.join(path, op[1]), op[2])
        elif op[0] == "remove":
            target = os.path.join(path, op[1])
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
        elif op[0] == "manifest":
            with open(os.path.join(path, "manifest.json"), "wb") as f:
                f.write(op[1].encode("latin-1"))
