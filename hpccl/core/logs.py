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


_MIN_STRING_BYTES = 32     # narrowest string column: short names and notes never widen it


def _string_bytes(width: int) -> np.dtype:
    """Fixed-length UTF-8 strings of at least ``width`` bytes (rounded up to a power of two,
    so a column that grows widens rarely). Never variable-length: HDF5 keeps those in a
    global heap that SWMR's ordered metadata writes do not cover, and a kill in the middle
    of a flush left "bad heap index" errors on reading (1 kill in 12 in the stress test)."""
    width = max(_MIN_STRING_BYTES, width)
    return h5py.string_dtype("utf-8", length=1 << (width - 1).bit_length())


def _is_string(dtype) -> bool:
    return h5py.check_string_dtype(dtype) is not None or np.dtype(dtype).kind in "USO"


def _as_array(values):
    arr = np.asarray(values)
    if arr.dtype.kind in "USO":
        encoded = [(v.decode() if isinstance(v, bytes) else str(v)).encode() for v in np.ravel(arr)]
        width = max((len(b) for b in encoded), default=0)
        return np.array(encoded, dtype=f"S{max(1, width)}").reshape(arr.shape)
    return arr


def _storage_dtype(arr: np.ndarray):
    if _is_string(arr.dtype):
        return _string_bytes(arr.dtype.itemsize)
    if arr.dtype.kind in "iu":
        return np.int64
    if arr.dtype.kind == "f":
        return np.float64
    return arr.dtype


def _holds(ds, array) -> bool:
    """Whether ``ds`` can store ``array``'s values without losing any."""
    if _is_string(array.dtype):
        info = h5py.check_string_dtype(ds.dtype)
        return info is not None and info.length is not None and info.length >= array.dtype.itemsize
    if ds.dtype.kind in "iub" and array.dtype.kind == "f":
        return False          # an integer column that receives a float (NaN)
    return not _is_string(ds.dtype)


def _fits(ds, array) -> bool:
    """Whether ``array`` can overwrite ``ds`` in place: same shape, a type that holds it.
    Never a resize: under SWMR only a 1-D column that grows is safe to reshape; a kill in
    the middle of shrinking a 2-D array left an object header that SWMR readers retry for
    ever (1 kill in 155 in the stress test). A new shape makes a new dataset."""
    same_type = _holds(ds, array) and (_is_string(array.dtype) or ds.dtype == np.dtype(_storage_dtype(array)))
    return same_type and ds.shape == array.shape


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
            _set_attr(ds, ROLE, "row")
        elif not _holds(ds, values):
            ds = self._widen(name, ds, values)
        n = ds.shape[0]
        _maybe_inject_kill()
        ds.resize((n + len(values),))
        ds[n:] = values.astype(ds.dtype)
        self._lengths[name] = n + len(values)

    def _widen(self, name, ds, values):
        """A column whose type cannot hold the new rows (a float in an integer column, a
        longer string): a wider copy replaces it."""
        old = ds[...]
        self._supersede(name)
        dtype = _string_bytes(values.dtype.itemsize) if _is_string(values.dtype) else np.float64
        new = self._file.create_dataset(name, data=old.astype(dtype), maxshape=(None,),
                                        chunks=(_ROW_CHUNK,))
        _set_attr(new, ROLE, "row")
        return new

    def _replace(self, name, array):
        ds = self._file.get(name)
        if ds is not None:
            if _fits(ds, array):
                ds[...] = array.astype(ds.dtype)
                return
            self._supersede(name)
        dtype = _storage_dtype(array)
        ds = self._file.create_dataset(name, data=array.astype(dtype), dtype=dtype)
        _set_attr(ds, ROLE, "whole")

    def _supersede(self, name):
        """Set a dataset aside rather than delete it: space freed under SWMR may still be
        mapped by a reader. ``read_h5`` skips what is set aside."""
        i = 1
        while f"{name}.superseded{i}" in self._file:
            i += 1
        self._file.move(name, f"{name}.superseded{i}")
        _set_attr(self._file[f"{name}.superseded{i}"], ROLE, "superseded")

    def _write_attrs(self):
        targets = [("/", self.attrs)] + sorted(self.group_attrs.items())
        for group, attrs in targets:
            obj = self._file.require_group(group) if group != "/" else self._file
            for key, value in attrs.items():
                stored = _attr(value)
                seen = f"{group}:{key}"
                if self._written_attrs.get(seen) != repr(stored):
                    _set_attr(obj, key, stored)
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

    from hpccl.core.info import versions
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


def _set_attr(obj, key: str, value):
    """Strings as fixed-length UTF-8, like string columns (h5py's default, variable-length,
    lives in the global heap that SWMR does not protect)."""
    if isinstance(value, str):
        encoded = value.encode()
        obj.attrs.create(key, np.bytes_(encoded), dtype=h5py.string_dtype("utf-8", max(1, len(encoded))))
    else:
        obj.attrs[key] = value


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
    # A writer killed between creating a column and labelling it leaves an empty, unlabelled
    # dataset beside its labelled siblings: it is a column of their table.
    row_groups = {n.rsplit("/", 1)[0] for n, r in found_roles.items() if r == "row"}
    for name, value in out.items():
        if name not in found_roles and "/" in name and getattr(value, "ndim", 0) == 1 \
                and name.rsplit("/", 1)[0] in row_groups:
            found_roles[name] = "row"
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
