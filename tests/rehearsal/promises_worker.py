"""Runs on every rank under mpirun (started by test_buffer_promises.py); rank 0 writes a JSON
result per part, OUT.staleness and OUT.free. Usage: promises_worker.py MODE[+TRANSPORT] OUT
MODE: 'remote' (every rank its own node) or 'pairs' (pseudo-nodes of 2 ranks), as in
buffer_worker.py.

staleness: shards that grow while others draw. In each step every rank inserts (rank 2k: 1
    sample, rank 2k+1: 2, so totals differ), then, after a barrier, draws once; a second
    barrier keeps the next inserts out of the draw. Every rank reports its snapshot of the
    totals after each draw: rank q's true total after step s is (s + 1) * (1 + q % 2).
free: then every rank frees its shard and tries each read and write; the outcome of each.
"""

import json
import sys

import numpy as np

from hpccl.continual.rehearsal.buffer import RehearsalThread, progress_function
from hpccl.continual.rehearsal.sampler import GlobalSampler
from hpccl.continual.rehearsal.shard import Shard, ShardLayout
from hpccl.core.runtime import mpi

MPI = mpi()
comm = MPI.COMM_WORLD


def _abort(kind, value, tb):
    """An error on one rank ends every rank at once (peers would wait in a collective)."""
    sys.__excepthook__(kind, value, tb)
    sys.stderr.flush()
    comm.Abort(1)


sys.excepthook = _abort
rank, size = comm.Get_rank(), comm.Get_size()
mode, out_path = sys.argv[1:3]
mode, _, transport = mode.partition("+")
group = {"remote": lambda: comm.Split(rank, rank), "pairs": lambda: comm.Split(rank // 2, rank)}[mode]()
STEPS = 12

layout = ShardLayout(1, 2 * STEPS, (2,))
shard = Shard(comm, group, layout, np.random.default_rng([0, rank]), transport=transport or "rma")
sampler = GlobalSampler(shard, np.random.default_rng([1, rank]))
serve = progress_function(shard.windows)
thread = RehearsalThread(serve, 1e-3) if serve is not None else None   # answers reads, as in training

snapshots = []
for step in range(STEPS):
    k = 1 + rank % 2
    x = np.array([[rank, shard.stored + i] for i in range(k)], dtype=np.float32)
    shard.insert(x, np.zeros(k, dtype=np.int64))
    comm.Barrier()
    sampler.sample(1)
    snapshots.append(sampler.totals.tolist())
    comm.Barrier()

got = comm.gather({"snapshots": snapshots, "same_node": shard.windows.same_node.tolist()}, root=0)
if rank == 0:              # written before the frees, which a broken build may not survive
    with open(out_path + ".staleness", "w") as f:
        json.dump(got, f)

if thread is not None:
    thread.shutdown()
shard.free()
outcomes = {}
attempts = {
    "sample": lambda: sampler.sample(1),
    "refresh": lambda: sampler.refresh(),
    "insert": lambda: shard.insert(np.zeros((1, 2), np.float32), np.zeros(1, np.int64)),
    "clear": lambda: shard.clear(),
    "snapshot": lambda: shard.snapshot(),
    "samples_of_class": lambda: shard.samples_of_class(0),
    "free again": lambda: shard.free(),
}
for name, attempt in attempts.items():
    try:
        attempt()
        outcomes[name] = "no error"
    except Exception as e:        # noqa: BLE001 - the kind and message are the result
        outcomes[name] = f"{type(e).__name__}: {e}"

got = comm.gather(outcomes, root=0)
if rank == 0:
    with open(out_path + ".free", "w") as f:
        json.dump(got, f)
