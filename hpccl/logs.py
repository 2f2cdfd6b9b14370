"""HDF5 run logs: an appending writer that a crash at any moment leaves readable, and a reader.

A run directory holds ``log.h5`` (rank 0: metadata, per-epoch metrics, per-task evaluation)
and ``ranks/rankNNNNN.h5`` (every rank: its iteration timers and its own facts). See
README "Log schema".

The writer keeps its file open in HDF5's single-writer/multiple-reader (SWMR) mode and, on
each ``flush()``, appends the rows added since the last one to resizable datasets. Nothing is
rewritten: at 1024 ranks a whole-file rewrite per epoch per rank is a metadata storm on a
parallel file system, and the timers grow with every iteration. SWMR orders HDF5's metadata
writes so that the file on disk is consistent at every moment, so a rank SIGKILLed in the
middle of a flush leaves a log that opens (in SWMR read mode, which ``read_h5`` falls back
to), with status ``running`` and at worst a torn last row, which ``read_h5`` drops. Plain HDF5
gives no such promise: a stress test here tore one file in 150 kills.

Datasets carry their role in an ``hpccl`` attribute: ``row`` (a column of a table, appended)
or ``whole`` (an array replaced whole, e.g. the accuracy matrix).
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

SCHEMA_VERSION = 1
ROLE = "hpccl"            # dataset attribute: "row" (table column) or "whole" (replaced array)
_ROW_CHUNK = 1024         # rows per chunk of a table column (8 KiB of float64)


def _as_array(values):
    arr = np.asarray(values)
    if arr.dtype.kind in "US":
        return arr.astype(h5py.string_dtype())
    if arr.dtype == object:
        return np.asarray([str(v) for v in np.ravel(values)], dtype=h5py.string_dtype()).reshape(arr.shape)
    return arr


def _storage_dtype(arr: np.ndarray):
    if h5py.check_string_dtype(arr.dtype) is not None:
        return h5py.string_dtype()
    if arr.dtype.kind in "iu":
        return np.int64
    if arr.dtype.kind == "f":
        return np.float64
    return arr.dtype


def _fits(ds, array) -> bool:
    """Whether ``array`` can be written into ``ds`` in place (resized if need be)."""
    same_type = (h5py.check_string_dtype(ds.dtype) is not None) == (h5py.check_string_dtype(array.dtype) is not None) \
        and (ds.dtype.kind == "O" or ds.dtype == np.dtype(_storage_dtype(array)))
    resizable = ds.maxshape is not None and all(m is None for m in ds.maxshape)
    return same_type and ds.ndim == array.ndim and (ds.shape == array.shape or resizable)


def _open_for_append(path: str) -> h5py.File:
    f = h5py.File(path, "r+", libver="latest")
    f.swmr_mode = True
    return f


class H5Log:
    """One log file, appended to in place. ``append``/``extend`` add table rows, ``put``
    replaces an array, ``attrs``/``set_attrs`` set attributes; all reach the file at the next
    ``flush()``, which the caller makes where a crash must not lose what came before."""

    def __init__(self, path: str, kind: str, attrs: dict | None = None):
        self.path = path
        self.attrs = {"schema_version": SCHEMA_VERSION, "kind": kind, "status": "running"}
        self.attrs.update(attrs or {})
        self.group_attrs: dict[str, dict] = {}
        self._rows: dict[str, list] = {}         # table rows not yet in the file, per column
        self._lengths: dict[str, int] = {}       # rows in the file, per column
        self._arrays: dict[str, np.ndarray] = {}  # arrays to replace at the next flush
        self._written_attrs: dict[str, str] = {}
        # libver "latest" is what SWMR needs; attributes are written before SWMR starts.
        self._file = h5py.File(path, "w", libver="latest")
        self._write_attrs()
        self._file.swmr_mode = True

    # -- what a writer adds -------------------------------------------------------------------
    def set_attrs(self, group: str = "/", **attrs):
        if group == "/":
            self.attrs.update(attrs)
        else:
            self.group_attrs.setdefault(group, {}).update(attrs)

    def append(self, group: str, **record):
        """Add one row to a table (a group of equally long columns)."""
        for key, value in record.items():
            self._rows.setdefault(f"{group}/{key}", []).append(value)

    def extend(self, group: str, **columns):
        """Add many rows to a table: every column a sequence of the same length."""
        for key, values in columns.items():
            self._rows.setdefault(f"{group}/{key}", []).extend(list(values))

    def put(self, name: str, array):
        self._arrays[name] = np.asarray(array)

    # -- what is in the file ------------------------------------------------------------------
    def lengths(self) -> dict[str, int]:
        """Rows per table column, counting rows not flushed yet."""
        names = set(self._lengths) | set(self._rows)
        return {n: self._lengths.get(n, 0) + len(self._rows.get(n, ())) for n in names}

    def read(self, name: str) -> np.ndarray:
        """A dataset as written so far (call ``flush`` first for rows just added)."""
        return self._file[name][...]

    # -- writing ------------------------------------------------------------------------------
    def flush(self):
        for name, values in self._rows.items():
            if values:
                self._append_rows(name, _as_array(values))
        self._rows = {}
        for name, array in self._arrays.items():
            self._replace(name, _as_array(array))
        self._arrays = {}
        self._write_attrs()
        self._file.flush()

    def _append_rows(self, name, values):
        ds = self._file.get(name)
        if ds is None:
            ds = self._file.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(_ROW_CHUNK,),
                                           dtype=_storage_dtype(values))
            ds.attrs[ROLE] = "row"
        elif ds.dtype.kind in "iub" and values.dtype.kind == "f":
            ds = self._widen(name, ds)      # an integer column that receives a float (NaN)
        n = ds.shape[0]
        _maybe_inject_kill()
        ds.resize((n + len(values),))
        ds[n:] = values
        self._lengths[name] = n + len(values)

    def _widen(self, name, ds):
        old = ds[...]
        self._supersede(name)
        new = self._file.create_dataset(name, data=old.astype(np.float64), maxshape=(None,),
                                        chunks=(_ROW_CHUNK,))
        new.attrs[ROLE] = "row"
        return new

    def _replace(self, name, array):
        ds = self._file.get(name)
        if ds is not None:
            if _fits(ds, array):
                if ds.shape != array.shape:
                    ds.resize(array.shape)
                ds[...] = array
                return
            self._supersede(name)
        kwargs = {} if array.ndim == 0 else {"maxshape": (None,) * array.ndim,
                                             "chunks": tuple(max(1, s) for s in array.shape)}
        ds = self._file.create_dataset(name, data=array, dtype=_storage_dtype(array), **kwargs)
        ds.attrs[ROLE] = "whole"

    def _supersede(self, name):
        """Set a dataset aside rather than delete it: space freed under SWMR may still be
        mapped by a reader. ``read_h5`` skips what is set aside."""
        i = 1
        while f"{name}.superseded{i}" in self._file:
            i += 1
        self._file.move(name, f"{name}.superseded{i}")
        self._file[f"{name}.superseded{i}"].attrs[ROLE] = "superseded"

    def _write_attrs(self):
        targets = [("/", self.attrs)] + sorted(self.group_attrs.items())
        for group, attrs in targets:
            obj = self._file.require_group(group) if group != "/" else self._file
            for key, value in attrs.items():
                stored = _attr(value)
                seen = f"{group}:{key}"
                if self._written_attrs.get(seen) != repr(stored):
                    obj.attrs[key] = stored
                    self._written_attrs[seen] = repr(stored)

    def close(self, status: str = "complete"):
        self.attrs["status"] = status
        self.flush()
        self._file.close()

    # -- resume -------------------------------------------------------------------------------
    @classmethod
    def reopen(cls, path: str, keep_rows: dict | None = None) -> "H5Log":
        """Continue a log written by an earlier process (resume). ``keep_rows``: the column
        lengths to keep (rows logged after the checkpoint the run resumes from are dropped).

        A writer that died leaves HDF5's "open for writing" flag set, and only SWMR readers
        may open such a file. So the log is copied once into a fresh file, which then replaces
        it; a resume is rare enough for one copy."""
        data = read_h5(path, roles=True)
        roles = data.pop("roles")
        attrs = data.pop("attrs")
        group_attrs = data.pop("group_attrs", {})
        tmp = f"{path}.reopen"
        log = cls(tmp, attrs["kind"])
        log.attrs.update(attrs)
        log.group_attrs = group_attrs
        for name, value in data.items():
            if roles.get(name, _legacy_role(name, value)) == "row":
                keep = (keep_rows or {}).get(name, len(value))
                log._rows[name] = list(value[:keep])
            else:       # read_h5 leaves superseded datasets out
                log._arrays[name] = value
        log.flush()
        log._file.close()
        os.replace(tmp, path)
        log.path = path
        log._file = _open_for_append(path)
        return log


def _legacy_role(name, value):
    """Logs written before datasets carried their role (rewritten whole on every flush)."""
    return "row" if value.ndim == 1 and name.split("/")[0] not in ("timers", "eval") else "whole"


_KILL_AFTER = {"left": None}


def _maybe_inject_kill():
    """Test hook: HPCCL_INJECT_KILL_IN_LOG_WRITE=N SIGKILLs this process just before its Nth
    column write, i.e. in the middle of a flush, the worst moment for a log."""
    if _KILL_AFTER["left"] is None:
        _KILL_AFTER["left"] = int(os.environ.get("HPCCL_INJECT_KILL_IN_LOG_WRITE", "0") or 0)
    if _KILL_AFTER["left"] > 0:
        _KILL_AFTER["left"] -= 1
        if _KILL_AFTER["left"] == 0:
            import signal
            os.kill(os.getpid(), signal.SIGKILL)


def start_run_dir(cfg, run_dir: str, world) -> None:
    """Rank 0 creates ``RUN/ranks/`` and writes the resolved ``config.yaml``; every rank waits
    for it, so no rank writes its log into a directory that does not exist yet."""
    if world.is_root:
        import yaml
        os.makedirs(os.path.join(run_dir, "ranks"), exist_ok=True)
        with open(os.path.join(run_dir, "config.yaml"), "w") as f:   # what hpccl.config.dump_job writes
            yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
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


def open_for_reading(path: str) -> h5py.File:
    """A log, also one whose writer is still running or died (only SWMR readers may open it)."""
    try:
        return h5py.File(path, "r")
    except OSError:
        return h5py.File(path, "r", swmr=True)


def read_h5(path: str, roles: bool = False) -> dict:
    """The whole file as nested dicts: {"attrs": {...}, "<dataset path>": array, ...}. The
    columns of a table are cut to the shortest: a writer killed mid-flush may have written
    part of its last row. ``roles``: also {"roles": {dataset: "row" | "whole"}}."""
    out = {"attrs": {}}
    found_roles = {}

    def decode(v):
        if isinstance(v, bytes):
            return v.decode()
        return v

    with open_for_reading(path) as f:
        out["attrs"] = {k: decode(v) for k, v in f.attrs.items()}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                role = decode(obj.attrs.get(ROLE, ""))
                if role == "superseded":
                    return
                if role:
                    found_roles[name] = role
                data = obj[...]
                if obj.dtype.kind == "O" or h5py.check_string_dtype(obj.dtype):
                    data = np.array([decode(x) for x in data.ravel()], dtype=object).reshape(data.shape)
                out[name] = data
            elif obj.attrs:
                out.setdefault("group_attrs", {})[name] = {k: decode(v) for k, v in obj.attrs.items()}
        f.visititems(visit)
    shortest: dict[str, int] = {}
    for name, role in found_roles.items():
        if role != "row":
            continue
        group = name.rsplit("/", 1)[0]
        shortest[group] = min(shortest.get(group, len(out[name])), len(out[name]))
    for name, role in found_roles.items():
        if role == "row":
            out[name] = out[name][:shortest[name.rsplit("/", 1)[0]]]
    if roles:
        out["roles"] = found_roles
    return out
