"""Runs on every rank under mpirun (started by test_checkpoint_writer.py).
Usage: checkpoint_worker.py SCENARIO RUN_DIR

slow: rank 1's extra file cannot be finished before rank 0 is back from save() (60 s at
      most); every rank polls until the checkpoint appears; rank 0 writes RUN_DIR/result.json
      with its stall, how long save() took, and when the checkpoint appeared; rank 1 writes
      RUN_DIR/rank1-done: when its file was written, and whether rank 0 was back by then.
fail: a first checkpoint commits; in the second, rank 1's file write raises; the rank then
      aborts the job as hpccl's ranks do on an error.
"""

import json
import os
import sys
import time
from types import SimpleNamespace

import torch

from hpccl.core import checkpoint
from hpccl.core.runtime import mpi

MPI = mpi()
comm = MPI.COMM_WORLD
rank = comm.Get_rank()
world = SimpleNamespace(comm=comm, rank=rank, size=comm.Get_size(), is_root=rank == 0,
                        barrier=comm.Barrier)
scenario, run_dir = sys.argv[1:3]
writer = checkpoint.CheckpointWriter(run_dir, world, keep=2)
shared = {"model": {"w": torch.ones(1000)}}


RANK0_BACK = os.path.join(run_dir, "rank0-back")
WAIT_S = 60          # far above any stall of a loaded machine: only a rank 0 that waits for
                     # this write (a synchronous writer) leaves it waiting that long


def slow_write(path):
    deadline = time.monotonic() + WAIT_S
    while not os.path.exists(RANK0_BACK) and time.monotonic() < deadline:
        time.sleep(0.01)
    with open(path, "w") as f:
        f.write("x")
    with open(os.path.join(run_dir, "rank1-done"), "w") as f:
        json.dump({"at": time.time(), "rank0_was_back": os.path.exists(RANK0_BACK)}, f)


def failing_write(path):
    raise OSError(28, "No space left on device")


try:
    if scenario == "slow":
        files = {"slow.txt": slow_write} if rank == 1 else {}
        t0 = time.perf_counter()
        stall = writer.save({"task": 1, "epoch": 0, "reason": "test"}, shared, {"r": rank}, files)
        save_s = time.perf_counter() - t0
        shared["model"]["w"] += 1          # training goes on: the checkpoint keeps the copy
        if rank == 0:
            open(RANK0_BACK, "w").close()
        appeared = None
        deadline = time.monotonic() + WAIT_S + 60
        while appeared is None and time.monotonic() < deadline:
            writer.poll()                  # at every epoch end, in training
            if os.path.exists(os.path.join(run_dir, "checkpoint", "state.json")):
                appeared = time.time()
            time.sleep(0.05)
        writer.close()
        if rank == 0:
            with open(os.path.join(run_dir, "result.json"), "w") as f:
                json.dump({"stall": stall, "save_s": save_s, "appeared": appeared}, f)
    else:
        writer.save({"task": 1, "epoch": 0, "reason": "test"}, shared, {"r": rank}, wait=True)
        files = {"buffer.h5": failing_write} if rank == 1 else {}
        writer.save({"task": 2, "epoch": 0, "reason": "test"}, shared, {"r": rank}, files)
        writer.close()
except Exception as e:                       # as hpccl.core.runtime.abort_on_error does
    print(f"error on rank {rank}: {e}", file=sys.stderr, flush=True)
    comm.Abort(3)
