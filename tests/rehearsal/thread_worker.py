"""Runs on every rank under mpirun (started by test_rehearsal_thread.py): the real
RehearsalBuffer in a training-like loop (draw, mix, a metrics allreduce per mini-batch), every
rank its own node, reads by messages, so each rank's rehearsal thread answers the others.

Usage: thread_worker.py SCENARIO MODE OUT_JSON
SCENARIO: 'idle-fails' (rank 1's idle progress call raises after a few calls, as an MPI
error in progress() would), 'work-fails' (rank 1's background insert raises), or 'clean'
(nothing fails). MODE: 'async' or 'sync' (``rehearsal.async``).
The loop runs at most ITERATIONS mini-batches; rank 0 then writes what every rank drew."""

import json
import socket
import sys
import time

import numpy as np
import torch

from hpccl.config import RehearsalConfig
from hpccl.continual.rehearsal.buffer import RehearsalBuffer
from hpccl.continual.rehearsal.shard import Shard
from hpccl.continual.rehearsal.windows import ShardWindows
from hpccl.core.mpi import mpi
from hpccl.core.runtime import World, abort_on_error

ITERATIONS = 400
FAULT = "injected fault in the rehearsal thread"

MPI = mpi()
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
scenario, mode, out_path = sys.argv[1:4]


def inject():
    """Patch the class before the buffer exists: its thread binds the method at start."""
    if scenario == "idle-fails":
        progress, calls = ShardWindows.progress, [0]

        def failing_progress(self):
            calls[0] += 1
            if calls[0] > 5:
                raise RuntimeError(f"{FAULT}: progress() on rank {rank}")
            return progress(self)
        ShardWindows.progress = failing_progress
    elif scenario == "work-fails":
        insert, calls = Shard.insert, [0]

        def failing_insert(self, x, y):
            calls[0] += 1
            if calls[0] > 5:
                raise RuntimeError(f"{FAULT}: insert() on rank {rank}")
            return insert(self, x, y)
        Shard.insert = failing_insert


def main():
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    world = World(comm=comm, rank=rank, size=size, node_comm=node, local_rank=node.Get_rank(),
                  local_size=node.Get_size(), node_index=0, num_nodes=1,
                  hostname=socket.gethostname(), device=torch.device("cpu"))
    if rank == 1:
        inject()
    cfg = RehearsalConfig(slots_per_class=8, candidates=4, representatives=3, start_task=0,
                          async_updates=mode == "async", ranks_per_node=1, transport="messages")
    buffer = RehearsalBuffer(world, cfg, num_classes=3, sample_shape=(4,), num_train=300, seed=7)
    data = torch.Generator().manual_seed(rank)
    buffer.begin_task(0)
    drawn = []
    for step in range(ITERATIONS):
        x = torch.rand(8, 4, generator=data)
        y = torch.randint(0, 3, (8,), generator=data)
        x[:, 0] = rank * 100000 + step * 8 + torch.arange(8)      # a global id per sample
        reps = buffer.representatives(x, y)
        xb, _ = buffer.mix(x, y, reps)
        drawn.append(xb[8:, 0].tolist())
        time.sleep(0.002)                        # the forward and backward pass: the thread idles
        world.allreduce_sum(np.ones(1))          # the gradient allreduce's place in the loop
    buffer.end_task()
    buffer.close()
    everyone = comm.gather(drawn, root=0)
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump({"drawn": everyone, "finished": True}, f)


abort_on_error(main)
