"""One rank's shard of the rehearsal buffer: class-balanced reservoirs in an MPI window.

Layout of the shard's memory (bytes)::

    header  int64 [2 + C]: total stored, write count, stored per class (0..K each)
    data    float32 [C, K, D]: slot j of class c; a slot's label is its class

Each class has K slots on each rank. Updates are per-class reservoir sampling (Vitter's
Algorithm R) over the stream of candidates of that class this rank has been offered, so the
stored samples of a class are a uniform sample of that stream. A slot's label is implied by
where it is, so a reader fetches only the samples.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from hpccl.rehearsal.windows import ShardWindows

SHARD_FILE_VERSION = 1


def _align(n: int, to: int = 64) -> int:
    return (n + to - 1) // to * to


class ShardLayout:
    def __init__(self, num_classes: int, slots_per_class: int, sample_shape):
        self.num_classes, self.slots = int(num_classes), int(slots_per_class)
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.sample_floats = int(np.prod(self.sample_shape))
        self.sample_bytes = 4 * self.sample_floats
        self.header_bytes = 8 * (2 + self.num_classes)
        self.data_offset = _align(self.header_bytes)
        self.nbytes = self.data_offset + self.num_classes * self.slots * self.sample_bytes

    def header(self, mem: np.ndarray) -> np.ndarray:
        return mem[:self.header_bytes].view(np.int64)

    def data(self, mem: np.ndarray) -> np.ndarray:
        return mem[self.data_offset:self.nbytes].view(np.float32).reshape(
            self.num_classes, self.slots, self.sample_floats)


class Shard:
    def __init__(self, comm, group_comm, layout: ShardLayout, rng: np.random.Generator):
        self.layout, self.rng = layout, rng
        self.windows = ShardWindows(comm, group_comm, layout.nbytes)
        self.seen = np.zeros(layout.num_classes, dtype=np.int64)   # candidates offered per class
        self.clear()

    def clear(self):
        """Forget everything stored and seen (slots are reused from the start)."""
        self.seen[:] = 0
        with self.windows.write_lock() as mem:
            mem[:self.layout.header_bytes] = 0

    @property
    def stored_per_class(self) -> np.ndarray:
        return self.layout.header(self.windows.local)[2:].copy()

    @property
    def stored(self) -> int:
        return int(self.layout.header(self.windows.local)[0])

    def _plan(self, labels: np.ndarray):
        """Reservoir decisions for candidates in order: (candidate index, class, slot)."""
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
        return plan, stored

    def insert(self, x: np.ndarray, y: np.ndarray) -> int:
        """Offer candidates (x: [n, *sample_shape] float32, y: [n]); returns how many were stored."""
        if len(y) == 0:
            return 0
        plan, stored = self._plan(np.asarray(y, dtype=np.int64))
        if not plan:
            return 0
        (classes, slots), idx = zip(*plan.keys()), list(plan.values())
        rows = np.ascontiguousarray(x[idx], dtype=np.float32).reshape(len(idx), -1)
        lay = self.layout
        with self.windows.write_lock() as mem:
            lay.data(mem)[np.array(classes), np.array(slots)] = rows
            header = lay.header(mem)
            header[2:] = stored
            header[0] = stored.sum()
            header[1] += 1
        return len(idx)

    def samples_of_class(self, c: int) -> np.ndarray:
        n = self.stored_per_class[c]
        return self.layout.data(self.windows.local)[c, :n].reshape((n,) + self.layout.sample_shape).copy()

    # -- HDF5: inspection and restart -------------------------------------------------------------
    def save(self, path: str, **attrs) -> None:
        """Write the shard (samples, labels, reservoir state) atomically to ``path``."""
        lay = self.layout
        stored = self.stored_per_class
        data = lay.data(self.windows.local)
        xs = [data[c, :stored[c]] for c in range(lay.num_classes)]
        tmp = f"{path}.tmp"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with h5py.File(tmp, "w") as f:
            f.attrs.update({"format_version": SHARD_FILE_VERSION, "num_classes": lay.num_classes,
                            "slots_per_class": lay.slots, "sample_shape": lay.sample_shape,
                            "rng_state": json.dumps(self.rng.bit_generator.state), **attrs})
            f.create_dataset("x", data=np.concatenate(xs).reshape((-1,) + lay.sample_shape))
            f.create_dataset("y", data=np.repeat(np.arange(lay.num_classes), stored).astype(np.int64))
            f.create_dataset("slot", data=np.concatenate([np.arange(n) for n in stored]).astype(np.int64))
            f.create_dataset("stored_per_class", data=stored)
            f.create_dataset("seen_per_class", data=self.seen)
        os.replace(tmp, path)

    def load(self, path: str) -> None:
        """Restore the shard written by ``save`` (same classes, slots and sample shape)."""
        from hpccl.errors import HpcclError
        lay = self.layout
        with h5py.File(path, "r") as f:
            found = (int(f.attrs["num_classes"]), int(f.attrs["slots_per_class"]),
                     tuple(int(s) for s in f.attrs["sample_shape"]))
            if found != (lay.num_classes, lay.slots, lay.sample_shape):
                raise HpcclError(f"rehearsal shard file {path!r} holds {found[0]} classes x "
                                 f"{found[1]} slots of shape {found[2]}, but this buffer has "
                                 f"{lay.num_classes} x {lay.slots} of shape {lay.sample_shape}.")
            x, y, slot = f["x"][...], f["y"][...], f["slot"][...]
            stored, seen = f["stored_per_class"][...], f["seen_per_class"][...]
            state = json.loads(f.attrs["rng_state"])
        with self.windows.write_lock() as mem:
            data = lay.data(mem)
            data[y, slot] = x.reshape(len(x), -1)
            header = lay.header(mem)
            header[2:] = stored
            header[0] = stored.sum()
            header[1] += 1
        self.seen = seen.astype(np.int64)
        self.rng.bit_generator.state = state

    def free(self):
        self.windows.free()
