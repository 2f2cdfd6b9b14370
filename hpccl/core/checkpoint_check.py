"""Is a checkpoint readable? One check per kind of file in ``RUN_DIR/checkpoint/``, run where
``--resume`` starts (the front-end before it launches ranks, and every rank launched directly
by srun/mpiexec), so a damaged checkpoint is one paragraph naming the file and what is wrong
with it, exit code 2, instead of a traceback on every rank and an MPI abort. Nothing here
writes: a refused resume leaves the run directory as it was.

    state.json            a JSON object with the keys and types ``_commit`` writes (``STATE_KEYS``)
    model.pt, rankNNNNN.pt  torch archives (zip) whose central directory and pickle are intact
                          (the pickle parsed, not run: hpccl.core.pickle_check);
                          a rank file for every rank that wrote the checkpoint
    buffer_rankNNNNN.h5   when one is there, one per rank, each a rehearsal shard file
                          (hpccl.continual.rehearsal.shard) with its attributes and datasets;
                          its samples checked against their hashes when all buffers together
                          are small (VERIFY_SAMPLES_BYTES), else by each rank as it reads them

The checks read metadata only (the zip's directory and its small pickle, HDF5 headers and
the small per-class arrays), not the tensors, and samples only up to a bound: seconds at most
for any checkpoint.
A file damaged where these checks do not look is still named when it is loaded
(``checkpoint.torch_load``). No torch here: the check runs before torch is needed.
"""

from __future__ import annotations

import json
import math
import os
import zipfile

from hpccl.core.errors import CorruptFileError
from hpccl.core.pickle_check import PickleDamage, check_storages, read_pickle

_HINT = ("HINT: an older checkpoint may be kept beside it (checkpoint.prev1/, with checkpoint.keep "
         ">= 2): move this one aside and that one to checkpoint/ to resume from it, or start the "
         "run again with 'hpccl run {run_dir}/config.yaml --out {run_dir}'.")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _matrix(v) -> bool:
    """A square list of lists of numbers (NaN where a task was not evaluated)."""
    return (isinstance(v, list) and len(v) >= 1
            and all(isinstance(row, list) and len(row) == len(v) and all(_number(x) for x in row) for row in v))


# key: (check, what it should be); every key is required except those in _OPTIONAL.
STATE_KEYS = {
    "task": (lambda v: _int(v) and v >= 0, "an integer >= 0 (the task to resume at)"),
    "epoch": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "reason": (lambda v: isinstance(v, str), "a string ('signal', 'periodic' or 'task')"),
    "train_time_s": (lambda v: _number(v) and math.isfinite(v) and v >= 0, "a number of seconds >= 0"),
    "top1": (_matrix, "a square list of lists of numbers (tasks x tasks)"),
    "top5": (_matrix, "a square list of lists of numbers (tasks x tasks)"),
    "signal": (lambda v: v is None or isinstance(v, str), "a signal name or null"),
    "log_rows": (lambda v: v is None or (isinstance(v, dict) and all(_int(n) and n >= 0 for n in v.values())),
                 "an object of table lengths (integers >= 0) or null"),
    "world_size": (lambda v: _int(v) and v >= 1, "an integer >= 1 (the ranks that wrote the checkpoint)"),
}
_OPTIONAL = {"signal", "log_rows"}


def _corrupt(path: str, what: str) -> CorruptFileError:
    return CorruptFileError(f"cannot resume from {path}: {what}. The checkpoint is damaged (a "
                            f"truncated copy, a full disk, or a file edited by hand); nothing was "
                            f"changed. " + _HINT.format(run_dir=os.path.dirname(os.path.dirname(path))))


def read_state_json(path: str) -> dict:
    """state.json, checked against ``STATE_KEYS``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise _corrupt(path, f"it cannot be read ({e.strerror or e})") from None
    if not raw.strip():
        raise _corrupt(path, "it is empty, expected a JSON object")
    try:
        state = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _corrupt(path, f"it is not text (byte {e.start} is not UTF-8), expected a JSON object") from None
    except json.JSONDecodeError as e:
        raise _corrupt(path, f"it is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(state, dict):
        raise _corrupt(path, f"expected a JSON object, found {type(state).__name__}")
    missing = [k for k in STATE_KEYS if k not in state and k not in _OPTIONAL]
    if missing:
        raise _corrupt(path, "it lacks the key(s) " + ", ".join(repr(k) for k in missing)
                       + " (a checkpoint's state.json holds " + ", ".join(STATE_KEYS) + ")")
    for key, (ok, expected) in STATE_KEYS.items():
        if key in state and not ok(state[key]):
            raise _corrupt(path, f"key {key!r}: expected {expected}, found {json.dumps(state[key])[:80]}")
    if len(state["top1"]) != len(state["top5"]):
        raise _corrupt(path, f"'top1' is {len(state['top1'])} x {len(state['top1'])} but 'top5' is "
                             f"{len(state['top5'])} x {len(state['top5'])}")
    if state["task"] > len(state["top1"]):
        raise _corrupt(path, f"key 'task': {state['task']} is beyond the {len(state['top1'])} tasks of "
                             "its accuracy matrix 'top1'")
    return state


def rank_path(directory: str, rank: int, kind: str = "rank", ext: str = "pt") -> str:
    return os.path.join(directory, f"{kind}{rank:05d}.{ext}")


# what every rank file holds (checkpoint.load and rescaled_local read them)
RANK_KEYS = ("fit", "learner", "log_rows")


def check_torch_file(path: str, what: str, keys=()) -> None:
    """``path`` is a torch.save archive: a zip with an intact directory, a pickle that parses
    (``pickle_check``: not executed) into a dict with ``keys``, and the tensor storages it
    names present at their size (from the zip's directory: no tensor is read)."""
    if not os.path.isfile(path):
        raise _corrupt(path, f"{what} is missing")
    try:
        with zipfile.ZipFile(path) as z:
            pickles = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pickles:
                raise _corrupt(path, f"{what} is a zip archive without the data.pkl of torch.save")
            data = z.read(pickles[0])          # checks the pickle's CRC
            try:
                found, storages = read_pickle(data)
                check_storages(storages, {i.filename: i.file_size for i in z.infolist()},
                               pickles[0][:-len("data.pkl")])
            except PickleDamage as e:
                raise _corrupt(path, f"{what}: its {pickles[0]} is damaged: {e}") from None
            lacking = [k for k in keys if k not in found]
            if lacking:
                raise _corrupt(path, f"{what}: its pickle lacks the key(s) "
                                     + ", ".join(repr(k) for k in lacking))
    except zipfile.BadZipFile as e:
        size = os.path.getsize(path)
        raise _corrupt(path, f"{what} is not a torch.save archive ({'empty' if size == 0 else e}; "
                             f"{size} bytes): truncated or overwritten") from None
    except (OSError, EOFError, ValueError, NotImplementedError) as e:
        raise _corrupt(path, f"{what} cannot be read as a torch.save archive ({e})") from None


# Samples of the buffer files checked in the front-end, in all: above this, only the ranks
# check theirs, as they read them (a front-end reading every rank's buffer one after another
# would add minutes to a resume of a large buffer; the ranks pay no extra read).
VERIFY_SAMPLES_BYTES = 2 << 30


def sample_hashes(x, y, rows) -> np.ndarray:
    """xxh3_64 of each stored sample's bytes, seeded with its label and its row in the file
    (``rows``): a sample damaged, relabelled or moved no longer matches what
    ``write_snapshot`` stored beside it in dataset 'xxh3'."""
    import numpy as np
    import xxhash
    flat = np.ascontiguousarray(x).reshape(len(x), -1).view(np.uint8)
    return np.array([xxhash.xxh3_64_intdigest(memoryview(flat[i]), seed=(int(y[i]) << 32) | int(r))
                     for i, r in enumerate(rows)], dtype=np.uint64)


def damaged_samples(path: str, x, y, rows, stored) -> CorruptFileError | None:
    """The error for the samples (rows ``rows`` of file ``path``, read as ``x``, ``y``) whose
    hash is not the one ``stored`` beside them, or None when all match."""
    import numpy as np
    bad = np.flatnonzero(sample_hashes(x, y, rows) != np.asarray(stored, dtype=np.uint64))
    if not len(bad):
        return None
    return _corrupt(path, f"{len(bad)} of the {len(rows)} samples read (the first at row {int(rows[bad[0]])}) "
                          "do not match the hash stored with them (dataset 'xxh3'): the rehearsal buffer "
                          "file is damaged inside its samples")


def check_shard_file(path: str, verify: bool = True) -> None:
    """``path`` is a rehearsal shard file: its attributes and datasets, in shapes that agree,
    and (``verify``, where the file has hashes) its samples' hashes."""
    import h5py
    import numpy as np
    if not os.path.isfile(path):
        raise _corrupt(path, "this rank's rehearsal buffer file is missing (other ranks' are there)")
    try:
        with h5py.File(path, "r") as f:
            missing = [a for a in ("num_classes", "slots_per_class", "sample_shape", "rng_state") if a not in f.attrs]
            missing += [d for d in ("x", "y", "slot", "seen_per_class") if d not in f]
            if missing:
                raise _corrupt(path, "the rehearsal buffer file lacks " + ", ".join(repr(m) for m in missing))
            classes = f.attrs["num_classes"]
            shape = tuple(np.atleast_1d(f.attrs["sample_shape"]).tolist())
            if not (np.ndim(classes) == 0 and np.issubdtype(np.asarray(classes).dtype, np.integer) and classes >= 1):
                raise _corrupt(path, f"attribute 'num_classes': expected an integer >= 1, found {classes!r}")
            try:
                rng = json.loads(f.attrs["rng_state"])
            except (TypeError, ValueError):
                rng = None
            if not isinstance(rng, dict):
                raise _corrupt(path, "attribute 'rng_state' is not the JSON of a random generator's state")
            n = f["y"].shape[0] if f["y"].ndim == 1 else -1
            shapes = {"x": (f["x"].shape, (n,) + shape), "y": (f["y"].shape, (n,)),
                      "slot": (f["slot"].shape, (n,)),
                      "seen_per_class": (f["seen_per_class"].shape, (int(classes),))}
            for name in ("record", "xxh3"):       # both optional: files of older hpccl lack them
                if name in f:
                    shapes[name] = (f[name].shape, (n,))
            for name, (found, expected) in shapes.items():
                if n < 0 or found != expected:
                    raise _corrupt(path, f"dataset {name!r} has shape {found}, expected {expected} "
                                         f"({n if n >= 0 else 'y not 1-D'} stored samples of shape {shape}, "
                                         f"{int(classes)} classes)")
            y = f["y"][...]
            if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= classes):
                raise _corrupt(path, f"dataset 'y' holds labels outside 0..{int(classes) - 1}")
            if verify and "xxh3" in f and len(y):
                error = damaged_samples(path, f["x"][...], y, np.arange(len(y)), f["xxh3"][...])
                if error is not None:
                    raise error
    except CorruptFileError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:   # h5py's errors for damage
        raise _corrupt(path, f"the rehearsal buffer file is not a readable HDF5 file ({e})") from None


def check_checkpoint(directory: str, state: dict) -> None:
    """Every file of the checkpoint in ``directory`` whose state.json is ``state``."""
    check_torch_file(os.path.join(directory, "model.pt"), "the model and optimizer state")
    size = state["world_size"]
    for rank in range(size):
        check_torch_file(rank_path(directory, rank), f"rank {rank}'s state (of {size} ranks)", RANK_KEYS)
    buffers = [rank_path(directory, r, "buffer_rank", "h5") for r in range(size)]
    if any(os.path.exists(p) for p in buffers):
        total = sum(os.path.getsize(p) for p in buffers if os.path.isfile(p))
        for path in buffers:
            check_shard_file(path, verify=total <= VERIFY_SAMPLES_BYTES)
