"""Remote reads of shards by request and reply: the transport for networks whose MPI cannot
serve one-sided gets across nodes (Open MPI's ob1 over plain TCP cannot even create the
window). It is also the seed system's design (one RPC per owner), so it is the baseline the
RMA transport must beat.

A round: for every owner it needs, the reader posts the receives of the reply (the records
straight into their rows of the output, and the owner's total), then sends the owner one
request with the record numbers it drew. The owner answers in its rehearsal thread (or in
its own wait loop, when it is itself waiting for a round): it copies the records into one
message and sends it with its total. Replies are checked like gets (records.py): an owner's
main thread may be writing a record while its thread copies it.

Requests and replies travel on a communicator of their own, so they never match the job's
messages. Only one thread answers at a time (a non-blocking lock): MPI_Iprobe then MPI_Recv
from two threads could take each other's requests.
"""

from __future__ import annotations

import threading

import numpy as np

from hpccl.continual.rehearsal.rma import wait_polling
from hpccl.core.mpi import mpi

_REQUEST, _RECORDS, _TOTAL = 11, 12, 13


class MessageTransport:
    name = "messages"

    def __init__(self, comm, local: np.ndarray, table):
        """Collective. ``local``: this rank's shard memory; ``table``: where its records lie."""
        self.MPI = mpi()
        self.comm = comm.Dup()
        self.local, self.table = local, table
        self._rows = np.ndarray((table.capacity, table.record_bytes), np.uint8, local, table.rec_base)
        self._total = local[:8].view(np.uint64)
        self.ops = self.bytes = self.rounds = 0
        self.served = 0                 # requests answered, for the benchmark
        self._requests: list = []
        self._totals: dict = {}
        self._keep: list = []           # this round's requests, alive until sent
        self._replies: list = []        # (send request, buffer kept alive until sent)
        self._serving = threading.Lock()
        self._status = self.MPI.Status()

    def start(self, table, groups, out: np.ndarray, total_ranks) -> None:
        """Issue one round: one request to each owner in ``groups`` [(target, a, b, slots)]
        (replied into ``out[a:b]``) or in ``total_ranks`` (its total only)."""
        MPI = self.MPI
        wanted = {int(t): None for t in total_ranks}
        for target, a, b, slots in groups:
            wanted[int(target)] = (a, b, slots)
        self._totals = {t: np.zeros(1, dtype=np.uint64) for t in wanted}
        for t, part in wanted.items():
            self._requests.append(self.comm.Irecv([self._totals[t], MPI.UINT64_T], source=t, tag=_TOTAL))
            slots = np.empty(0, dtype=np.int64)
            if part is not None:
                a, b, slots = part
                dst = out[a:b].reshape(-1)
                self._requests.append(self.comm.Irecv([dst, MPI.BYTE], source=t, tag=_RECORDS))
                self.bytes += dst.nbytes
            request = np.ascontiguousarray(slots, dtype=np.int64)
            self._requests.append(self.comm.Isend([request, MPI.INT64_T], dest=t, tag=_REQUEST))
            self._keep.append(request)
            self.ops += 1
            self.bytes += 8

    def finish(self, idle=None) -> dict:
        """Wait for the round, answering others' requests meanwhile (two readers waiting for
        each other would otherwise wait for ever); returns {rank: total}."""
        requests, self._requests = self._requests, []
        if requests:
            wait_polling(lambda: self.MPI.Request.Testall(requests), self.serve)
            self.rounds += 1
        self._keep = []
        return {t: int(v[0]) for t, v in self._totals.items()}

    def serve(self) -> None:
        """Answer every request that has arrived (the owner's side)."""
        if not self._serving.acquire(blocking=False):
            return
        try:
            MPI, status = self.MPI, self._status
            self._replies = [(r, buf) for r, buf in self._replies if not r.Test()]
            while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=_REQUEST, status=status):
                source, n = status.Get_source(), status.Get_count(MPI.INT64_T)
                slots = np.empty(n, dtype=np.int64)
                self.comm.Recv([slots, MPI.INT64_T], source=source, tag=_REQUEST)
                total = self._total.copy()
                if n:
                    records = np.take(self._rows, slots, axis=0)
                    self._replies.append((self.comm.Isend([records.reshape(-1), MPI.BYTE], dest=source,
                                                          tag=_RECORDS), records))
                self._replies.append((self.comm.Isend([total, MPI.UINT64_T], dest=source, tag=_TOTAL), total))
                self.served += 1
        finally:
            self._serving.release()

    def fence(self):
        pass

    def free(self) -> None:
        """Collective: answers requests until every rank has stopped reading."""
        done = self.comm.Ibarrier()
        wait_polling(done.Test, self.serve)
        self.MPI.Request.Waitall([r for r, _ in self._replies])
        self._replies = []
        self.comm.Free()
