"""HDF5 run logs: an appending writer that a crash at any moment leaves readable, and a reader.

A run directory holds ``log.h5`` (rank 0: metadata, per-epoch metrics, per-task evaluation)
and ``ranks/rankNNNNN.h5`` (every rank: its iteration timers and its own facts). See
docs/run-directory.md.

The writer keeps its file open in HDF5's single-writer/multiple-reader (SWMR) mode. SWMR
orders HDF5's metadata writes so that the file on disk is consistent at every moment, but
only for what SWMR allows a writer to do: append to existing chunked datasets. Creating a
dataset, resizing an array in other ways or writing an attribute under SWMR has no such
promise; stress tests here found a kill in the middle of each leaving a file that would not
read, or one whose readers retried a torn object header for ever. So a flush takes one of
two paths:

* **append** (the common case, O(new rows)): rows go to existing columns, and changed
  attributes become rows of an attribute journal (``_attrs/{object,key,value}``), which
  ``read_h5`` folds over the stored attributes;
* **rewrite** (a new column, a column that must widen, an array replaced whole, the close):
  the whole log goes to ``PATH.new``, which atomically replaces ``PATH``. A kill during the
  rewrite leaves the previous file untouched. Structure changes are rare (the first flush of
  a table, once per task for the evaluation matrix), so rewrites stay few; the per-iteration
  timers of rank logs are only ever appended.

A kill in the middle of an append leaves status ``running`` and at worst a torn last row,
which ``read_h5`` drops.

Datasets carry their role in an ``hpccl`` attribute: ``row`` (a column of a table, appended),
``whole`` (an array replaced whole, e.g. the accuracy matrix) or ``journal``.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os

import h5py
import numpy as np

from hpccl.core import env

SCHEMA_VERSION = 1
ROLE = "hpccl"            # dataset attribute: "row", "whole" or "journal"
JOURNAL = "_attrs"        # group of the attribute journal
_JOURNAL_BYTES = {"object": 256, "key": 256, "value": 1024}   # longer: a rewrite instead
_ROW_CHUNK = 1024         # rows per chunk of a table column (8 KiB of float64)
_MIN_STRING_BYTES = 32    # narrowest string column: short names and notes never widen it
_READ_ATTEMPTS = 30       # SWMR reader retries of a metadata checksum: ~1 s of back-off in all


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
    """Whether column ``ds`` can take ``array``'s values without losing any."""
    if _is_string(array.dtype):
        info = h5py.check_string_dtype(ds.dtype)
        return info is not None and info.length is not None and info.length >= array.dtype.itemsize
    if ds.dtype.kind in "iub" and array.dtype.kind == "f":
        return False          # an integer column that receives a float (NaN)
    return not _is_string(ds.dtype)


def _joined(old, new):
    """A column's stored rows followed by new ones, in a type that holds both."""
    if old is None or len(old) == 0:
        return new
    if _is_string(old.dtype) != _is_string(new.dtype):
        raise TypeError(f"a column mixes strings and numbers ({old.dtype} then {new.dtype})")
    return np.concatenate([old, new])


class H5Log:
    """One log file. ``append``/``extend`` add table rows, ``put`` replaces an array,
    ``set_attrs`` sets attributes; all reach the file at the next ``flush()``, which the
    caller makes where a crash must not lose what came before."""

    def __init__(self, path: str, kind: str, attrs: dict | None = None):
        self._start(path, {"schema_version": SCHEMA_VERSION, "kind": kind, "status": "running",
                           **(attrs or {})})
        self._rewrite({}, {})

    def _start(self, path, attrs):
        self.path = path
        self.attrs = dict(attrs)
        self.group_attrs: dict[str, dict] = {}
        self._rows: dict[str, list] = {}          # table rows not yet in the file, per column
        self._arrays: dict[str, np.ndarray] = {}  # arrays to replace at the next flush
        self._lengths: dict[str, int] = {}        # rows in the file, per column
        self._written_attrs: dict[tuple, str] = {}  # (object, key) -> what the file holds
        self._file = None
        # fn(rows, first, arrays) after each flush: the rows and arrays it wrote, and each
        # column's index of its first new row (hpccl.core.tensorboard mirrors the log so).
        self.observers: list = []

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
    def flush(self, rewrite: bool = False):
        rows = {name: _as_array(values) for name, values in self._rows.items() if values}
        arrays = {name: _as_array(array) for name, array in self._arrays.items()}
        changed = self._changed_attrs()
        first = {name: self._lengths.get(name, 0) for name in rows}
        entries = [_journal_entry(obj, key, value) for obj, key, value in changed]
        appendable = all(name in self._lengths and _holds(self._file[name], values)
                         for name, values in rows.items())
        if rewrite or arrays or not appendable or None in entries:
            self._rewrite(rows, arrays)
        else:
            for name, values in rows.items():
                self._append_rows(self._file[name], values)
            if entries:
                for i, column in enumerate(("object", "key", "value")):   # value last: a torn
                    self._append_rows(self._file[f"{JOURNAL}/{column}"],    # entry has none
                                      np.array([e[i] for e in entries]))
                self._written_attrs.update({(o, k): repr(v) for o, k, v in changed})
            self._file.flush()
        self._rows, self._arrays = {}, {}
        for observe in self.observers:
            observe(rows, first, arrays)

    def _append_rows(self, ds, values):
        n = ds.shape[0]
        _maybe_inject_kill()
        ds.resize((n + len(values),))
        ds[n:] = values.astype(ds.dtype)
        self._lengths[ds.name.lstrip("/")] = n + len(values)

    def _all_attrs(self):
        yield from (("/", key, _attr(value)) for key, value in self.attrs.items())
        for group, attrs in sorted(self.group_attrs.items()):
            yield from ((group, key, _attr(value)) for key, value in attrs.items())

    def _changed_attrs(self):
        return [(obj, key, value) for obj, key, value in self._all_attrs()
                if self._written_attrs.get((obj, key)) != repr(value)]

    def _stored(self) -> dict:
        """Every table column and array in the file: {name: (role, values)}."""
        found = {}
        if self._file is None:
            return found

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                role = _decode(obj.attrs.get(ROLE, ""))
                if role in ("row", "whole"):
                    found[name] = (role, obj[...])
        self._file.visititems(visit)
        return found

    def _rewrite(self, rows: dict, arrays: dict):
        """The whole log, with ``rows`` appended and ``arrays`` replaced, into a fresh file that
        then replaces the old one in one rename; the writer continues on the fresh file."""
        contents = self._stored()
        for name, values in rows.items():
            contents[name] = ("row", _joined(contents.get(name, (None, None))[1], values))
        contents.update({name: ("whole", array) for name, array in arrays.items()})
        tmp = f"{self.path}.new"
        f = h5py.File(tmp, "w", libver="latest")
        for obj, key, value in self._all_attrs():
            _set_attr(f.require_group(obj) if obj != "/" else f, key, value)
        for name, (role, data) in sorted(contents.items()):
            dtype = _storage_dtype(data)
            if role == "row":
                _maybe_inject_kill()
                ds = f.create_dataset(name, data=data.astype(dtype), dtype=dtype, maxshape=(None,),
                                      chunks=(_ROW_CHUNK,))
            else:
                ds = f.create_dataset(name, data=data.astype(dtype), dtype=dtype)
            _set_attr(ds, ROLE, role)
        for column, width in _JOURNAL_BYTES.items():
            ds = f.create_dataset(f"{JOURNAL}/{column}", shape=(0,), maxshape=(None,), chunks=(64,),
                                  dtype=h5py.string_dtype("utf-8", length=width))
            _set_attr(ds, ROLE, "journal")
        f.swmr_mode = True
        f.flush()
        _fsync(tmp)            # on disk before it replaces the old log: a node crash keeps one
        os.replace(tmp, self.path)
        if self._file is not None:
            self._file.close()
        self._file = f
        self._lengths = {name: len(data) for name, (role, data) in contents.items() if role == "row"}
        self._written_attrs = {(o, k): repr(v) for o, k, v in self._all_attrs()}

    def close(self, status: str = "complete"):
        """Mark the log ``status``; the final rewrite folds the attribute journal into plain
        attributes, so any HDF5 reader sees them."""
        self.attrs["status"] = status
        self.flush(rewrite=True)
        self._file.close()

    # -- resume -------------------------------------------------------------------------------
    @classmethod
    def reopen(cls, path: str, keep_rows: dict | None = None) -> "H5Log":
        """Continue a log written by an earlier process (resume). ``keep_rows``: the column
        lengths to keep (rows logged after the checkpoint the run resumes from are dropped).
        A writer that died leaves HDF5's "open for writing" flag set, so the log is rewritten
        into a fresh file (a resume is rare enough for one copy)."""
        data = read_h5(path, roles=True)
        roles = data.pop("roles")
        log = cls.__new__(cls)
        log._start(path, data.pop("attrs"))
        log.group_attrs = data.pop("group_attrs", {})
        rows, arrays = {}, {}
        for name, value in data.items():
            if roles.get(name, _legacy_role(name, value)) == "row":
                keep = (keep_rows or {}).get(name, len(value))
                rows[name] = _as_array(value[:keep])
            else:
                arrays[name] = _as_array(value)
        log._rewrite(rows, arrays)
        return log


def _legacy_role(name, value):
    """Logs written before datasets carried their role (rewritten whole on every flush)."""
    return "row" if value.ndim == 1 and name.split("/")[0] not in ("timers", "eval") else "whole"


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_KILL_AFTER = {"left": None}


def _maybe_inject_kill():
    """Test hook: HPCCL_INJECT_KILL_IN_LOG_WRITE=N SIGKILLs this process just before its Nth
    column write, i.e. in the middle of a flush, the worst moment for a log."""
    if _KILL_AFTER["left"] is None:
        _KILL_AFTER["left"] = env.read("HPCCL_INJECT_KILL_IN_LOG_WRITE")
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


def _journal_entry(obj: str, key: str, value):
    """An attribute change as a journal row (object, key, JSON value), or None when it does
    not fit the journal's columns (the flush then rewrites the log instead)."""
    if isinstance(value, np.generic):
        value = value.item()
    try:
        encoded = json.dumps(value)
    except TypeError:
        return None
    entry = tuple(s.encode() for s in (obj, key, encoded))
    if any(len(e) > _JOURNAL_BYTES[c] for e, c in zip(entry, ("object", "key", "value"))):
        return None
    return entry


def _decode(v):
    return v.decode() if isinstance(v, bytes) else v


@functools.lru_cache(maxsize=1)
def _read_attempts_setter():
    """HDF5's H5Pset_metadata_read_attempts from the library h5py runs on (h5py does not wrap
    it), or None where it cannot be found (not Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            libs = {line.split()[-1] for line in maps if "libhdf5" in line and "_hl" not in line}
    except OSError:
        return None
    for lib in sorted(libs):
        try:
            fn = ctypes.CDLL(lib).H5Pset_metadata_read_attempts
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int64, ctypes.c_uint], ctypes.c_int
        return fn
    return None


def open_for_reading(path: str) -> h5py.File:
    """A log, also one whose writer is still running or died (only SWMR readers may open it).
    A SWMR reader retries a metadata checksum that fails, since the writer may be in the
    middle of writing it; HDF5's default is 100 retries with back-off growing to 36 s, over
    half an hour on a damaged file. Here the retries stop after about a second, and a damaged
    log raises instead of hanging ``hpccl analyze``."""
    try:
        return h5py.File(path, "r")
    except OSError:
        pass
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    setter = _read_attempts_setter()
    if setter is not None:
        setter(fapl.id, _READ_ATTEMPTS)
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
    return h5py.File(fid)


def status_of(log_path: str) -> str:
    """A run log's status attribute ('complete', 'running', ...; 'unreadable' when h5py cannot
    open the file)."""
    try:
        with open_for_reading(log_path) as f:
            return status_in(f)
    except OSError:
        return "unreadable"


def status_in(f: h5py.File) -> str:
    """The status of an open log: its attribute, or the attribute journal's last change of it
    (a resumed run journals 'running' over the 'preempted' its file was closed with)."""
    status = str(_decode(f.attrs.get("status", "unknown")))
    if JOURNAL not in f:
        return status
    columns = [f[f"{JOURNAL}/{c}"] for c in ("object", "key", "value")]
    n = min(len(c) for c in columns)
    if n == 0:
        return status
    objects, keys = columns[0][:n], columns[1][:n]
    hits = np.nonzero((keys == b"status") & (objects == b"/"))[0]
    return str(json.loads(_decode(columns[2][hits[-1]]))) if len(hits) else status


def run_status(run_dir: str) -> str | None:
    """The status in ``run_dir``'s log.h5, None without one."""
    log = os.path.join(run_dir, "log.h5")
    return status_of(log) if os.path.exists(log) else None


def read_h5(path: str, roles: bool = False) -> dict:
    """The whole file as nested dicts: {"attrs": {...}, "<dataset path>": array, ...}, with
    the attribute journal folded into "attrs" and "group_attrs". The columns of a table are
    cut to the shortest: a writer killed mid-flush may have written part of its last row.
    ``roles``: also {"roles": {dataset: "row" | "whole"}}. A file that is not a readable log
    (truncated, overwritten; h5py raises OSError, RuntimeError or KeyError for damage) raises
    CorruptFileError naming it."""
    from hpccl.core.errors import CorruptFileError
    try:
        return _read_h5(path, roles)
    except FileNotFoundError:
        raise                   # not there (yet): not damage; callers polling a run wait for it
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CorruptFileError(f"{path}: not a readable HDF5 log ({e}). It was truncated or "
                               "overwritten (a full disk, a copy cut short); nothing was changed.") from None


def check_structure(path: str, kind: str | None = None) -> None:
    """A cheap look at a log that ``read_h5`` would read whole: the file opens, every object
    header and attribute reads, and every dataset's last element reads (through its chunk
    index, to the file's far end), and its ``kind`` attribute is ``kind``. Milliseconds for a
    rank log of any length; damage it misses (the chunk index in the middle) still meets
    ``read_h5``'s named error."""
    from hpccl.core.errors import CorruptFileError

    def visit(name, obj):
        dict(obj.attrs)
        if isinstance(obj, h5py.Dataset) and obj.shape and obj.shape[0]:
            obj[-1]
    try:
        with open_for_reading(path) as f:
            found = _decode(dict(f.attrs).get("kind"))
            f.visititems(visit)
    except FileNotFoundError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CorruptFileError(f"{path}: not a readable HDF5 log ({e}). It was truncated or "
                               "overwritten (a full disk, a copy cut short); nothing was changed.") from None
    if kind is not None and found != kind:
        raise CorruptFileError(not_a_log(path, kind, found))


def not_a_log(path: str, kind: str, found) -> str:
    return (f"{path}: an HDF5 file but not an hpccl {kind} log (its attribute 'kind' is "
            f"{'missing' if found is None else repr(found)}, expected {kind!r}): overwritten or "
            "replaced; nothing was changed.")


def check_reopen(run_dir: str, ranks: int) -> None:
    """Before a resume is launched: the logs ``RunSession`` will reopen read, so that a damaged
    one is named here (exit 2) and not met by ``H5Log.reopen`` in the ranks (an MPI abort).
    log.h5 is read whole, as reopen reads it (it is small: per epoch and task); the rank logs
    of ranks ``0..ranks-1`` (those that will continue theirs) get ``check_structure``, since
    their per-iteration tables can be long and there may be thousands."""
    from hpccl.core.errors import CorruptFileError
    path = os.path.join(run_dir, "log.h5")
    if not os.path.isfile(path):
        raise CorruptFileError(f"cannot resume {run_dir!r}: its run log {path} is missing (a "
                               "checkpoint is there, so the run wrote one); nothing was changed.")
    try:
        found = read_h5(path)["attrs"].get("kind")
        if found != "run":
            raise CorruptFileError(not_a_log(path, "run", found))
        for rank in range(ranks):
            own = os.path.join(run_dir, "ranks", f"rank{rank:05d}.h5")
            if os.path.exists(own):        # a missing one is started afresh by its rank
                check_structure(own, "rank")
    except CorruptFileError as e:
        raise CorruptFileError(f"cannot resume {run_dir!r}: {e}") from None


def _read_h5(path: str, roles: bool) -> dict:
    out = {"attrs": {}}
    found_roles, journal = {}, {}
    with open_for_reading(path) as f:
        out["attrs"] = {k: _decode(v) for k, v in f.attrs.items()}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                role = _decode(obj.attrs.get(ROLE, ""))
                if role == "journal":
                    journal[name.rsplit("/", 1)[1]] = obj[...]
                    return
                if role == "superseded":      # written by hpccl before 2026-11-30
                    return
                if role:
                    found_roles[name] = role
                data = obj[...]
                if obj.dtype.kind == "O" or h5py.check_string_dtype(obj.dtype):
                    data = np.array([_decode(x) for x in data.ravel()], dtype=object).reshape(data.shape)
                out[name] = data
            elif obj.attrs:
                out.setdefault("group_attrs", {})[name] = {k: _decode(v) for k, v in obj.attrs.items()}
        f.visititems(visit)
    _fold_journal(out, journal)
    # Logs of hpccl before 2026-11-30: a writer killed between creating a column and
    # labelling it left an empty, unlabelled dataset beside its labelled siblings.
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


def _fold_journal(out: dict, journal: dict):
    """Apply the journal's attribute changes in order; a torn last entry (no value) is cut."""
    if set(journal) != {"object", "key", "value"}:
        return
    n = min(len(column) for column in journal.values())
    for obj, key, value in zip(*(journal[c][:n] for c in ("object", "key", "value"))):
        obj, key = _decode(obj), _decode(key)
        target = out["attrs"] if obj == "/" else out.setdefault("group_attrs", {}).setdefault(obj, {})
        target[key] = json.loads(_decode(value))
