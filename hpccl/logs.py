"""HDF5 run logs: a writer that never leaves a torn file, and a reader.

A run directory holds ``log.h5`` (rank 0: metadata, per-epoch metrics, per-task evaluation)
and ``ranks/rankNNNNN.h5`` (every rank: its iteration timers and its own facts). See
README "Log schema".

The writer keeps the (small) log in memory and each ``flush()`` writes it whole to a temporary
file that is renamed over the old one. A rename is atomic, so a run killed at any moment
leaves the last flushed log readable; that matters more than the few milliseconds a rewrite
costs once an epoch.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

SCHEMA_VERSION = 1


def _as_array(values):
    arr = np.asarray(values)
    if arr.dtype.kind in "US":
        return arr.astype(h5py.string_dtype())
    if arr.dtype == object:
        return np.asarray([str(v) for v in values], dtype=h5py.string_dtype())
    return arr


_WHOLE_ARRAYS = ("timers", "eval")


class H5Log:
    def __init__(self, path: str, kind: str, attrs: dict | None = None):
        self.path = path
        self.attrs = {"schema_version": SCHEMA_VERSION, "kind": kind, "status": "running"}
        self.attrs.update(attrs or {})
        self.group_attrs: dict[str, dict] = {}
        self.series: dict[str, list] = {}      # appended one record at a time
        self.arrays: dict[str, np.ndarray] = {}  # replaced whole

    def set_attrs(self, group: str = "/", **attrs):
        if group == "/":
            self.attrs.update(attrs)
        else:
            self.group_attrs.setdefault(group, {}).update(attrs)

    def append(self, group: str, **record):
        """Add one row to a table (a group of equally long columns)."""
        for key, value in record.items():
            self.series.setdefault(f"{group}/{key}", []).append(value)

    def put(self, name: str, array):
        self.arrays[name] = np.asarray(array)

    def flush(self):
        tmp = f"{self.path}.tmp"
        with h5py.File(tmp, "w") as f:
            for key, value in self.attrs.items():
                f.attrs[key] = _attr(value)
            for name, values in self.series.items():
                f.create_dataset(name, data=_as_array(values))
            for name, array in self.arrays.items():
                f.create_dataset(name, data=_as_array(array))
            for group, attrs in self.group_attrs.items():
                g = f.require_group(group)
                for key, value in attrs.items():
                    g.attrs[key] = _attr(value)
        os.replace(tmp, self.path)

    @classmethod
    def reopen(cls, path: str) -> "H5Log":
        """Continue a log written by an earlier process (resume): everything back in memory."""
        data = read_h5(path)
        log = cls(path, data["attrs"]["kind"])
        log.attrs.update(data.pop("attrs"))
        log.group_attrs = data.pop("group_attrs", {})
        for name, value in data.items():
            # Tables (epochs, tasks, resumes, checkpoints, ...) grow by rows; timers and the
            # accuracy matrices are replaced whole.
            if value.ndim == 1 and "/" in name and name.split("/")[0] not in _WHOLE_ARRAYS:
                log.series[name] = list(value)
            else:
                log.arrays[name] = value
        return log

    def close(self, status: str = "complete"):
        self.attrs["status"] = status
        self.flush()


def start_run_dir(cfg, run_dir: str, world) -> None:
    """Rank 0 creates ``RUN/ranks/`` and writes the resolved ``config.yaml``; every rank waits
    for it, so no rank writes its log into a directory that does not exist yet."""
    if world.is_root:
        from hpccl.config import dump_job
        os.makedirs(os.path.join(run_dir, "ranks"), exist_ok=True)
        dump_job(cfg, os.path.join(run_dir, "config.yaml"))
    world.barrier()


def rank_log(run_dir: str, world, **attrs) -> H5Log:
    """``ranks/rankNNNNN.h5`` of this rank, with the facts every job kind records."""
    return H5Log(os.path.join(run_dir, "ranks", f"rank{world.rank:05d}.h5"), "rank", {
        "rank": world.rank, "local_rank": world.local_rank, "node_index": world.node_index,
        "hostname": world.hostname, "device": str(world.device), **attrs})


def run_log(run_dir: str, cfg, world, argv, hostnames, **attrs) -> H5Log:
    """``log.h5`` (rank 0 only) with the run metadata every job kind records; ``attrs`` add
    kind-specific facts or override a default (e.g. ``backend``)."""
    import datetime as _dt

    import yaml

    from hpccl.info import versions
    return H5Log(os.path.join(run_dir, "log.h5"), "run", {
        "job_kind": cfg.kind, "name": cfg.name,
        "config_yaml": yaml.safe_dump(cfg.to_dict(), sort_keys=False),
        "command_line": " ".join(argv), "world_size": world.size, "num_nodes": world.num_nodes,
        "hostnames": hostnames, "backend": cfg.runtime.backend, "device": str(world.device),
        "start_time": _dt.datetime.now().isoformat(timespec="seconds"), "versions": versions(),
        **attrs})


def _attr(value):
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    if value is None:
        return "null"
    return value


def read_h5(path: str) -> dict:
    """The whole file as nested dicts: {"attrs": {...}, "<dataset path>": array, ...}."""
    out = {"attrs": {}}

    def decode(v):
        if isinstance(v, bytes):
            return v.decode()
        return v

    with h5py.File(path, "r") as f:
        out["attrs"] = {k: decode(v) for k, v in f.attrs.items()}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                data = obj[...]
                if obj.dtype.kind == "O" or h5py.check_string_dtype(obj.dtype):
                    data = np.array([decode(x) for x in data.ravel()], dtype=object).reshape(data.shape)
                out[name] = data
            elif obj.attrs:
                out.setdefault("group_attrs", {})[name] = {k: decode(v) for k, v in obj.attrs.items()}
        f.visititems(visit)
    return out
