"""Dealing a checkpointed rehearsal buffer over another number of ranks (a run resumed on
fewer or more ranks than wrote its checkpoint).

Rank 0 reads the labels and reservoir counts of every old shard file (small), decides, and
broadcasts the plan; each new rank then reads only the samples it is dealt.

- Per class, the samples kept are all stored ones when the new ranks have room for them
  (``new ranks x new slots per class``), else a uniform random subset of that size. Either
  way the kept samples of a class stay a uniform sample of the stream seen so far.
- Each class's kept samples, in (old rank, record) order, are cut into contiguous, balanced
  blocks, one per new rank: a new rank reads few old files, and no rank gets more than its
  slots.
- Reservoir counts (how many candidates of a class a rank has been offered): a new rank with
  full slots of a class takes its share of the global count, so later candidates replace
  stored ones at the rate an uninterrupted buffer would; one with free slots counts only what
  it holds, so the next candidates fill those slots first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hpccl.continual.rehearsal.shard import reading
from hpccl.core.checkpoint_check import damaged_samples
from hpccl.core.errors import HpcclError


@dataclass
class Plan:
    takes: list          # per new rank: {old file index: sorted rows}
    seen: np.ndarray     # [new ranks, classes] reservoir counts
    report: dict = field(default_factory=dict)


def read_inventory(files: list[str], num_classes: int, sample_shape) -> tuple[list, np.ndarray, int]:
    """Labels of every stored sample and reservoir counts, per old shard file, and the slots
    per class the old ranks had."""
    labels, seen = [], np.zeros((len(files), num_classes), dtype=np.int64)
    slots = 0
    for i, path in enumerate(files):
        with reading(path) as f:
            found = (int(f.attrs["num_classes"]), tuple(int(s) for s in f.attrs["sample_shape"]))
            if found != (num_classes, tuple(sample_shape)):
                raise HpcclError(f"rehearsal shard file {path!r} holds {found[0]} classes of shape "
                                 f"{found[1]}, but this buffer has {num_classes} of shape "
                                 f"{tuple(sample_shape)}: the checkpoint belongs to another job.")
            labels.append(f["y"][...].astype(np.int64))
            seen[i] = f["seen_per_class"][...]
            slots = int(f.attrs["slots_per_class"])
    return labels, seen, slots


def plan(labels: list, seen: np.ndarray, new_size: int, new_slots: int, rng: np.random.Generator) -> Plan:
    num_classes = seen.shape[1]
    file_of = np.concatenate([np.full(len(y), i, dtype=np.int64) for i, y in enumerate(labels)] or [[]])
    row_of = np.concatenate([np.arange(len(y), dtype=np.int64) for y in labels] or [[]])
    label = np.concatenate(labels or [[]]).astype(np.int64)
    order = np.lexsort((row_of, file_of, label))       # by class, then old rank, then record
    starts = np.searchsorted(label[order], np.arange(num_classes + 1))
    capacity = new_size * new_slots
    blocks = [[] for _ in range(new_size)]
    counts = np.zeros((new_size, num_classes), dtype=np.int64)
    dropped = np.zeros(num_classes, dtype=np.int64)
    kept = np.zeros(num_classes, dtype=np.int64)
    for c in range(num_classes):
        members = order[starts[c]:starts[c + 1]]
        if len(members) > capacity:
            dropped[c] = len(members) - capacity
            members = members[np.sort(rng.choice(len(members), capacity, replace=False))]
        kept[c] = len(members)
        q, extra = divmod(len(members), new_size)
        sizes = q + (np.arange(new_size) < extra)
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        for j in range(new_size):
            blocks[j].append(members[bounds[j]:bounds[j + 1]])
            counts[j, c] = sizes[j]
    takes = []
    for j in range(new_size):
        mine = np.concatenate(blocks[j]) if blocks[j] else np.empty(0, dtype=np.int64)
        takes.append({int(f): np.sort(row_of[mine[file_of[mine] == f]]) for f in np.unique(file_of[mine])})
    total_seen = seen.sum(axis=0)
    share = np.where(kept > 0, total_seen * counts / np.maximum(kept, 1), 0).round().astype(np.int64)
    new_seen = np.where(counts >= new_slots, np.maximum(counts, share), counts)
    report = {"from_ranks": len(labels), "to_ranks": new_size, "slots_per_class_to": new_slots,
              "stored_before": int(len(label)), "stored_after": int(kept.sum()),
              "dropped": int(dropped.sum()),
              "dropped_per_class": " ".join(f"{c}:{n}" for c, n in enumerate(dropped) if n) or "none"}
    return Plan(takes=takes, seen=new_seen, report=report)


def read_taken(files: list[str], take: dict) -> tuple[np.ndarray, np.ndarray]:
    """The samples and labels a new rank was dealt, read from the old shard files."""
    xs, ys = [], []
    for f_index, rows in sorted(take.items()):
        with reading(files[f_index]) as f:
            xs.append(f["x"][rows])
            ys.append(f["y"][rows].astype(np.int64))
            error = damaged_samples(files[f_index], xs[-1], ys[-1], rows, f["xxh3"][rows]) if "xxh3" in f else None
            if error is not None:
                raise error
    if not xs:
        return None, np.empty(0, dtype=np.int64)
    return np.concatenate(xs), np.concatenate(ys)
