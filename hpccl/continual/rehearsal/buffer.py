"""The rehearsal buffer as the training loop sees it: each mini-batch gets r representatives
drawn from the global buffer, and offers c of its samples to the local shard.

Asynchronous mode (the default) is double-buffered with one background thread: while the
model trains on mini-batch i, the thread inserts mini-batch i's candidates and fetches the
representatives for mini-batch i+1. ``representatives`` only waits (timed as ``rehearsal_wait``)
if that fetch has not finished. A task's first representatives are fetched when the task
begins, after every earlier insert, so no iteration trains on stale or unfilled slots.
Synchronous mode does the same work inline, to measure what the overlap hides.

The thread also keeps this rank's MPI library answering other ranks' reads of its shard
while the main thread is busy outside MPI (windows.py: needed on transports without
hardware RDMA, such as TCP): whenever it has no work for ``rehearsal.progress_ms``, it makes
one cheap MPI call. In synchronous mode the thread exists for that alone, and only when
some reader is on another node.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from concurrent.futures import Future

import numpy as np
import torch

from hpccl.core.errors import ConfigError
from hpccl.continual.rehearsal.sampler import GlobalSampler
from hpccl.continual.rehearsal.shard import Shard, ShardLayout
from hpccl.core.mpi import mpi, require_thread_multiple
from hpccl.core.seeding import numpy_rng
from hpccl.core import env


def slots_per_class(cfg, num_classes: int, num_train: int, world_size: int) -> int:
    """K: set directly, or the global budget ``buffer_ratio * num_train`` over classes and ranks."""
    if cfg.slots_per_class is not None:
        return cfg.slots_per_class
    return max(1, int(cfg.buffer_ratio * num_train / (num_classes * world_size)))


def over_budget(cfg, num_classes: int, num_train: int, world_size: int, sample_bytes: int) -> str | None:
    """A warning when the floor of one slot per class and rank makes the buffer larger than
    ``buffer_ratio`` asks (many classes on many ranks: ImageNet beyond ~128 ranks at 0.1)."""
    if cfg.slots_per_class is not None or cfg.buffer_ratio * num_train >= num_classes * world_size:
        return None
    slots = num_classes * world_size
    return (f"rehearsal.buffer_ratio {cfg.buffer_ratio:g} gives less than one slot per class and "
            f"rank ({cfg.buffer_ratio * num_train:.0f} samples for {num_classes} classes x {world_size} "
            f"ranks); the buffer keeps one slot per class on every rank: {slots} samples "
            f"({slots * sample_bytes / 1e6:.1f} MB), an effective ratio of {slots / num_train:.3g}. "
            "HINT: fewer ranks, or accept the larger buffer.")


def buffer_group(world, ranks_per_node):
    """The ranks that share one shared-memory window: the real node, or (to exercise the
    remote path on one machine) blocks of ``ranks_per_node`` consecutive ranks."""
    if ranks_per_node is None:
        return world.node_comm
    MPI = mpi()
    group = world.comm.Split(world.rank // ranks_per_node, world.rank)
    shared = group.Split_type(MPI.COMM_TYPE_SHARED, key=world.rank)
    same = shared.Get_size() == group.Get_size()
    shared.Free()
    # Every rank joins this allreduce, also one alone in a last, smaller pseudo-node (3 ranks
    # in nodes of 2): a collective that some ranks skip hangs the others.
    if not world.comm.allreduce(int(same), op=MPI.MIN):
        raise ConfigError(f"rehearsal.ranks_per_node is {ranks_per_node}, but consecutive blocks "
                          "of that many ranks do not share one node's memory. HINT: leave it "
                          "null (group by real node) or set 1 (every rank its own node).")
    return group


def progress_function(windows):
    """What the idle rehearsal thread calls so this rank answers others' reads: needed only
    when readers on other nodes exist. ``HPCCL_REHEARSAL_PROGRESS=off`` turns it off for RMA,
    to see whether a network serves one-sided gets without the target's CPU (``hpccl
    check``); the message transport always needs it."""
    if windows.transport == "none":
        return None
    if windows.transport == "rma" and env.read("HPCCL_REHEARSAL_PROGRESS") == "off":
        return None
    return windows.progress


class RehearsalThread:
    """One background thread: runs submitted work in order, and between work items calls
    ``idle()`` every ``interval`` seconds (``idle=None``: just waits).

    Any error in the thread, in a work item or in ``idle()``, is fatal to it: the thread
    stops, every queued and every later piece of work fails with that error, and
    ``raise_if_failed`` raises it in the caller. A thread that died quietly would leave the
    training loop waiting for ever on a fetch nobody runs, and peers on other nodes waiting
    for reads nobody answers; the rank must fail instead, so the job ends like on any other
    rank's error."""

    def __init__(self, idle=None, interval: float = 1e-3):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._idle, self._interval = idle, interval
        self._error: BaseException | None = None
        # Held while work is queued and while the thread fails the queue: no item can slip
        # in after the failure drained the queue and then wait for ever.
        self._lock = threading.Lock()
        self._switch_interval = sys.getswitchinterval()     # restored by shutdown()
        if idle is not None:
            # Each wake-up needs the GIL; by default Python hands it over only every 5 ms, so
            # a main thread busy in Python would make every remote read wait that long (and a
            # message-transport reply takes several wake-ups).
            sys.setswitchinterval(min(self._switch_interval, interval / 2))
        self._thread = threading.Thread(target=self._loop, name="hpccl-rehearsal", daemon=True)
        self._thread.start()

    def submit(self, fn, *args) -> Future:
        future = Future()
        with self._lock:
            if self._error is None:
                self._queue.put((future, fn, args))
                return future
        future.set_exception(self._error)
        return future

    @property
    def error(self) -> BaseException | None:
        return self._error

    def raise_if_failed(self):
        if self._error is not None:
            raise self._error

    def _loop(self):
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting and later caller
            self._fail(exc)

    def _serve(self):
        timeout = self._interval if self._idle is not None else None
        while True:
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._idle()
                continue
            if item is None:
                return
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:
                    future.set_exception(exc)
                    raise
                future.set_result(result)

    def _fail(self, exc: BaseException):
        with self._lock:
            self._error = exc
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return
                if item is not None and item[0].set_running_or_notify_cancel():
                    item[0].set_exception(exc)

    def shutdown(self, wait: bool = True):
        """Stop after the queued work (``wait``: and wait for it); the thread is a daemon, so
        an error path that does not wait never hangs on it."""
        self._queue.put(None)
        sys.setswitchinterval(self._switch_interval)
        if wait:
            self._thread.join()


class RehearsalBuffer:
    def __init__(self, world, cfg, num_classes: int, sample_shape, num_train: int, seed: int,
                 dtype="float32"):
        self.cfg, self.world = cfg, world
        self.r, self.c = cfg.representatives, cfg.candidates
        K = slots_per_class(cfg, num_classes, num_train, world.size)
        layout = ShardLayout(num_classes, K, sample_shape, dtype)
        warning = over_budget(cfg, num_classes, num_train, world.size, layout.sample_bytes)
        if warning and world.is_root:
            sys.stderr.write(f"hpccl: warning: {warning}\n")
        self._group = buffer_group(world, cfg.ranks_per_node)
        self.shard = Shard(world.comm, self._group, layout, numpy_rng(seed, "reservoir", world.rank),
                           transport=cfg.transport)
        if world.is_root and self.shard.windows.transport != "none":
            sys.stderr.write(f"hpccl: rehearsal transport: {self.shard.windows.transport_note}\n")
        self.sampler = GlobalSampler(self.shard, numpy_rng(seed, "rehearsal_draw", world.rank))
        self._pick = numpy_rng(seed, "candidates", world.rank)
        serve = progress_function(self.shard.windows)
        if cfg.async_updates or serve is not None:
            require_thread_multiple("the rehearsal buffer's background thread"
                                    + ("" if cfg.async_updates else " (it answers reads from other nodes)"),
                                    "or, on one node, set 'rehearsal.async: false'")
        self._pool = (RehearsalThread(serve, cfg.progress_ms / 1e3)
                      if cfg.async_updates or serve is not None else None)
        self._async = cfg.async_updates
        self._next = None
        self._cand = None
        self._active = False
        # Two outputs used in turn (double buffering): the fetch for mini-batch i+1 fills one
        # while augment() copies mini-batch i's representatives out of the other.
        self._outputs = [self.sampler.new_output(self.r) for _ in range(2)]
        self._turn = 0
        # Work done by the buffer (in the thread when async), for the scaling model.
        self._cost = {"fetch_s": 0.0, "fetched": 0, "insert_s": 0.0, "offered": 0}

    def _fetch(self):
        self._turn ^= 1
        t0 = time.perf_counter()
        reps = self.sampler.sample(self.r, out=self._outputs[self._turn])
        self._cost["fetch_s"] += time.perf_counter() - t0
        self._cost["fetched"] += len(reps[1])
        return reps

    def _insert(self, cx, cy):
        t0 = time.perf_counter()
        self.shard.insert(cx, cy)
        self._cost["insert_s"] += time.perf_counter() - t0
        self._cost["offered"] += len(cy)

    # -- per task ---------------------------------------------------------------------------------
    def begin_task(self, task: int):
        self._drain()
        self._active = task >= self.cfg.start_task
        if self._async and self._active:
            self._next = self._pool.submit(self._refresh_then_fetch)
        elif self._active:
            self.sampler.refresh()

    def end_task(self, path: str | None = None, **attrs):
        """Finish pending work; write the shard to HDF5 (inspection and restart)."""
        self._drain()
        if path is not None:
            self.shard.save(path, **attrs)

    # -- per iteration ------------------------------------------------------------------------------
    # Two calls, so the training loop can time the wait apart from the mixing work.
    def representatives(self, xb: torch.Tensor, yb: torch.Tensor):
        """This mini-batch's representatives (None before start_task). Asynchronous: blocks
        only while the background fetch is unfinished. Synchronous: fetches now, then
        inserts this batch's candidates, so all of the buffer's work is exposed here."""
        self._check_thread()
        self._cand = self._candidates(xb, yb)
        if self._async:
            return self._next.result() if self._next is not None else None
        reps = self._fetch() if self._active else None
        self._insert(*self._cand)
        return reps

    def mix(self, xb: torch.Tensor, yb: torch.Tensor, reps):
        """Hand this batch's candidates to the background thread (which then fetches the
        next batch's representatives) and append ``reps`` to the CPU batch."""
        if self._async:
            self._next = self._pool.submit(self._insert_then_fetch, *self._cand)
        self._cand = None
        if reps is None or len(reps[1]) == 0:
            return xb, yb
        return (torch.cat([xb, torch.from_numpy(reps[0]).to(xb.dtype)]),
                torch.cat([yb, torch.from_numpy(reps[1])]))

    def augment(self, xb: torch.Tensor, yb: torch.Tensor):
        """``representatives`` then ``mix``: the batch with r representatives appended."""
        return self.mix(xb, yb, self.representatives(xb, yb))

    def _candidates(self, xb, yb):
        n = len(yb)
        pick = self._pick.choice(n, size=min(self.c, n), replace=False) if self.c < n else np.arange(n)
        return xb[pick].numpy().copy(), yb[pick].numpy().copy()     # in the samples' own dtype

    def _refresh_then_fetch(self):
        self.sampler.refresh()      # every total, once a task: the snapshot starts exact
        return self._fetch()

    def _insert_then_fetch(self, cx, cy):
        self._insert(cx, cy)
        return self._fetch() if self._active else None

    def _check_thread(self):
        """Raise the rehearsal thread's error here, in the training loop: in synchronous mode
        nothing else would notice that the thread answering other nodes' reads is gone."""
        if self._pool is not None:
            self._pool.raise_if_failed()

    def _drain(self):
        self._check_thread()
        if self._next is not None:
            future, self._next = self._next, None
            future.result()

    # -- checkpoints -------------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything but the shard's samples (saved to HDF5 apart): RNG states, the task's
        activity, and the representatives already fetched for the next mini-batch, so a
        resumed run draws exactly what an uninterrupted one would have."""
        pending = None
        if self._next is not None:
            reps = self._next.result()
            pending = None if reps is None else (reps[0].copy(), reps[1].copy())
        return {"active": self._active, "pending": pending, "has_pending": self._next is not None,
                "snapshot": self.sampler.state(),
                "rng": {name: getattr(self, attr).bit_generator.state for name, attr in
                        (("draw", "sampler_rng"), ("candidates", "_pick"))}}

    @property
    def sampler_rng(self):
        return self.sampler.rng

    def load_state(self, state: dict) -> None:
        from concurrent.futures import Future
        self._active = state["active"]
        self.sampler.rng.bit_generator.state = state["rng"]["draw"]
        self._pick.bit_generator.state = state["rng"]["candidates"]
        if "snapshot" in state:
            self.sampler.load_state(state["snapshot"])
        self._next = None
        if state["has_pending"]:
            done = Future()
            done.set_result(state["pending"])
            if self._async:
                self._next = done

    def redistribute(self, files: list[str], active: bool, seed: int) -> dict:
        """Collective: fill the shards of this (new) set of ranks from the shard files a
        checkpoint's ranks wrote (hpccl.continual.rehearsal.redistribute); returns what was kept and
        dropped, for the log."""
        from hpccl.continual.rehearsal import redistribute as rd
        lay = self.shard.layout
        deal = None
        if self.world.is_root:
            labels, seen, old_slots = rd.read_inventory(files, lay.num_classes, lay.sample_shape)
            deal = rd.plan(labels, seen, self.world.size, lay.slots, numpy_rng(seed, "redistribute"))
            deal.report["slots_per_class_from"] = old_slots
        deal = self.world.comm.bcast(deal, root=0)
        x, y = rd.read_taken(files, deal.takes[self.world.rank])
        self._drain()
        self.shard.fill(x, y, deal.seen[self.world.rank])
        self.world.barrier()       # every shard is filled before any rank reads totals
        self._active = active
        if self._active and self._async:
            self._next = self._pool.submit(self._refresh_then_fetch)
        elif self._active:
            self.sampler.refresh()
        return deal.report

    # -- facts and life cycle ------------------------------------------------------------------------
    def footprint(self) -> dict:
        lay = self.shard.layout
        return {"buffer_stored": self.shard.stored, "buffer_bytes_allocated": lay.nbytes,
                "buffer_bytes_stored": self.shard.stored * lay.sample_bytes,
                "buffer_transport": self.shard.windows.transport,
                "buffer_remote_ops": self.shard.windows.ops, "buffer_remote_bytes": self.shard.windows.bytes,
                "buffer_remote_rounds": self.shard.windows.rounds,
                "buffer_slots_per_class": lay.slots,
                "buffer_fetch_s": self._cost["fetch_s"], "buffer_fetched": self._cost["fetched"],
                "buffer_insert_s": self._cost["insert_s"], "buffer_offered": self._cost["offered"]}

    def close(self, ok: bool = True):
        """Stop the thread; on success also free the windows (a collective call, so it is
        skipped on the error path, where MPI_Abort follows and must not wait for peers)."""
        if self._pool is not None:
            pool = self._pool
            try:
                if ok:
                    self._drain()
            finally:
                self._pool = None
                pool.shutdown(wait=ok and pool.error is None)
        if ok:
            self.shard.free()
            if self._group is not self.world.node_comm:
                self._group.Free()
