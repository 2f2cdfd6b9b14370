"""Memory of every rank's shard, readable by every rank without the owner's help.

Ranks are grouped into nodes (real ones, or blocks of ``rehearsal.ranks_per_node`` to build
multi-node layouts on one machine). Inside a node the shards live in one MPI shared-memory
window (``Win.Allocate_shared``) and a reader loads a peer's memory directly. Across nodes a
world window exposes the same memory (``Win.Create`` over the node window, or
``Win.Allocate`` when every node holds one rank), and a reader uses ``MPI_Get``.

Why no locks: under MPICH (Cray MPICH too) and OpenMPI's UCX component, ``Win_lock`` /
``Win_unlock`` complete only when the *target* enters the MPI library, so a reader stalls for
as long as its target is busy in a gloo/NCCL allreduce or a CUDA kernel. Instead:

- every window is in one long-lived passive epoch, opened once with
  ``Lock_all(MODE_NOCHECK)`` (no message to anyone) and closed when the windows are freed;
- a remote read is contiguous ``MPI_Rget``\\ s, waited for with ``Testall``: plain byte
  ranges that a NIC serves without the target CPU (no lock word, no derived datatype);
- consistency is checked by the reader: each record has a sequence number that the owner
  makes odd while it writes the record (a seqlock). A reader reads the sequence numbers,
  then the records, then the sequence numbers again, and retries a record whose number
  changed or was odd. Same-node readers do the same with plain loads, ordered by
  ``Win_sync`` (the memory barrier of MPI's unified memory model).

On transports that cannot serve a get without the target CPU (TCP: UCX's tcp transport,
MPICH's and OpenMPI's sockets), the target's own MPI library must still answer. For those,
the owner's rehearsal thread calls :meth:`progress` while idle (see buffer.py), so a busy
main thread never stalls readers. ``hpccl check`` measures both cases on the real allocation.

Every RMA operation is counted (``ops`` / ``bytes``) for the benchmark.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass

import numpy as np

from hpccl.core.errors import HpcclError
from hpccl.core.mpi import mpi

SEQ_BYTES = 8
# Sequence numbers of records this close together come in one get (a span of 4 KiB costs
# about what an 8-byte get does, and a draw of r records then needs one get per owner).
_SEQ_SPAN = 4096
# Calls to the progress engine per idle wake-up: over TCP each pending get is served by a
# separate call, so one call per wake-up left readers waiting several wake-ups per draw
# (measured: quickstart at 2 x 2 ranks over UCX TCP, 15 s with 1 call, 3.7 s with 32).
_PROBES_PER_WAKE = 32
# Waiting for gets: test this often before sleeping, then sleep at most this long between tests.
_SPINS = 20
_MAX_PAUSE_S = 2e-4
# A torn record is re-read after this many seconds at most; a writer holds a record odd only
# for one memcpy, so only a descheduled writer makes a reader wait this long.
_MAX_BACKOFF_S = 1e-3
_GIVE_UP_S = 60.0


@dataclass(frozen=True)
class RecordTable:
    """Where a shard keeps its records: ``capacity`` uint64 sequence numbers at ``seq_base``,
    and ``capacity`` records of ``record_bytes`` at ``rec_base``."""
    seq_base: int
    rec_base: int
    record_bytes: int
    capacity: int


class _ReadPlan:
    """The records of one read: ``node`` = (a, b, seq indices, row indices, node table) for
    out[a:b] when they are same-node records read from the node-wide arrays; ``groups`` =
    [(target, a, b, slots)] for the others."""
    __slots__ = ("table", "n", "node", "groups")

    def __init__(self, table, n):
        self.table, self.n, self.node, self.groups = table, n, None, []


def _by_target(targets, slots):
    """[(target, rows a:b, its slots)] for sorted targets."""
    if not len(targets):
        return []
    cuts = np.flatnonzero(targets[1:] != targets[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(targets)]
    return [(int(targets[a]), a, b, slots[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


class ShardWindows:
    def __init__(self, comm, group_comm, nbytes: int):
        MPI = mpi()
        self.MPI = MPI
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.nbytes = int(nbytes)
        self.group_ranks = group_comm.allgather(self.rank)       # world ranks of my node, local order
        self.leaders = comm.allgather(self.group_ranks[0])     # each rank's node, by its first rank
        self.same_node = np.array([lead == self.group_ranks[0] for lead in self.leaders])
        self.num_nodes = len(set(self.leaders))
        self.node_win = self.world_win = None
        self._views: dict[int, np.ndarray] = {}
        self._freed = False
        self.ops_by_kind = {"word": 0, "seqs": 0, "records": 0}   # gets issued, for the benchmark
        self.bytes = 0          # bytes moved by them
        # One decision for all ranks, since window creation is collective: a node window on
        # every node unless every node holds one rank (then a plain world window suffices).
        # A last, smaller node (3 ranks in nodes of 2) may hold one rank and still needs it.
        largest = comm.allreduce(group_comm.Get_size(), op=MPI.MAX)
        if largest > 1 or self.num_nodes == 1:
            try:
                self.node_win = MPI.Win.Allocate_shared(self.nbytes, 1, comm=group_comm)
            except MPI.Exception as e:
                raise HpcclError(
                    f"the MPI library could not create the rehearsal buffer's shared-memory window "
                    f"among the ranks of a node ({e.Get_error_string()}). Its one-sided components "
                    "cannot serve shared memory (with Open MPI, OMPI_MCA_osc=ucx alone: osc/ucx has "
                    "no shared-memory windows). HINT: let Open MPI use its shared-memory component "
                    "too (OMPI_MCA_osc=ucx,sm, or leave OMPI_MCA_osc unset), and run 'hpccl check' "
                    "on the allocation to see what works.") from None
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
                    f"nodes ({e.Get_error_string()}). HINT: use an MPI built with one-sided "
                    "support for this network (UCX or OFI), and run 'hpccl check' on the "
                    "allocation to see what works.") from None
        self._windows = [w for w in (self.node_win, self.world_win) if w is not None]
        for win in self._windows:
            win.Lock_all(MPI.MODE_NOCHECK)
        self.local = self._views[self.rank]
        self.local[:] = 0
        self.fence()
        comm.Barrier()          # nobody reads a shard before its owner zeroed it
        self._tables: dict = {}
        self._node_tables: dict = {}
        self._node_mem, self._node_stride = self._node_memory()
        self._node_words: dict = {}
        self._requests: list = []
        # The progress calls use a communicator of our own, so they can never match (or be
        # matched by) the job's own messages.
        self._progress_comm = comm.Dup() if self.world_win is not None else None
        self._progress_req = None
        if self._progress_comm is not None:
            # A receive nobody sends: testing it runs the full progress engine (MPICH's
            # Iprobe does not serve RMA requests; MPI_Test on a pending request does).
            self._progress_buf = np.empty(1, dtype=np.uint8)
            self._progress_req = self._progress_comm.Irecv([self._progress_buf, MPI.BYTE],
                                                           source=MPI.ANY_SOURCE, tag=1)

    # -- ordering ---------------------------------------------------------------------------
    def fence(self):
        """Memory barrier for this rank's loads and stores of window memory (``Win_sync`` on
        every window: orders them, and in MPI's separate memory model also publishes them)."""
        for win in self._windows:
            win.Sync()

    # -- readers ------------------------------------------------------------------------------
    def view(self, target: int) -> np.ndarray | None:
        """``target``'s shard as directly loadable bytes (same node), else None."""
        return self._views.get(target) if self.same_node[target] else None

    def read_u64(self, targets, offset: int) -> np.ndarray:
        """The uint64 at ``offset`` in each target's shard (same node: loads; others: one get
        each, issued together and flushed together)."""
        self._check()
        targets = np.asarray(targets, dtype=np.int64)
        out = np.empty((len(targets), SEQ_BYTES), dtype=np.uint8)
        for j, t in enumerate(targets.tolist()):
            v = self.view(t)
            if v is not None:
                out[j] = v[offset:offset + SEQ_BYTES]
            else:
                self._get(out[j], t, offset, "word")
        self._complete()
        return out.view(np.uint64)[:, 0]

    def read_records(self, table: "RecordTable", targets: np.ndarray, slots: np.ndarray,
                     out: np.ndarray) -> None:
        """Record ``slots[i]`` of ``targets[i]`` (both sorted by target, then slot) into
        ``out[i]`` [record_bytes], each one whole and untorn.

        Three rounds for all targets together, each completed before the next: the records'
        sequence numbers, the records, the sequence numbers again. A record is good when
        both numbers are equal, even and non-zero (written); torn ones are read again after
        a short back-off."""
        self._check()
        targets = np.asarray(targets, dtype=np.int64)
        slots = np.asarray(slots, dtype=np.int64)
        plan = self._plan(table, targets, slots)
        before = self._seqs(plan)
        self._copy(plan, out)
        after = self._seqs(plan)
        if before.tobytes() == after.tobytes() and before.all() and not (before & 1).any():
            return
        bad = np.flatnonzero((before != after) | (before & 1 == 1) | (before == 0))
        backoff, started = 0.0, time.monotonic()
        while len(bad):
            if time.monotonic() - started > _GIVE_UP_S:
                raise HpcclError(f"rehearsal buffer: records {slots[bad].tolist()} of ranks "
                                 f"{targets[bad].tolist()} kept changing or stayed unwritten "
                                 f"for {_GIVE_UP_S:.0f} s while being read; their owner seems "
                                 "stuck inside a write.")
            backoff = min(_MAX_BACKOFF_S, backoff * 2 or 1e-5)
            time.sleep(backoff)
            plan = self._plan(table, targets[bad], slots[bad])
            dst = np.empty((len(bad), table.record_bytes), np.uint8)
            before = self._seqs(plan)
            self._copy(plan, dst)
            good = (before == self._seqs(plan)) & (before & 1 == 0) & (before > 0)
            out[bad[good]] = dst[good]
            bad = bad[~good]

    def _node_memory(self):
        """(the whole node's shards as one byte array, the stride between two shards) when
        the node's ranks are world ranks lo..hi-1 and their shards lie back to back at one
        stride (the usual layout of ``Win.Allocate_shared``); else (None, 0). Then a draw's
        same-node records, however many owners hold them, are one gather."""
        ranks = self.group_ranks
        if ranks != list(range(ranks[0], ranks[0] + len(ranks))):
            return None, 0
        addrs = [self._views[r].ctypes.data for r in ranks]
        stride = addrs[1] - addrs[0] if len(addrs) > 1 else self.nbytes
        if stride < self.nbytes or any(b - a != stride for a, b in zip(addrs, addrs[1:])):
            return None, 0
        size = stride * (len(addrs) - 1) + self.nbytes
        return np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(addrs[0])), stride

    def read_node_u64(self, offset: int, out: np.ndarray) -> None:
        """The uint64 at ``offset`` in the shard of each rank of this node (plain loads), in
        rank order, into ``out``; ordered before later loads by a fence."""
        if self._node_mem is not None and self._node_stride % 8 == 0:
            if offset not in self._node_words:
                words = self._node_mem[:len(self._node_mem) // 8 * 8].view(np.uint64)
                self._node_words[offset] = words[offset // 8::self._node_stride // 8][
                    :len(self.group_ranks)]
            out[:] = self._node_words[offset]
        else:
            out[:] = [self._views[r][offset:offset + 8].view(np.uint64)[0]
                      for r in sorted(self.group_ranks)]
        self.fence()

    def _node_table(self, table):
        """Node-wide views for ``table`` (see ``_node_memory``): (uint64 words, [rows,
        record_bytes] records, index of each node rank's first sequence number, row of its
        first record), or None."""
        if table not in self._node_tables:
            found, mem, stride = None, self._node_mem, self._node_stride
            if mem is not None and stride % 8 == 0 and stride % table.record_bytes == 0:
                # indexed by world rank, so a plan needs no translation to node ranks
                local = np.arange(self.size) - self.group_ranks[0]
                rows = (len(mem) - table.rec_base) // table.record_bytes
                found = (mem[:len(mem) // 8 * 8].view(np.uint64),
                         np.ndarray((rows, table.record_bytes), np.uint8, mem, table.rec_base),
                         local * (stride // 8) + table.seq_base // 8,
                         local * (stride // table.record_bytes))
            self._node_tables[table] = found
        return self._node_tables[table]

    def _plan(self, table, targets, slots) -> "_ReadPlan":
        """Where each record lies: same-node ones as indices into the node-wide arrays when
        there are such (else per owner), the others per owner, for gets."""
        plan = _ReadPlan(table, len(slots))
        node = self._node_table(table)
        if node is None:
            plan.groups = _by_target(targets, slots)
            return plan
        lo = self.group_ranks[0]
        if self.num_nodes == 1:
            a, b = 0, len(targets)
        else:
            a, b = np.searchsorted(targets, [lo, lo + len(self.group_ranks)]).tolist()
        if b > a:
            t, sl = targets[a:b], slots[a:b]
            plan.node = (a, b, node[2][t] + sl, node[3][t] + sl, node)
        if a > 0 or b < len(targets):
            plan.groups = _by_target(targets[:a], slots[:a]) + [
                (t, i + b, j + b, s) for t, i, j, s in _by_target(targets[b:], slots[b:])]
        return plan

    def _local(self, table, target):
        """Same-node views of ``target``'s table: ([n] uint64 seqs, [n, record_bytes] records)."""
        key = (target, table)
        if key not in self._tables:
            v = self._views[target]
            seqs = v[table.seq_base:table.seq_base + 8 * table.capacity].view(np.uint64)
            rows = v[table.rec_base:table.rec_base + table.capacity * table.record_bytes]
            self._tables[key] = (seqs, rows.reshape(table.capacity, table.record_bytes))
        return self._tables[key]

    def _seqs(self, plan) -> np.ndarray:
        """Sequence numbers of the planned records. Remote: one get per cluster of slots whose
        numbers lie within ``_SEQ_SPAN`` bytes (a draw usually needs one or two per owner)."""
        if plan.node is not None and not plan.groups:           # one node: one gather
            seqs = plan.node[4][0][plan.node[2]]
            self.fence()
            return seqs
        out = np.empty(plan.n, dtype=np.uint64)
        if plan.node is not None:
            a, b, seq_index, _, node = plan.node
            np.take(node[0], seq_index, out=out[a:b])                # plain loads
        table, spans = plan.table, []
        for target, a, b, slots in plan.groups:
            if self.same_node[target]:
                out[a:b] = self._local(table, target)[0][slots]     # plain loads
                continue
            i = 0
            while i < len(slots):
                j = i + int(np.searchsorted(slots[i:], slots[i] + _SEQ_SPAN // 8))
                buf = np.empty(int(slots[j - 1] - slots[i]) + 1, dtype=np.uint64)
                self._get(buf.view(np.uint8), target, table.seq_base + 8 * int(slots[i]), "seqs")
                spans.append((a + i, slots[i:j] - slots[i], buf))
                i = j
        self._complete()
        for at, offsets, buf in spans:
            out[at:at + len(offsets)] = buf[offsets]
        return out

    def _copy(self, plan, dst):
        """Records into ``dst``: same node, one gather of loads; other nodes, one contiguous
        get per run of adjacent records."""
        if plan.node is not None:
            a, b, _, row_index, node = plan.node
            np.take(node[1], row_index, axis=0, out=dst[a:b])
        table = plan.table
        for target, a, b, slots in plan.groups:
            if self.same_node[target]:
                np.take(self._local(table, target)[1], slots, axis=0, out=dst[a:b])
                continue
            bounds = [0, *(np.flatnonzero(np.diff(slots) != 1) + 1).tolist(), len(slots)]
            for i, j in zip(bounds[:-1], bounds[1:]):
                self._get(dst[a + i:a + j].reshape(-1), target,
                          table.rec_base + int(slots[i]) * table.record_bytes, "records")
        self._complete()

    def _complete(self):
        """Finish this round: wait for the gets issued since the last round, and order our
        loads. Waiting polls with a growing sleep instead of spinning in ``Win_flush``: a get
        served in microseconds (RDMA) returns at once, and one that waits for a busy target
        (TCP) leaves the cores to the ranks' training threads."""
        requests, self._requests = self._requests, []
        spins, pause = 0, 0.0
        while requests and not self.MPI.Request.Testall(requests):
            spins += 1
            if spins > _SPINS:
                pause = min(_MAX_PAUSE_S, pause * 2 or 2e-6)
                time.sleep(pause)
        self.fence()

    def _get(self, dst: np.ndarray, target: int, offset: int, kind: str):
        MPI = self.MPI
        self._requests.append(self.world_win.Rget([dst, MPI.BYTE], target,
                                                  target=(offset, dst.nbytes, MPI.BYTE)))
        self.ops_by_kind[kind] += 1
        self.bytes += dst.nbytes

    @property
    def ops(self) -> int:
        """RMA operations issued (gets) so far."""
        return sum(self.ops_by_kind.values())

    # -- the owner's thread, while idle -------------------------------------------------------
    def progress(self):
        """Let this rank's MPI library serve pending remote reads of its memory (needed only on
        transports without hardware RDMA; cheap elsewhere)."""
        if self._progress_comm is not None and not self._freed:
            for _ in range(_PROBES_PER_WAKE):
                self._progress_req.Test()

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
        self._tables.clear()
        self._node_tables.clear()
        self._node_words.clear()
        self._node_mem = None
        self.local = None
        if self._progress_comm is not None:
            self._progress_req.Cancel()
            self._progress_req.Wait()
            self._progress_comm.Free()
        # The world window first: it exposes the node window's memory.
        for win in reversed(self._windows):
            win.Unlock_all()
            win.Free()
        self._windows = []
