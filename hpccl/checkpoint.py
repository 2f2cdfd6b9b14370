"""Checkpoints for preemption and resume: ``RUN_DIR/checkpoint/``.

    state.json            rank 0: where to resume (task, epoch), run totals; written last
    model.pt              rank 0: the learner's shared state (model, optimizer)
    rankNNNNN.pt          every rank: its own state (batch order, RNG, buffer bookkeeping)
    buffer_rankNNNNN.h5   with rehearsal: every rank's shard (hpccl.rehearsal.shard format)

All ranks write into ``checkpoint.new/``; after a barrier rank 0 writes state.json and swaps
the directories, so a job killed while checkpointing still has the previous checkpoint.
Resuming needs the same number of ranks (each holds its own shard of the buffer).
"""

from __future__ import annotations

import json
import os
import shutil
import signal

import torch

from hpccl.errors import HpcclError

EXIT_REQUEUE = 99   # the exit code of a run that checkpointed on a signal and wants a requeue


class Preempted(SystemExit):
    def __init__(self):
        super().__init__(EXIT_REQUEUE)


class StopSignals:
    """Remembers SIGUSR1/SIGTERM (the scheduler's warning before a time limit or a
    preemption); the training loop acts on it at the next epoch boundary, on all ranks."""

    SIGNALS = ("SIGUSR1", "SIGTERM")

    def __init__(self):
        self.received = None
        self._previous = {}
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def requested(self) -> int:
        return int(self.received is not None)

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, "checkpoint")


def rank_file(directory: str, rank: int, kind: str = "rank", ext: str = "pt") -> str:
    return os.path.join(directory, f"{kind}{rank:05d}.{ext}")


def save(run_dir: str, world, state: dict, shared: dict, local: dict, save_local_files=None) -> None:
    """Collective: every rank calls it with its own ``local``; rank 0's ``state`` and ``shared``
    are written. ``save_local_files(directory)`` writes extra per-rank files (buffer shards)."""
    new = os.path.join(run_dir, "checkpoint.new")
    if world.is_root:
        shutil.rmtree(new, ignore_errors=True)
        os.makedirs(new)
    world.barrier()
    torch.save(local, rank_file(new, world.rank))
    if save_local_files is not None:
        save_local_files(new)
    if world.is_root:
        torch.save(shared, os.path.join(new, "model.pt"))
    world.barrier()
    if world.is_root:
        with open(os.path.join(new, "state.json"), "w") as f:
            json.dump({**state, "world_size": world.size}, f, indent=2)
        old = checkpoint_dir(run_dir)
        trash = os.path.join(run_dir, "checkpoint.old")
        shutil.rmtree(trash, ignore_errors=True)
        if os.path.exists(old):
            os.replace(old, trash)
        os.replace(new, old)
        shutil.rmtree(trash, ignore_errors=True)
    world.barrier()


def read_state(run_dir: str) -> dict:
    path = os.path.join(checkpoint_dir(run_dir), "state.json")
    if not os.path.isfile(path):
        raise HpcclError(f"cannot resume {run_dir!r}: it has no checkpoint ({path} is missing). A "
                         "checkpoint is written when a run receives SIGUSR1/SIGTERM (e.g. the "
                         "scheduler's warning before its time limit). HINT: start a new run instead.")
    with open(path) as f:
        return json.load(f)


def load(run_dir: str, world) -> tuple[dict, dict, dict]:
    state = read_state(run_dir)
    if state["world_size"] != world.size:
        raise HpcclError(f"cannot resume {run_dir!r} on {world.size} ranks: its checkpoint was "
                         f"written by {state['world_size']} (each rank holds its own shard). "
                         f"HINT: resume with {state['world_size']} ranks.")
    directory = checkpoint_dir(run_dir)
    shared = torch.load(os.path.join(directory, "model.pt"), map_location=world.device, weights_only=False)
    local = torch.load(rank_file(directory, world.rank), map_location="cpu", weights_only=False)
    return state, shared, local
