"""Runs on every rank under mpirun (started by test_checkpoint_writer.py).
Usage: checkpoint_worker.py SCENARIO RUN_DIR

slow: rank 1's extra file takes 1.5 s to write; every rank polls for 4 s; rank 0 writes
      RUN_DIR/result.json with its stall and when the checkpoint appeared.
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


def slow_write(path):
    time.sleep(1.5)
    with open(path, "w") as f:
        f.write("x")
    with open(os.path.join(run_dir, "rank1-done"), "w") as f:
        f.write(repr(time.time()))


def failing_write(path):
    raise OSError(28, "No space left on device")


try:
    if scenario == "slow":
        files = {"slow.txt": slow_write} if rank == 1 else {}
        stall = writer.save({"task": 1, "epoch": 0, "reason": "test"}, shared, {"r": rank}, files)
        shared["model"]["w"] += 1          # training goes on: the checkpoint keeps the copy
        appeared = None
        t_end = time.time() + 4
        while time.time() < t_end:
            writer.poll()
            if appeared is None and os.path.exists(os.path.join(run_dir, "checkpoint", "state.json")):
                appeared = time.time()
            time.sleep(0.05)
        writer.close()
        if rank == 0:
            with open(os.path.join(run_dir, "result.json"), "w") as f:
                json.dump({"stall": stall, "appeared": appeared}, f)
    else:
        writer.save({"task": 1, "epoch": 0, "reason": "test"}, shared, {"r": rank}, wait=True)
        files = {"buffer.h5": failing_write} if rank == 1 else {}
        writer.save({"task": 2, "epoch": 0, "reason": "test"}, shared, {"r": rank}, files)
        writer.close()
except Exception as e:                       # as hpccl.core.runtime.abort_on_error does
    print(f"error on rank {rank}: {e}", file=sys.stderr, flush=True)
    comm.Abort(3)
