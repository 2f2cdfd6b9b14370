"""Memory of every rank's shard, exposed for one-sided reads by all ranks.

Ranks are grouped into nodes. Inside a node the shards live in one MPI shared-memory window
(``Win.Allocate_shared``): a reader loads a peer's samples directly, under a shared lock.
Across nodes a reader uses ``MPI_Get`` on a world window under a passive-target shared lock,
with one indexed datatype per target, so r samples from one owner cost one RMA operation.

Which windows exist depends on the grouping, so that each case uses the cheapest one:
- one node: the shared window only;
- one rank per node (also the 'every rank its own node' test setting): a world window from
  ``Win.Allocate`` only (this works over OpenMPI's TCP transport);
- several nodes with several ranks each: the shared window, and a world window created over
  the same memory with ``Win.Create``.

Writers (only the owner writes its shard) hold an exclusive lock on their own memory in every
window that exposes it; readers hold a shared lock, so a reader never sees a torn sample.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from hpccl.errors import HpcclError
from hpccl.runtime import mpi


class ShardWindows:
    def __init__(self, comm, group_comm, nbytes: int):
        MPI = mpi()
        self.MPI = MPI
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.nbytes = int(nbytes)
        self.group_ranks = group_comm.allgather(self.rank)       # world ranks of my node, local order
        leaders = comm.allgather(self.group_ranks[0])
        self.same_node = [leaders[r] == self.group_ranks[0] for r in range(self.size)]
        self.num_nodes = len(set(leaders))
        self.node_win = self.world_win = None
        self._views: dict[int, np.ndarray] = {}
        self._freed = False
        if group_comm.Get_size() > 1 or self.num_nodes == 1:
            self.node_win = MPI.Win.Allocate_shared(self.nbytes, 1, comm=group_comm)
            for i, r in enumerate(self.group_ranks):
                buf, _ = self.node_win.Shared_query(i)
                self._views[r] = np.frombuffer(buf, dtype=np.uint8, count=self.nbytes)
        if self.num_nodes > 1:
            try:
                if self.node_win is not None:
                    self.world_win = MPI.Win.Create(self.node_win.tomemory(), 1, comm=comm)
                else:
                    self.world_win = MPI.Win.Allocate(self.nbytes, 1, comm=comm)
                    self._views[self.rank] = np.frombuffer(self.world_win.tomemory(), dtype=np.uint8,
                                                           count=self.nbytes)
            except MPI.Exception as e:
                raise HpcclError(
                    f"the MPI library could not create the rehearsal buffer's RMA window across "
                    f"nodes ({e.Get_error_string()}). HINT: on a network without RDMA support, set "
                    "'rehearsal.ranks_per_node: 1' (one window per rank), or use an MPI built with "
                    "UCX/OFI one-sided support.") from None
        self.local = self._views[self.rank]
        self._my_local_index = self.group_ranks.index(self.rank)

    # -- the owner ----------------------------------------------------------------------------
    @contextmanager
    def write_lock(self):
        """Exclusive access to this rank's own memory (held only by the owner to write)."""
        self._check()
        MPI = self.MPI
        if self.node_win is not None:
            self.node_win.Lock(self._my_local_index, MPI.LOCK_EXCLUSIVE)
        if self.world_win is not None:
            self.world_win.Lock(self.rank, MPI.LOCK_EXCLUSIVE)
        try:
            yield self.local
        finally:
            if self.world_win is not None:
                self.world_win.Sync()
                self.world_win.Unlock(self.rank)
            if self.node_win is not None:
                self.node_win.Sync()  # make the stores visible to direct loads on the node
                self.node_win.Unlock(self._my_local_index)

    # -- readers ------------------------------------------------------------------------------
    def read_rows(self, target: int, base: int, rowbytes: int, rows, out=None) -> np.ndarray:
        """Rows ``rows`` of the [*, rowbytes] byte table at ``base`` in ``target``'s shard: one
        gather of direct loads (same node) or one MPI_Get with an indexed datatype (other
        node), under a shared lock."""
        self._check()
        MPI = self.MPI
        rows = np.asarray(rows, dtype=np.int64)
        if out is None:
            out = np.empty((len(rows), rowbytes), dtype=np.uint8)
        if len(rows) == 0:
            return out
        if self.same_node[target]:
            nrows = (self.nbytes - base) // rowbytes
            table = self._views[target][base:base + nrows * rowbytes].reshape(nrows, rowbytes)
            # Without a shared window (one rank per node) the only same-node shard is our
            # own, which the world window exposes.
            win, i = ((self.node_win, self.group_ranks.index(target)) if self.node_win is not None
                      else (self.world_win, target))
            win.Lock(i, MPI.LOCK_SHARED)
            try:
                win.Sync()
                # One memcpy per row: measured 2x faster than np.take / fancy indexing here.
                for j, row in enumerate(rows.tolist()):
                    out[j] = table[row]
            finally:
                win.Unlock(i)
            return out
        offsets = (base + rows * rowbytes).tolist()
        dtype = MPI.BYTE.Create_hindexed_block(rowbytes, offsets).Commit()
        try:
            self.world_win.Lock(target, MPI.LOCK_SHARED)
            try:
                self.world_win.Get([out, MPI.BYTE], target, target=(0, 1, dtype))
            finally:
                self.world_win.Unlock(target)
        finally:
            dtype.Free()
        return out

    def read_headers(self, nbytes: int) -> np.ndarray:
        """The first ``nbytes`` of every rank's shard, as [size, nbytes] uint8."""
        self._check()
        MPI = self.MPI
        out = np.empty((self.size, nbytes), dtype=np.uint8)
        remote = [r for r in range(self.size) if not self.same_node[r]]
        for r in range(self.size):
            if self.same_node[r]:
                out[r] = self.read_rows(r, 0, nbytes, [0])[0]
        if remote:
            # One access epoch for all remote headers: the Gets are issued back to back.
            self.world_win.Lock_all()
            try:
                for r in remote:
                    self.world_win.Get([out[r], MPI.BYTE], r, target=(0, nbytes, MPI.BYTE))
            finally:
                self.world_win.Unlock_all()
        return out

    # -- life cycle ---------------------------------------------------------------------------
    def _check(self):
        if self._freed:
            raise RuntimeError("rehearsal buffer windows were already freed")

    def free(self):
        """Collective: every rank must call it. Later reads or writes fail clearly."""
        if self._freed:
            return
        self._freed = True
        self._views.clear()
        self.local = None
        if self.world_win is not None:
            self.world_win.Free()
        if self.node_win is not None:
            self.node_win.Free()
