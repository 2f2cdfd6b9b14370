"""Memory of every rank's shard, readable by every rank without the owner's main thread.

Ranks are grouped into nodes (real ones, or blocks of ``rehearsal.ranks_per_node`` to build
multi-node layouts on one machine). Inside a node the shards live in one MPI shared-memory
window (``Win.Allocate_shared``) and a reader loads a peer's memory directly, checking each
record's sequence number before and after (a seqlock; ``Win_sync`` orders the loads).
Across nodes a *transport* brings the records:

- ``rma`` (rma.py): one-sided gets from a world window, served by the NIC;
- ``messages`` (messages.py): one request per owner, answered by the owner's rehearsal
  thread, for networks whose MPI cannot serve gets across nodes;
- ``auto``: ``rma`` where the window across nodes can be created *and* a get completes while
  its owner is busy outside MPI (RDMA, shared memory: measured at start-up, 0.3 s), else
  ``messages``. Where every get needs the owner's CPU (TCP), each get costs a wake-up of the
  owner's thread, and one request per owner is cheaper than one get per record (measured
  over UCX's TCP transport: messages 1.5-2.2x the raw get loop's rate at r = 64).

A draw is **one round**: the gets (or requests) for every remote record it drew, from all
owners at once, together with the totals the sampler refreshes; while they fly, the
same-node records are loaded. Each record carries a hash of its bytes (records.py), so the
bytes of one get tell a whole record from a torn one; only torn records are read again,
after a short back-off. Gets: at most one per remote record (adjacent ones coalesce) plus
one per total refreshed (sampler.py asks for at most 2).

Every remote operation is counted (``ops``, ``bytes``, ``rounds``) for the benchmark.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass

import numpy as np

from hpccl.continual.rehearsal import records as rec
from hpccl.continual.rehearsal.messages import MessageTransport
from hpccl.continual.rehearsal.rma import RmaTransport
from hpccl.core.errors import HpcclError
from hpccl.core.mpi import mpi

TRANSPORTS = ("auto", "rma", "messages")
# A torn record is re-read after this many seconds at most; a writer holds a record odd only
# for one memcpy, so only a descheduled writer makes a reader wait this long.
_MAX_BACKOFF_S = 1e-3
GIVE_UP_S = 60.0
# 'auto': a get that a NIC or shared memory serves completes in microseconds; one that
# waits for its owner's CPU takes the owner's whole busy time (3 x this).
PROBE_S = 0.05


@dataclass(frozen=True)
class RecordTable:
    """Where a shard keeps its records: ``capacity`` records of ``record_bytes`` at ``rec_base``."""
    rec_base: int
    record_bytes: int
    capacity: int


class _ReadPlan:
    """The records of one read: ``node`` = (a, b, seq word indices, row indices, node table)
    for out[a:b] when they are same-node records read from the node-wide arrays; ``local`` =
    [(target, a, b, slots)] for other same-node records; ``remote`` = the same for records
    on other nodes."""
    __slots__ = ("n", "node", "local", "remote")

    def __init__(self, n):
        self.n, self.node, self.local, self.remote = n, None, [], []


def _by_target(targets, slots):
    """[(target, rows a:b, its slots)] for sorted targets."""
    if not len(targets):
        return []
    cuts = np.flatnonzero(targets[1:] != targets[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(targets)]
    return [(int(targets[a]), a, b, slots[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


class ShardWindows:
    def __init__(self, comm, group_comm, nbytes: int, table: RecordTable, transport: str = "rma"):
        MPI = mpi()
        self.MPI = MPI
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.nbytes, self.table = int(nbytes), table
        self.group_ranks = group_comm.allgather(self.rank)       # world ranks of my node, local order
        self.leaders = comm.allgather(self.group_ranks[0])     # each rank's node, by its first rank
        self.same_node = np.array([lead == self.group_ranks[0] for lead in self.leaders])
        self.num_nodes = len(set(self.leaders))
        self.node_win = None
        self.remote = None              # the transport to other nodes
        self.transport_note = "one node: shared-memory loads only"
        self._views: dict[int, np.ndarray] = {}
        self._freed = False
        self.remote_records = 0         # records read from other nodes (retries included)
        # One decision for all ranks, since window creation is collective: a node window on
        # every node unless every node holds one rank. A last, smaller node (3 ranks in
        # nodes of 2) may hold one rank and still needs it.
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
            self.node_win.Lock_all(MPI.MODE_NOCHECK)
        if self.num_nodes > 1:
            self.remote = self._connect(transport)
        self.local = self._views[self.rank]
        self.local[:] = 0
        self.fence()
        comm.Barrier()          # nobody reads a shard before its owner zeroed it
        self._tables: dict = {}
        self._node_tables: dict = {}
        self._node_mem, self._node_stride = self._node_memory()
        self._node_words: dict = {}

    def _connect(self, transport: str):
        """The transport to other nodes (collective), with a note on why it was chosen."""
        MPI, comm = self.MPI, self.comm
        mine = self._views[self.rank] if self.node_win is not None else None
        if transport == "messages":
            note = "messages: one request per owner, answered by its rehearsal thread"
        else:
            failed, remote = None, None
            try:
                remote = RmaTransport(comm, mine, self.nbytes)
            except MPI.Exception as e:
                failed = e.Get_error_string()
            if not comm.allreduce(failed is None, op=MPI.MIN):
                if transport == "rma" or failed is None:
                    where = "on some ranks only" if failed is None else f"({failed})"
                    raise HpcclError(
                        f"the MPI library could not create the rehearsal buffer's RMA window across "
                        f"nodes {where}. HINT: set 'rehearsal.transport: messages' (requests answered "
                        "by each owner's rehearsal thread: works on any MPI), or 'auto'; or use an MPI "
                        "built with one-sided support for this network (UCX or OFI). 'hpccl check' "
                        "on the allocation shows what works.")
                note = f"messages (auto: the MPI library could not create an RMA window across nodes: {failed})"
            elif transport == "rma":
                return self._use(remote, "rma: one-sided gets through a window across nodes")
            elif self._served_without_owner(remote):
                return self._use(remote, "rma (auto: a get completed while its owner was busy outside "
                                         "MPI: the network serves gets by itself)")
            else:
                remote.free()
                note = ("messages (auto: a get waited for its owner to enter MPI: this network needs "
                        "the owner's CPU for every get, and one request per owner costs fewer of its "
                        "wake-ups than one get per record)")
        self.transport_note = note
        if mine is None:
            self._views[self.rank] = mine = np.zeros(self.nbytes, dtype=np.uint8)
        return MessageTransport(comm, mine, self.table)

    def _use(self, remote, note: str):
        self.transport_note = note
        if remote.local is not None:
            self._views[self.rank] = remote.local
        return remote

    def _served_without_owner(self, remote) -> bool:
        """Collective: does a get complete while its owner works outside MPI? Nodes take
        turns: in each phase the ranks of every other node sleep without entering MPI while
        the rest each get 8 bytes from a neighbouring node's first rank and wait up to
        ``PROBE_S``. RDMA and shared memory serve it at once; TCP waits for the owner."""
        MPI, comm = self.MPI, self.comm
        nodes = sorted(set(self.leaders))
        j = nodes.index(self.leaders[self.rank])
        target = nodes[j + 1] if j + 1 < len(nodes) else nodes[j - 1]
        served, word = True, np.empty(8, dtype=np.uint8)
        for phase in (0, 1):
            comm.Barrier()
            if j % 2 == phase:
                request = remote.win.Rget([word, MPI.BYTE], target, target=(0, 8, MPI.BYTE))
                deadline = time.monotonic() + PROBE_S
                while not request.Test():
                    if time.monotonic() > deadline:
                        served = False
                        request.Wait()          # served once the owner is back in MPI
                        break
            else:
                time.sleep(3 * PROBE_S)
        return bool(comm.allreduce(served, op=MPI.MIN))

    @property
    def transport(self) -> str:
        """How records on other nodes are read: 'rma', 'messages', or 'none' (one node)."""
        return self.remote.name if self.remote is not None else "none"

    # -- ordering ---------------------------------------------------------------------------
    def fence(self):
        """Memory barrier for this rank's loads and stores of window memory (``Win_sync`` on
        every window: orders them, and in MPI's separate memory model also publishes them)."""
        if self.node_win is not None:
            self.node_win.Sync()
        if self.remote is not None:
            self.remote.fence()

    # -- readers ------------------------------------------------------------------------------
    def view(self, target: int) -> np.ndarray | None:
        """``target``'s shard as directly loadable bytes (same node), else None."""
        return self._views.get(target) if self.same_node[target] else None

    def read_totals(self, targets) -> np.ndarray:
        """Each target's total (header word 0): same node, loads; others, one round."""
        self._check()
        targets = np.asarray(targets, dtype=np.int64)
        out = np.empty(len(targets), dtype=np.int64)
        far = [t for t in targets.tolist() if not self.same_node[t]]
        if far:
            self.remote.start(self.table, [], np.empty((0, self.table.record_bytes), np.uint8), far)
            got = self.remote.finish()
        for j, t in enumerate(targets.tolist()):
            v = self.view(t)
            out[j] = v[:8].view(np.uint64)[0] if v is not None else got[t]
        self.fence()
        return out

    def read_records(self, table: "RecordTable", targets: np.ndarray, slots: np.ndarray,
                     out: np.ndarray, totals_of=()) -> dict:
        """Record ``slots[i]`` of ``targets[i]`` (both sorted by target, then slot) into
        ``out[i]`` [record_bytes], each one whole, in one round; returns {rank: total} for
        the ranks of ``totals_of`` on other nodes (read in the same round; the message
        transport adds every owner it asked).

        Torn records (a seqlock that moved, a hash that does not match) are read again after
        a short back-off, until ``GIVE_UP_S``."""
        self._check()
        targets = np.asarray(targets, dtype=np.int64)
        slots = np.asarray(slots, dtype=np.int64)
        totals_of = [t for t in np.asarray(totals_of, dtype=np.int64).tolist() if not self.same_node[t]]
        bad, totals = self._round(table, targets, slots, out, totals_of)
        backoff, started = 0.0, time.monotonic()
        while len(bad):
            if time.monotonic() - started > GIVE_UP_S:
                raise HpcclError(f"rehearsal buffer: records {slots[bad].tolist()} of ranks "
                                 f"{targets[bad].tolist()} were still torn or unwritten after "
                                 f"{GIVE_UP_S:g} s of reading; their owner seems stuck inside "
                                 "a write.")
            backoff = min(_MAX_BACKOFF_S, backoff * 2 or 1e-5)
            time.sleep(backoff)
            dst = np.empty((len(bad), table.record_bytes), np.uint8)
            again, _ = self._round(table, targets[bad], slots[bad], dst, [])
            good = np.ones(len(bad), dtype=bool)
            good[again] = False
            out[bad[good]] = dst[good]
            bad = bad[~good]
        return totals

    def _round(self, table, targets, slots, out, totals_of):
        """One round: remote reads issued, same-node records loaded meanwhile, then the
        remote ones completed and checked. Returns (indices of torn records, totals)."""
        plan = self._plan(table, targets, slots)
        if plan.remote or totals_of:
            self.remote.start(table, plan.remote, out, totals_of)
            self.remote_records += sum(b - a for _, a, b, _ in plan.remote)
        bad = [self._load_local(table, plan, out)]
        totals = {}
        if plan.remote or totals_of:
            totals = self.remote.finish()
            for _, a, b, sl in plan.remote:
                bad.append(a + rec.torn(out[a:b], sl))
        # sorted, as plans need their records by target: the retry plans with them
        return np.sort(np.concatenate(bad)), totals

    def _load_local(self, table, plan, out) -> np.ndarray:
        """Same-node records into ``out`` by loads under the seqlock: sequence numbers,
        fence, records, fence, sequence numbers. Returns the indices of torn ones."""
        # (rows a:b of out, sequence words, their indices, records, their indices)
        parts = []
        if plan.node is not None:
            a, b, seq_index, row_index, node = plan.node
            parts.append((a, b, node[0], seq_index, node[1], row_index))
        for target, a, b, sl in plan.local:
            seqs, rows = self._local(table, target)
            parts.append((a, b, seqs, sl, rows, sl))
        if not parts:
            return np.empty(0, dtype=np.int64)
        before = [words[at] for _, _, words, at, _, _ in parts]
        self.fence()
        for a, b, _, _, rows, at in parts:
            np.take(rows, at, axis=0, out=out[a:b])
        self.fence()
        bad = [a + np.flatnonzero((first != words[at]) | (first & 1 == 1) | (first == 0))
               for (a, _, words, at, _, _), first in zip(parts, before)]
        return np.concatenate(bad)

    def _node_memory(self):
        """(the whole node's shards as one byte array, the stride between two shards) when
        the node's ranks are world ranks lo..hi-1 and their shards lie back to back at one
        stride (the usual layout of ``Win.Allocate_shared``); else (None, 0). Then a draw's
        same-node records, however many owners hold them, are one gather."""
        ranks = self.group_ranks
        if self.node_win is None or ranks != list(range(ranks[0], ranks[0] + len(ranks))):
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
        self._check()
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
        record_bytes] records, row of each node rank's first record), or None."""
        if table not in self._node_tables:
            found, mem, stride = None, self._node_mem, self._node_stride
            if mem is not None and stride % 8 == 0 and stride % table.record_bytes == 0:
                # indexed by world rank, so a plan needs no translation to node ranks
                local = np.arange(self.size) - self.group_ranks[0]
                rows = (len(mem) - table.rec_base) // table.record_bytes
                found = (mem[:len(mem) // 8 * 8].view(np.uint64),
                         np.ndarray((rows, table.record_bytes), np.uint8, mem, table.rec_base),
                         local * (stride // table.record_bytes))
            self._node_tables[table] = found
        return self._node_tables[table]

    def _plan(self, table, targets, slots) -> "_ReadPlan":
        """Where each record lies: same-node ones as indices into the node-wide arrays when
        there are such (else per owner), the others per owner."""
        plan = _ReadPlan(len(slots))
        node = self._node_table(table)
        if node is None:
            for group in _by_target(targets, slots):
                (plan.local if self.same_node[group[0]] else plan.remote).append(group)
            return plan
        lo = self.group_ranks[0]
        if self.num_nodes == 1:
            a, b = 0, len(targets)
        else:
            a, b = np.searchsorted(targets, [lo, lo + len(self.group_ranks)]).tolist()
        if b > a:
            rows = node[2][targets[a:b]] + slots[a:b]
            seq_words = (table.rec_base + rows * table.record_bytes + rec.SEQ) // 8
            plan.node = (a, b, seq_words, rows, node)
        if a > 0 or b < len(targets):
            plan.remote = _by_target(targets[:a], slots[:a]) + [
                (t, i + b, j + b, s) for t, i, j, s in _by_target(targets[b:], slots[b:])]
        return plan

    def _local(self, table, target):
        """Same-node views of ``target``'s table: ([n] uint64 seqs, [n, record_bytes] records)."""
        key = (target, table)
        if key not in self._tables:
            v = self._views[target]
            rows = np.ndarray((table.capacity, table.record_bytes), np.uint8, v, table.rec_base)
            seqs = np.ndarray((table.capacity,), np.uint64, v, table.rec_base + rec.SEQ,
                              strides=(table.record_bytes,))
            self._tables[key] = (seqs, rows)
        return self._tables[key]

    # -- counters -----------------------------------------------------------------------------
    @property
    def ops(self) -> int:
        """Remote operations issued so far (gets, or requests)."""
        return self.remote.ops if self.remote is not None else 0

    @property
    def bytes(self) -> int:
        return self.remote.bytes if self.remote is not None else 0

    @property
    def rounds(self) -> int:
        return self.remote.rounds if self.remote is not None else 0

    # -- the owner's thread, while idle -------------------------------------------------------
    def progress(self):
        """Serve other nodes' reads of this shard: answer requests (messages), or let the MPI
        library serve pending gets (rma, on transports without hardware RDMA)."""
        if self.remote is not None and not self._freed:
            self.remote.serve()

    # -- life cycle ---------------------------------------------------------------------------
    def _check(self, what: str = "read"):
        """Raise on a ``what`` ('read', 'write') of shard memory once it is freed: views of it
        (here and in Shard) would load or store into memory that is gone."""
        if self._freed:
            raise HpcclError(f"rehearsal buffer: {what} after its windows were freed (the "
                             "buffer was closed)")

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
        # The transport first: an RMA world window exposes the node window's memory.
        if self.remote is not None:
            self.remote.free()
        if self.node_win is not None:
            self.node_win.Unlock_all()
            self.node_win.Free()
