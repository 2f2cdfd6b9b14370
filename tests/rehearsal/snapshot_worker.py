"""Runs on 2 ranks under mpirun (started by test_buffer_state.py): the buffer's state() and
load_state(), as a checkpoint saves and a resume restores them, with a snapshot of the other
rank's total that is stale on purpose, every rank its own node, reads by messages.

Rank 0 snapshots rank 1's total (12 samples), rank 1 then stores 9 more; the totals of other
nodes are re-read only in turn, one draw at a time, so rank 0's next draw still picks among
rank 1's first 12. Rank 0 saves its state, draws DRAWS times, restores the saved state and
draws again: a resume must draw the same samples. Rank 0 writes both lists to OUT_JSON.

Usage: snapshot_worker.py OUT_JSON"""

import copy
import json
import socket
import sys

import numpy as np
import torch

from hpccl.config import RehearsalConfig
from hpccl.continual.rehearsal.buffer import RehearsalBuffer
from hpccl.core.mpi import mpi
from hpccl.core.runtime import World, abort_on_error

DRAWS, R = 4, 6

MPI = mpi()
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()


def store(buffer, first_id, per_class):
    """per_class samples of each of 3 classes, x[0] a global id (below the 8 slots per class:
    nothing is replaced, so records below a total never change)."""
    y = np.repeat(np.arange(3), per_class)
    x = np.zeros((len(y), 4), dtype=np.float32)
    x[:, 0] = rank * 1000 + first_id + np.arange(len(y))
    assert buffer.shard.insert(x, y) == len(y)


def draws(buffer):
    return [sorted(buffer.sampler.sample(R)[0][:, 0].astype(int).tolist()) for _ in range(DRAWS)]


def main():
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    world = World(comm=comm, rank=rank, size=size, node_comm=node, local_rank=node.Get_rank(),
                  local_size=node.Get_size(), node_index=0, num_nodes=1,
                  hostname=socket.gethostname(), device=torch.device("cpu"))
    cfg = RehearsalConfig(slots_per_class=8, candidates=4, representatives=R, start_task=0,
                          async_updates=False, ranks_per_node=1, transport="messages")
    buffer = RehearsalBuffer(world, cfg, num_classes=3, sample_shape=(4,), num_train=300, seed=7)
    store(buffer, 0, 4)
    comm.Barrier()
    buffer.begin_task(0)             # every total read afresh: the snapshot is exact here
    # No draw before the save: the saved state holds no pool of uniforms yet, and restoring
    # it must drop the pool the draws made since (it was kept, and the draws differed).
    comm.Barrier()
    if rank == 1:
        store(buffer, 100, 3)
    comm.Barrier()
    result = None
    if rank == 0:
        saved = copy.deepcopy(buffer.state())
        before = draws(buffer)
        buffer.load_state(copy.deepcopy(saved))
        after = draws(buffer)
        result = {"snapshot": saved["snapshot"]["totals"], "before": before, "after": after}
    comm.Barrier()                   # rank 1 answers rank 0's reads until here
    buffer.end_task()
    buffer.close()
    if rank == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(result, f)


abort_on_error(main)
