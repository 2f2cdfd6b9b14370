"""Runs on every rank under mpirun (started by test_checkpoint_promises.py).
Usage: checkpoint_promises_worker.py BASE_DIR

Three scenarios, one after the other, each in its own run directory under BASE_DIR (one
launch for all three: starting ranks costs more than the scenarios). Rank 0 writes
BASE_DIR/result.json: per scenario, what it saw, or the error it met.

stale:  BASE_DIR/stale holds a committed checkpoint/ and the leftovers of a save killed while
        writing (checkpoint.newK/ without state.json); a writer starts there, then saves.
rotate: keep 3 and keep 4, six committed saves each; the checkpoint directories and the task
        each holds after every save.
queue:  a second save while the first is still being written (rank 1's extra file waits until
        rank 0 is inside the second save, then takes a while more): the order of events on
        each rank, on one clock (CLOCK_MONOTONIC is system-wide).
"""

import json
import os
import sys
import threading
import time
import traceback
from types import SimpleNamespace

import torch

from hpccl.core import checkpoint
from hpccl.core.runtime import mpi

MPI = mpi()
comm = MPI.COMM_WORLD
rank = comm.Get_rank()
world = SimpleNamespace(comm=comm, rank=rank, size=comm.Get_size(), is_root=rank == 0,
                        barrier=comm.Barrier)
base = sys.argv[1]
shared = {"model": {"w": torch.ones(10)}}


def listing(run_dir):
    """{checkpoint directory: the task in its state.json, or None} for checkpoint*, on rank 0
    (the rank that moves them)."""
    if rank != 0:
        return None
    found = {}
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("checkpoint"):
            state = os.path.join(run_dir, name, "state.json")
            found[name] = json.load(open(state))["task"] if os.path.exists(state) else None
    return found


def stale():
    run_dir = os.path.join(base, "stale")
    writer = checkpoint.CheckpointWriter(run_dir, world, keep=2)
    after_start = listing(run_dir)      # the constructor is collective: rank 0 has cleaned up
    comm.Barrier()                      # listed before any rank starts writing checkpoint.new1
    writer.save({"task": 1, "epoch": 0, "reason": "test"}, shared, {"r": rank}, wait=True)
    writer.close()
    return {"after_start": after_start, "after_save": listing(run_dir),
            "files": rank == 0 and sorted(os.listdir(os.path.join(run_dir, "checkpoint")))}


def rotate():
    out = {}
    for keep in (3, 4):
        run_dir = os.path.join(base, f"rotate{keep}")
        os.makedirs(run_dir, exist_ok=True)
        writer = checkpoint.CheckpointWriter(run_dir, world, keep=keep)
        seen = []
        for task in range(1, 7):
            writer.save({"task": task, "epoch": 0, "reason": "test"}, shared, {"r": rank, "task": task},
                        wait=True)
            seen.append(listing(run_dir))
            comm.Barrier()              # listed before any rank starts the next checkpoint.newK
        writer.close()
        ranks = rank == 0 and {
            name: [torch.load(checkpoint.rank_file(os.path.join(run_dir, name), r), weights_only=False)["task"]
                   for r in range(world.size)] for name in seen[-1]}
        out[keep] = {"after_each_save": seen, "rank_files": ranks}
    return out


def queue():
    run_dir = os.path.join(base, "queue")
    os.makedirs(run_dir, exist_ok=True)
    events = []
    inside = os.path.join(run_dir, "rank0-inside-second-save")

    def note(what):
        events.append((what, time.monotonic()))

    def first_write(path):
        note("first write starts")
        if rank == 1:
            deadline = time.monotonic() + 60
            while not os.path.exists(inside) and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)              # still writing after rank 0 asked for the next one
        with open(path, "w") as f:
            f.write("first")
        note("first write ends")

    def second_write(path):
        note("second write starts")
        with open(path, "w") as f:
            f.write("second")

    def committed(state, stall, write):
        note(f"commit {state['task']}")

    writer = checkpoint.CheckpointWriter(run_dir, world, keep=2, on_commit=committed if rank == 0 else None)
    writer.save({"task": 1, "epoch": 0, "reason": "test"}, shared, {"r": rank}, {"first.txt": first_write})
    note("first save returned")
    if rank == 0:
        open(inside, "w").close()
    writer.save({"task": 2, "epoch": 0, "reason": "test"}, shared, {"r": rank}, {"second.txt": second_write})
    note("second save returned")
    writer.close()
    note("closed")
    for thread in threading.enumerate():     # a writer that lost track of a write: let it end
        if thread.name == "hpccl-checkpoint":
            thread.join(60)
    return {"events": comm.gather(events, root=0), "after": listing(run_dir),
            "files": rank == 0 and {name: sorted(os.listdir(os.path.join(run_dir, name)))
                                    for name in ("checkpoint", "checkpoint.prev1")
                                    if os.path.isdir(os.path.join(run_dir, name))}}


results = {}
for name, scenario in (("stale", stale), ("rotate", rotate), ("queue", queue)):
    try:
        results[name] = scenario()
    except Exception:       # the other rank may wait in a collective: end both, as a job would
        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
    comm.Barrier()
if rank == 0:
    with open(os.path.join(base, "result.json"), "w") as f:
        json.dump(results, f)
