"""Remote reads of shards with one-sided MPI gets: the transport for networks whose MPI
serves ``MPI_Get`` (UCX, OFI, RDMA NICs; over TCP with the owner's rehearsal thread's help).

One world window exposes every shard (``Win.Create`` over the node's shared memory, or
``Win.Allocate`` when every node holds one rank), in one long-lived passive epoch opened
with ``Lock_all(MODE_NOCHECK)``: no lock word, no message to anyone per read. Why no
``Win_lock``: under MPICH (Cray MPICH too) and Open MPI's UCX component it completes only
when the *target* enters MPI, so a reader stalls while its target runs a GPU kernel.

A round is a set of contiguous ``MPI_Rget``\\ s (one per run of adjacent records, one per
total asked for) issued together and waited for with ``Testall``: plain byte ranges that a
NIC serves without the target CPU (no derived datatype).

On transports that cannot serve a get without the target CPU (TCP: UCX's tcp transport,
MPICH's sockets), the owner's rehearsal thread calls :meth:`serve` while idle (buffer.py),
so a busy main thread never stalls readers.
"""

from __future__ import annotations

import time

import numpy as np

from hpccl.core.mpi import mpi

# Calls to the progress engine per idle wake-up: over TCP each pending get is served by a
# separate call, so one call per wake-up left readers waiting several wake-ups per draw
# (measured: quickstart at 2 x 2 ranks over UCX TCP, 15 s with 1 call, 3.7 s with 32).
_PROBES_PER_WAKE = 32
# Waiting for a round: test this often before sleeping, then sleep at most this long.
SPINS = 20
MAX_PAUSE_S = 2e-4


def wait_polling(test, idle=None) -> None:
    """Until ``test()`` is true. Polls with a growing sleep instead of spinning in MPI: a
    transfer served in microseconds (RDMA) returns at once, and one that waits for a busy
    target (TCP) leaves the cores to the ranks' training threads. ``idle`` runs between
    polls (the message transport answers other readers there)."""
    spins, pause = 0, 0.0
    while not test():
        if idle is not None:
            idle()
        spins += 1
        if spins > SPINS:
            pause = min(MAX_PAUSE_S, pause * 2 or 2e-6)
            time.sleep(pause)


class RmaTransport:
    name = "rma"

    def __init__(self, comm, node_memory, nbytes: int):
        """Collective. ``node_memory``: this rank's part of its node's shared window, or None
        (then the window allocates the shard's memory: ``self.local``)."""
        MPI = self.MPI = mpi()
        self.local = None
        if node_memory is not None:
            self.win = MPI.Win.Create(node_memory, 1, comm=comm)
        else:
            self.win = MPI.Win.Allocate(nbytes, 1, comm=comm)
            self.local = np.frombuffer(self.win.tomemory(), dtype=np.uint8, count=nbytes)
        self.win.Lock_all(MPI.MODE_NOCHECK)
        self.ops = self.bytes = self.rounds = 0
        self._requests: list = []
        self._words = np.empty(0, dtype=np.uint64)
        self._word_ranks: list = []
        # The progress calls use a communicator of our own, so they can never match (or be
        # matched by) the job's own messages. A receive nobody sends: testing it runs the
        # full progress engine (MPICH's Iprobe does not serve RMA requests; MPI_Test does).
        self._progress_comm = comm.Dup()
        self._progress_buf = np.empty(1, dtype=np.uint8)
        self._progress_req = self._progress_comm.Irecv([self._progress_buf, MPI.BYTE],
                                                       source=MPI.ANY_SOURCE, tag=1)

    def start(self, table, groups, out: np.ndarray, total_ranks) -> None:
        """Issue one round: for each (target, a, b, slots) of ``groups`` the records into
        ``out[a:b]`` (one get per run of adjacent slots), and the total of each of
        ``total_ranks`` (one 8-byte get each)."""
        self._word_ranks = [int(t) for t in total_ranks]
        self._words = np.empty(len(self._word_ranks), dtype=np.uint64)
        for j, t in enumerate(self._word_ranks):
            self._get(self._words[j:j + 1].view(np.uint8), t, 0)
        rb = table.record_bytes
        for target, a, b, slots in groups:
            bounds = [0, *(np.flatnonzero(np.diff(slots) != 1) + 1).tolist(), len(slots)]
            for i, j in zip(bounds[:-1], bounds[1:]):
                self._get(out[a + i:a + j].reshape(-1), target, table.rec_base + int(slots[i]) * rb)

    def finish(self, idle=None) -> dict:
        """Wait for the round; returns {rank: total} for the totals asked for."""
        requests, self._requests = self._requests, []
        if requests:
            wait_polling(lambda: self.MPI.Request.Testall(requests))
            self.rounds += 1
        self.win.Sync()
        return dict(zip(self._word_ranks, self._words.astype(np.int64).tolist()))

    def _get(self, dst: np.ndarray, target: int, offset: int):
        MPI = self.MPI
        self._requests.append(self.win.Rget([dst, MPI.BYTE], target, target=(offset, dst.nbytes, MPI.BYTE)))
        self.ops += 1
        self.bytes += dst.nbytes

    def serve(self) -> None:
        """Let this rank's MPI library serve pending reads of its memory (needed only on
        transports without hardware RDMA; cheap elsewhere)."""
        for _ in range(_PROBES_PER_WAKE):
            self._progress_req.Test()

    def fence(self):
        self.win.Sync()

    def free(self) -> None:
        """Collective."""
        self._progress_req.Cancel()
        self._progress_req.Wait()
        self._progress_comm.Free()
        self.win.Unlock_all()
        self.win.Free()
