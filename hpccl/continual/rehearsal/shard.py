"""One rank's shard of the rehearsal buffer: class-balanced reservoirs in an MPI window.

Layout of the shard's memory (bytes)::

    header   uint64 [8]: [0] total stored N, [1] inserts so far; the rest reserved
    records  [C * K] of record_bytes each, from byte 64:
             uint64 hash | uint64 seq | int64 label | sample (the dataset's dtype and
             shape), padded to 8 (records.py)

Each class has K reservoir slots on each rank. Updates are per-class reservoir sampling
(Vitter's Algorithm R) over the stream of candidates of that class this rank has been
offered, so the stored samples of a class are a uniform sample of that stream.

Records are handed out in the order classes first fill them, so the stored samples are
always records 0..N-1 and N only grows: a reader needs a rank's N alone (not its per-class
counts) to draw uniformly among its samples, and any N it has seen stays valid. A record's
label travels with it. The owner keeps which record holds the j-th sample of class c.

Each record is written under a seqlock (its sequence number is odd while the label and
sample change, even and non-zero once written) and then sealed with a hash of its bytes
(records.py). Same-node readers check the sequence number around their loads; readers on
other nodes check the hash of what one get (or one message) brought. Nobody takes a lock.
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager

import h5py
import numpy as np

from hpccl.continual.rehearsal import records as rec
from hpccl.core.checkpoint_check import damaged_samples, sample_hashes
from hpccl.core.errors import CorruptFileError
from hpccl.continual.rehearsal.windows import RecordTable, ShardWindows

SHARD_FILE_VERSION = 1
TOTAL_OFFSET = 0          # header word a reader needs: records 0..N-1 are stored
_HEADER_BYTES = 64


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


class ShardLayout:
    def __init__(self, num_classes: int, slots_per_class: int, sample_shape, dtype=np.float32):
        self.num_classes, self.slots = int(num_classes), int(slots_per_class)
        self.capacity = self.num_classes * self.slots
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.dtype = np.dtype(dtype)
        self.sample_bytes = self.dtype.itemsize * int(np.prod(self.sample_shape))
        self.record_bytes = _align(rec.HEAD_BYTES + self.sample_bytes, 8)
        self.records_offset = _HEADER_BYTES
        self.table = RecordTable(self.records_offset, self.record_bytes, self.capacity)
        # A whole number of records, so that shards laid back to back in a node's shared
        # memory form one array of records (windows.py reads a node's records in one gather),
        # and of 64 bytes: MPICH 4.0 (ch4) returns zeros for gets from a ``Win.Create`` window
        # over shared memory whose base is only 8-byte aligned, the base of the next rank's
        # shard.
        self.nbytes = _align(self.records_offset + self.capacity * self.record_bytes,
                             math.lcm(64, self.record_bytes))

    def header(self, mem: np.ndarray) -> np.ndarray:
        return mem[:_HEADER_BYTES].view(np.uint64)

    def _column(self, buf, count: int, offset: int, dtype, shape=()):
        """One field of ``count`` records laid out from ``offset`` in ``buf``, as a view."""
        inner = np.empty(shape, dtype=dtype).strides
        return np.ndarray((count,) + tuple(shape), dtype=dtype, buffer=buf, offset=offset,
                          strides=(self.record_bytes,) + inner)

    def rows(self, mem: np.ndarray) -> np.ndarray:
        """[records, record_bytes] view of a shard's records."""
        return np.ndarray((self.capacity, self.record_bytes), np.uint8, mem, self.records_offset)

    def seqs(self, mem: np.ndarray) -> np.ndarray:
        return self._column(mem, self.capacity, self.records_offset + rec.SEQ, np.uint64)

    def labels(self, mem: np.ndarray) -> np.ndarray:
        return self._column(mem, self.capacity, self.records_offset + rec.LABEL, np.int64)

    def samples(self, mem: np.ndarray) -> np.ndarray:
        """[records, *sample_shape] view of the samples inside a shard's memory."""
        return self._column(mem, self.capacity, self.records_offset + rec.HEAD_BYTES, self.dtype,
                            self.sample_shape)

    def fetched(self, records: np.ndarray, copy_labels: bool = True):
        """(samples view, labels copy, or view) of records fetched into a [k, record_bytes]
        array."""
        k = len(records)
        if k == 0:
            return np.empty((0,) + self.sample_shape, dtype=self.dtype), np.empty(0, dtype=np.int64)
        flat = records.reshape(-1)
        return (self._column(flat, k, rec.HEAD_BYTES, self.dtype, self.sample_shape),
                self._column(flat, k, rec.LABEL, np.int64).copy() if copy_labels
                else self._column(flat, k, rec.LABEL, np.int64))


class Shard:
    def __init__(self, comm, group_comm, layout: ShardLayout, rng: np.random.Generator,
                 transport: str = "rma"):
        self.layout, self.rng = layout, rng
        self.windows = ShardWindows(comm, group_comm, layout.nbytes, layout.table, transport)
        mem = self.windows.local
        self._header, self._seq, self._rows = layout.header(mem), layout.seqs(mem), layout.rows(mem)
        self._label, self._sample = layout.labels(mem), layout.samples(mem)
        self.seen = np.zeros(layout.num_classes, dtype=np.int64)   # candidates offered per class
        self.count = np.zeros(layout.num_classes, dtype=np.int64)  # stored per class
        self.record_of = np.full((layout.num_classes, layout.slots), -1, dtype=np.int64)
        self.clear()

    def clear(self):
        """Forget everything stored and seen (records are reused from the start). Only for a
        buffer nobody samples at the same time: readers may still hold the old total."""
        self.windows._check("write")
        self.seen[:] = 0
        self.count[:] = 0
        self.record_of[:] = -1
        self._allocated = 0
        self._header[:] = 0
        self.windows.fence()

    @property
    def stored_per_class(self) -> np.ndarray:
        return self.count.copy()

    @property
    def stored(self) -> int:
        return int(self.count.sum())

    def _plan(self, labels: np.ndarray):
        """Reservoir decisions for candidates in order: {(class, slot): candidate index}."""
        K = self.layout.slots
        stored = np.minimum(self.seen, K)
        plan = {}
        for i, c in enumerate(labels):
            self.seen[c] += 1
            if stored[c] < K:
                slot = stored[c]
                stored[c] += 1
            else:
                slot = self.rng.integers(0, self.seen[c])  # keep with probability K / seen
                if slot >= K:
                    continue
            plan[(int(c), int(slot))] = i   # a later candidate for the same slot wins
        return plan

    def insert(self, x: np.ndarray, y: np.ndarray) -> int:
        """Offer candidates (x: [n, *sample_shape], y: [n]); returns how many were stored."""
        if len(y) == 0:
            return 0
        plan = self._plan(np.asarray(y, dtype=np.int64))
        if not plan:
            return 0
        keys, idx = list(plan.keys()), list(plan.values())
        classes = np.array([c for c, _ in keys], dtype=np.int64)
        slots = np.array([s for _, s in keys], dtype=np.int64)
        self._write(classes, slots, np.asarray(x)[idx])
        return len(idx)

    def _write(self, classes: np.ndarray, slots: np.ndarray, samples: np.ndarray, at=None):
        """Store samples as the ``slots``-th sample of ``classes``, under the seqlock, then
        sealed (in records ``at`` when restoring a saved shard)."""
        self.windows._check("write")
        records = self.record_of[classes, slots]
        new = np.flatnonzero(records < 0)              # first fill: the next free records
        records[new] = (self._allocated + np.arange(len(new))) if at is None else at[new]
        self.record_of[classes[new], slots[new]] = records[new]
        if len(new):
            self._allocated = max(self._allocated, int(records[new].max()) + 1)
        win = self.windows
        self._seq[records] += 1                        # odd: being written
        win.fence()
        self._label[records] = classes
        self._sample[records] = samples.reshape((len(records),) + self.layout.sample_shape)
        win.fence()
        self._seq[records] += 1                        # even: whole again
        rec.seal(self._rows, records)          # the hash last: remote readers check it
        np.maximum.at(self.count, classes, slots + 1)
        win.fence()
        self._header[0] = self._allocated              # new records become visible only now
        self._header[1] += 1
        win.fence()

    def samples_of_class(self, c: int) -> np.ndarray:
        self.windows._check()
        return self._sample[self.record_of[c, :self.count[c]]].copy()

    # -- HDF5: inspection and restart -------------------------------------------------------------
    def save(self, path: str, **attrs) -> None:
        """Write the shard (samples, labels, reservoir state) atomically to ``path``."""
        write_snapshot(path, self.snapshot(), **attrs)

    def snapshot(self) -> dict:
        """A copy of what ``save`` writes, for writing later while the shard changes."""
        self.windows._check()
        lay = self.layout
        stored = self.stored_per_class
        records = np.concatenate([self.record_of[c, :stored[c]] for c in range(lay.num_classes)]).astype(np.int64)
        return {"attrs": {"format_version": SHARD_FILE_VERSION, "num_classes": lay.num_classes,
                          "slots_per_class": lay.slots, "sample_shape": lay.sample_shape,
                          "rng_state": json.dumps(self.rng.bit_generator.state)},
                "x": self._sample[records],
                "y": np.repeat(np.arange(lay.num_classes), stored).astype(np.int64),
                "slot": np.concatenate([np.arange(n) for n in stored]).astype(np.int64),
                "stored_per_class": stored, "seen_per_class": self.seen.copy(),
                # where each sample sits: a restored shard maps draws to the same samples
                "record": records}

    def load(self, path: str) -> None:
        """Restore the shard written by ``save`` (same classes, slots and sample shape) into
        this shard, replacing what it holds."""
        from hpccl.core.errors import HpcclError
        lay = self.layout
        with reading(path) as f:
            found = (int(f.attrs["num_classes"]), int(f.attrs["slots_per_class"]),
                     tuple(int(s) for s in f.attrs["sample_shape"]), f["x"].dtype)
            if found != (lay.num_classes, lay.slots, lay.sample_shape, lay.dtype):
                raise HpcclError(f"rehearsal shard file {path!r} holds {found[0]} classes x "
                                 f"{found[1]} slots of shape {found[2]} ({found[3]}), but this buffer "
                                 f"has {lay.num_classes} x {lay.slots} of shape {lay.sample_shape} "
                                 f"({lay.dtype}).")
            x, y, slot = f["x"][...], f["y"][...], f["slot"][...]
            seen = f["seen_per_class"][...]
            at = f["record"][...] if "record" in f else np.arange(len(y))
            state = json.loads(f.attrs["rng_state"])
            error = damaged_samples(path, x, y, np.arange(len(y)), f["xxh3"][...]) if "xxh3" in f else None
            if error is not None:
                raise error
        self.clear()
        if len(y):
            self._write(y.astype(np.int64), slot.astype(np.int64), x.astype(lay.dtype, copy=False),
                        at=at.astype(np.int64))
        self.seen = seen.astype(np.int64)
        self.rng.bit_generator.state = state

    def fill(self, x, y: np.ndarray, seen: np.ndarray) -> None:
        """Replace what the shard holds by the samples ``x``/``y`` (each class's in its first
        slots) and its reservoir counts by ``seen``: a buffer dealt again over other ranks."""
        y = np.asarray(y, dtype=np.int64)
        if np.bincount(y, minlength=self.layout.num_classes).max(initial=0) > self.layout.slots:
            raise ValueError("more samples of a class than slots")
        self.clear()
        if len(y):
            order = np.argsort(y, kind="stable")
            y, x = y[order], np.asarray(x)[order]
            slots = np.arange(len(y)) - np.searchsorted(y, y)    # position within its class
            self._write(y, slots, x.astype(self.layout.dtype, copy=False))
        self.seen = np.asarray(seen, dtype=np.int64).copy()

    def free(self):
        self.windows.free()


_WRITE_BYTES = 16 << 20     # samples written in slices: h5py holds its global lock per call


@contextmanager
def reading(path: str):
    """A shard file open for reading; h5py's errors for a damaged file become one naming it
    (CorruptFileError), in the ranks that load a checkpoint's buffer."""
    try:
        with h5py.File(path, "r") as f:
            yield f
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CorruptFileError(f"cannot resume from {path}: the rehearsal buffer file does not read "
                               f"({type(e).__name__}: {e}); the checkpoint is damaged, nothing was "
                               "changed.") from None


def write_snapshot(path: str, snap: dict, **attrs) -> None:
    """Write a ``Shard.snapshot`` atomically to ``path`` (the shard file format), each sample
    with its hash (dataset 'xxh3', ``checkpoint_check.sample_hashes``): a reader tells a sample
    damaged on disk."""
    tmp = f"{path}.tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    x = snap["x"]
    with h5py.File(tmp, "w") as f:
        f.attrs.update({**snap["attrs"], **attrs})
        ds = f.create_dataset("x", shape=x.shape, dtype=x.dtype)
        step = max(1, _WRITE_BYTES // max(1, x[:1].nbytes))
        for i in range(0, len(x), step):
            ds[i:i + step] = x[i:i + step]
        for name in ("y", "slot", "stored_per_class", "seen_per_class", "record"):
            f.create_dataset(name, data=snap[name])
        f.create_dataset("xxh3", data=sample_hashes(x, snap["y"], np.arange(len(x))))
    os.replace(tmp, path)
