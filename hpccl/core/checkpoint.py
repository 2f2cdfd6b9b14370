"""Checkpoints for preemption and resume: ``RUN_DIR/checkpoint/``.

    state.json            rank 0: where to resume (task, epoch), run totals; written last
    model.pt              rank 0: the learner's shared state (model, optimizer)
    rankNNNNN.pt          every rank: its own state (batch order, RNG, buffer bookkeeping)
    buffer_rankNNNNN.h5   with rehearsal: every rank's shard (hpccl.continual.rehearsal.shard format)

All ranks write into ``checkpoint.newK/`` (in a background thread: ``CheckpointWriter``); once
every rank has written its files, rank 0 writes state.json and swaps the directories, so a
job killed while checkpointing still has the previous checkpoint. The
``keep - 1`` checkpoints before the latest stay as ``checkpoint.prev1/``, ``checkpoint.prev2/``
(newest first), for when the latest turns out to be unusable: move one back to resume from it.

A checkpoint resumes on any number of ranks (a job requeued after a node failure often gets
fewer nodes back). On the same number, every rank continues exactly. On another number the
data is dealt again, a task interrupted mid-way continues at the checkpoint's epoch with new
batch orders, the learner redistributes its per-rank state (``Learner.restore`` gets a
``rescaled_from`` in its local state: the rehearsal buffer's samples are dealt over the new
ranks, see ``hpccl.continual.rehearsal.redistribute``), and the lr follows ``train.lr_scaling`` for
the new size.

Checkpoints are written on a stop signal (preemption), and periodically (``checkpoint.every``:
N epochs, a time such as ``30min``, or ``task``), at epoch ends: rank 0's clock and epoch count
decide, and the decision rides on the epoch's metrics allreduce, so all ranks save together.
"""

from __future__ import annotations

import copy
import os
import pickle
import shutil
import signal
import threading
import time

import torch

from hpccl.core.checkpoint_dirs import (checkpoint_dir, finish_interrupted_swap, move_in,  # noqa: F401
                                         new_dirs, resumable, write_json_atomic)
from hpccl.core.checkpoint_check import check_checkpoint, read_state_json
from hpccl.core.errors import CorruptFileError, HpcclError
from hpccl.core.schema import parse_every

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


def rank_file(directory: str, rank: int, kind: str = "rank", ext: str = "pt") -> str:
    return os.path.join(directory, f"{kind}{rank:05d}.{ext}")


class PeriodicCheckpoints:
    """When the next periodic checkpoint is due. Only rank 0's answer counts (one clock for
    all); callers sum the flags over ranks in a collective they make anyway."""

    def __init__(self, every, is_root: bool):
        self.kind, self.amount = parse_every(every)
        self.is_root = is_root
        self.saved()

    def saved(self) -> None:
        self._since, self._epochs = time.monotonic(), 0

    def _due(self) -> bool:
        if self.kind == "epochs":
            return self._epochs >= self.amount
        if self.kind == "seconds":
            return time.monotonic() - self._since >= self.amount
        return False

    def epoch_due(self) -> int:
        """At an epoch end: 1 on rank 0 when a checkpoint is due."""
        self._epochs += 1
        return int(self.is_root and self._due())

    def task_due(self) -> int:
        """At a task end: also due for ``every: task``, and for what an epoch end could not
        save (the last epoch of a task is saved with the task)."""
        return int(self.is_root and (self.kind == "task" or self._due()))


def snapshot(obj):
    """A deep copy with every tensor detached and on the CPU: what the writer thread writes
    while training goes on changing the originals."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(snapshot(v) for v in obj)
    return copy.deepcopy(obj)


class _Pending:
    """One checkpoint between its copy and its commit."""

    def __init__(self, state, shared, local, files, directory):
        self.state, self.shared, self.local, self.files = state, shared, local, files
        self.directory = directory
        self.stall_s, self.write_s = 0.0, 0.0
        self.written = threading.Event()
        self.error = None
        self.all_written = None      # the Ibarrier that says every rank has written its files
        self.waited_from = None      # set when save waits for the commit


class CheckpointWriter:
    """Writes checkpoints with training stalled only for a copy of the state.

    ``save`` copies the state (``snapshot``; the learner's extra files are snapshots too) and
    hands it to one background thread that writes this rank's files into ``checkpoint.newK/``.
    Once its files are written, a rank enters a non-blocking barrier on a communicator of its
    own (so it cannot interleave with training's collectives); rank 0 commits the checkpoint
    (state.json, then the directory swap) when that barrier completes, which it checks at
    every epoch and task end (``poll``). A checkpoint asked for while the previous one is
    still being written waits for it. The writer thread never calls MPI.

    ``asynchronous=False`` writes and commits inside ``save`` (the stall is the whole write).
    """

    def __init__(self, run_dir: str, world, keep: int = 1, asynchronous: bool = True, on_commit=None):
        self.run_dir, self.world, self.keep = run_dir, world, max(int(keep), 1)
        self.asynchronous, self.on_commit = asynchronous, on_commit
        self._comm = world.comm.Dup()
        self._pending = None
        self._count = 0
        if world.is_root:
            for stale in new_dirs(run_dir):       # left by a job killed while writing
                shutil.rmtree(stale, ignore_errors=True)
        world.barrier()

    def save(self, state: dict, shared: dict, local: dict, files: dict | None = None,
             wait: bool = False, started: float | None = None) -> float:
        """Collective. ``files``: {file name: function(path)} writing this rank's extra files
        from data it already copied. ``wait``: return only once the checkpoint is committed
        (before a stop). ``started``: when the caller began gathering the state (the stall
        counts from there). Returns the stall, in seconds."""
        t0 = time.perf_counter() if started is None else started
        self._settle(block=True)          # one checkpoint in flight at a time
        self._count += 1
        # One directory per checkpoint: a rank may start writing the next one before rank 0
        # has seen that every rank finished the previous one and moved it in place.
        job = _Pending(state, snapshot(shared) if self.world.is_root else None, snapshot(local),
                       files or {}, os.path.join(self.run_dir, f"checkpoint.new{self._count}"))
        job.stall_s = time.perf_counter() - t0
        self._pending = job
        threading.Thread(target=self._write, args=(job,), name="hpccl-checkpoint", daemon=True).start()
        if wait or not self.asynchronous:
            job.waited_from = t0         # the stall is then the whole write, up to the commit
            self._settle(block=True)
        return job.stall_s

    def _write(self, job: _Pending) -> None:
        t0 = time.perf_counter()
        try:
            os.makedirs(job.directory, exist_ok=True)
            torch.save(job.local, rank_file(job.directory, self.world.rank))
            for name, write in job.files.items():
                write(os.path.join(job.directory, name))
            if job.shared is not None:
                torch.save(job.shared, os.path.join(job.directory, "model.pt"))
        except BaseException as e:  # noqa: BLE001 - raised in the main thread by _settle
            job.error = e
        job.write_s = time.perf_counter() - t0
        job.written.set()

    def poll(self) -> None:
        """At an epoch or task end: commit the checkpoint in flight if every rank wrote it."""
        self._settle(block=False)

    def close(self, ok: bool = True) -> None:
        """At the end of a run: finish the checkpoint in flight (``ok``: collective); on the
        error path nothing collective may be called, and the thread is left to die."""
        if ok:
            self._settle(block=True)
            self._comm.Free()

    def _settle(self, block: bool) -> None:
        job = self._pending
        if job is None:
            return
        if job.all_written is None:
            if not block and not job.written.is_set():
                return
            job.written.wait()
            if job.error is not None:
                raise HpcclError(f"rank {self.world.rank} could not write its checkpoint files into "
                                 f"{job.directory}: {job.error}") from job.error
            job.all_written = self._comm.Ibarrier()
        if block:
            job.all_written.Wait()
        elif not job.all_written.Test():
            return
        self._pending = None
        if job.waited_from is not None:
            job.stall_s = time.perf_counter() - job.waited_from
        if self.world.is_root:
            self._commit(job)

    def _commit(self, job: _Pending) -> None:
        # state.json marks the new directory complete: written only now, when every rank has
        # written its files, and atomically, so a kill mid-write cannot leave a torn marker.
        write_json_atomic(os.path.join(job.directory, "state.json"),
                           {**job.state, "world_size": self.world.size})
        move_in(self.run_dir, job.directory, self.keep)
        if self.on_commit is not None:
            self.on_commit(job.state, job.stall_s, job.write_s)


def read_state(run_dir: str) -> dict:
    if not os.path.isdir(run_dir):
        what = "is a file" if os.path.exists(run_dir) else "does not exist"
        raise HpcclError(f"cannot resume {run_dir!r}: it {what}; --resume takes the run directory "
                         "of an earlier 'hpccl run' (the one holding config.yaml, log.h5 and "
                         "checkpoint/).")
    finish_interrupted_swap(run_dir)
    path = os.path.join(checkpoint_dir(run_dir), "state.json")
    from hpccl.core.logs import run_status
    # Complete whether or not a checkpoint is left: checkpoint.every: task keeps the last
    # task's, and resuming from it retrained that task and wrote it into the finished log.
    if run_status(run_dir) == "complete":
        raise HpcclError(f"cannot resume {run_dir!r}: its run is complete (log.h5, status "
                         "complete); nothing is left to train. HINT: its results: 'hpccl analyze "
                         f"{run_dir}'; to train it again, 'hpccl run {run_dir}/config.yaml --out "
                         "NEW_DIR'.")
    if not os.path.isfile(path):
        raise HpcclError(f"cannot resume {run_dir!r}: it has no checkpoint ({path} is missing). A "
                         "checkpoint is written when a run receives SIGUSR1/SIGTERM (e.g. the "
                         "scheduler's warning before its time limit) and every checkpoint.every "
                         "(default 30min). HINT: start it again with 'hpccl run JOB --out "
                         f"{run_dir}' (its logs move to {run_dir}/attempts/).")
    # One check for the whole checkpoint, before any rank is launched (cmd_run calls this first):
    # a damaged file is named here, not met as a traceback on every rank.
    state = read_state_json(path)
    check_checkpoint(checkpoint_dir(run_dir), state)
    return state


def torch_load(path: str, map_location) -> dict:
    """``torch.load`` of a checkpoint file, naming the file when its content is damaged where
    ``check_checkpoint`` does not look."""
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, AttributeError, ImportError,
            pickle.UnpicklingError) as e:
        raise CorruptFileError(f"cannot resume from {path}: it cannot be loaded ({type(e).__name__}: "
                               f"{e}); the checkpoint is damaged, nothing was changed.") from None


def load(run_dir: str, world) -> tuple[dict, dict, dict]:
    """(state, shared, local) of this rank. Resumed on another number of ranks, ``local`` is
    rebuilt by ``rescaled_local``."""
    state = read_state(run_dir)
    directory = checkpoint_dir(run_dir)
    shared = torch_load(os.path.join(directory, "model.pt"), map_location=world.device)
    if state["world_size"] == world.size:
        local = _load_local(directory, world.rank)
    else:
        local = rescaled_local(directory, state["world_size"], world)
    return state, shared, local


def _load_local(directory: str, rank: int) -> dict:
    return torch_load(rank_file(directory, rank), map_location="cpu")


def rescaled_local(directory: str, old_size: int, world) -> dict:
    """This rank's local state when the checkpoint was written by ``old_size`` ranks.

    - ``fit`` (a task stopped mid-way): the epoch, iteration count and torch RNG of old rank 0;
      no batch-order generator (the shards were dealt again, so the old orders mean nothing);
      rank 0 carries the samples all old ranks had seen in the task, so their sum stays true.
    - ``learner``: ``{"rescaled_from": old_size, "old_rank0": old rank 0's learner state}``.
    - ``log_rows``: this rank's own rows when it existed before (its log continues), else None.
    """
    first = _load_local(directory, 0)
    own = first if world.rank == 0 else (_load_local(directory, world.rank) if world.rank < old_size else None)
    fit = None
    if first["fit"] is not None:
        samples = 0
        if world.rank == 0:
            samples = sum(_load_local(directory, r)["fit"]["samples"] for r in range(old_size))
        fit = {**first["fit"], "generator": None, "samples": samples}
    return {"fit": fit, "learner": {"rescaled_from": old_size, "old_rank0": first["learner"]},
            "log_rows": own["log_rows"] if own is not None else None}
