"""Runs on every rank under mpirun (started by test_buffer_mpi.py); rank 0 writes a JSON
result. Usage: buffer_worker.py SCENARIO MODE[+TRANSPORT] OUT_JSON [TMPDIR]
MODE: 'shared' (ranks grouped by real node: direct loads), 'remote' (every rank its own
node), or 'pairs' (pseudo-nodes of 2 ranks: both paths at once). TRANSPORT, for reads from
other nodes: 'rma' (the default: MPI gets) or 'messages' (requests answered by the owner).

As in training, each rank runs the rehearsal thread that answers other nodes' reads while
the rank itself is busy or waits in a collective."""

import faulthandler
import json
import signal
import sys
import time

import numpy as np

from hpccl.continual.rehearsal.buffer import RehearsalThread, progress_function
from hpccl.continual.rehearsal.sampler import GlobalSampler
from hpccl.continual.rehearsal.shard import Shard, ShardLayout
from hpccl.core.runtime import mpi

MPI = mpi()
comm = MPI.COMM_WORLD


def _abort(kind, value, tb):
    """An error on one rank ends every rank at once, as in a job (peers would wait in a
    collective or for this rank's answers)."""
    sys.__excepthook__(kind, value, tb)
    sys.stderr.flush()
    comm.Abort(1)


sys.excepthook = _abort
# A test that times out sends SIGUSR2 first: every thread's stack goes to stderr, so a hang
# says where each rank waits (in MPI or in the buffer) instead of only that it ran too long.
faulthandler.register(signal.SIGUSR2, all_threads=True)
rank, size = comm.Get_rank(), comm.Get_size()
scenario, mode, out_path = sys.argv[1:4]
mode, _, transport = mode.partition("+")
group = {"remote": lambda: comm.Split(rank, rank), "pairs": lambda: comm.Split(rank // 2, rank),
         "shared": lambda: comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)}[mode]()


threads = {}


def make_shard(classes, slots, shape, seed=0, dtype=np.float32):
    layout = ShardLayout(classes, slots, shape, dtype)
    shard = Shard(comm, group, layout, np.random.default_rng([seed, rank]), transport=transport or "rma")
    serve = progress_function(shard.windows)
    if serve is not None:
        threads[id(shard)] = RehearsalThread(serve, 1e-3)
    return shard, GlobalSampler(shard, np.random.default_rng([seed + 1, rank]))


def free(*shards):
    for shard in shards:
        thread = threads.pop(id(shard), None)
        if thread is not None:
            thread.shutdown()
        shard.free()


def result(obj):
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(obj, f)


if scenario == "uniform":
    # Shards hold different counts: rank r stores 3 + 4r samples over 3 classes, each sample
    # tagged with a global id. Every rank draws 1500 times r = 3.
    shard, sampler = make_shard(3, 16, (4,))
    n = 3 + 4 * rank
    ids = rank * 1000 + np.arange(n)
    x = np.repeat(ids[:, None], 4, axis=1).astype(np.float32)
    shard.insert(x, np.arange(n) % 3)
    comm.Barrier()
    draws, dup, wrong_label = [], 0, 0
    for _ in range(1500):
        xs, ys = sampler.sample(3)
        got = xs[:, 0].astype(int).tolist()
        dup += len(set(got)) != len(got)
        wrong_label += int(np.sum((xs[:, 0].astype(int) % 1000) % 3 != ys))
        draws += got
    all_draws = comm.gather(draws, root=0)
    stored = comm.gather(ids.tolist(), root=0)
    if rank == 0:
        from scipy.stats import chisquare
        flat = np.concatenate(all_draws)
        universe = np.concatenate(stored)
        counts = np.array([(flat == i).sum() for i in universe])
        result({"p": float(chisquare(counts).pvalue), "draws": int(len(flat)), "outside": int(len(flat) - counts.sum()),
                "dup": dup, "wrong_label": wrong_label, "stored": int(len(universe)), "min": int(counts.min()),
                "max": int(counts.max())})
    free(shard)

elif scenario == "reservoir":
    # One class, K = 5 slots, a stream of 50 candidates, 2000 independent trials: every stream
    # position should be kept with probability K / 50.
    shard, _ = make_shard(1, 5, (1,), seed=rank)
    hits = np.zeros(50, dtype=np.int64)
    for trial in range(2000):
        shard.clear()
        for i in range(0, 50, 10):  # in mini-batches, as training offers them
            shard.insert(np.arange(i, i + 10, dtype=np.float32)[:, None], np.zeros(10, dtype=int))
        hits[shard.samples_of_class(0)[:, 0].astype(int)] += 1
    total = comm.reduce(hits, root=0)
    if rank == 0:
        from scipy.stats import chisquare
        result({"p": float(chisquare(total).pvalue), "hits": total.tolist(), "trials": 2000 * size})
    free(shard)

elif scenario in ("torn", "torn-unchecked"):
    if scenario == "torn-unchecked":
        # Negative control: records taken without any check (no seqlock for loads, no hash
        # for remote reads), so the test below shows it can see torn samples when the
        # checks are missing.
        from hpccl.continual.rehearsal import records
        from hpccl.continual.rehearsal.windows import ShardWindows
        unchecked = ShardWindows._load_local

        def load_unchecked(self, table, plan, out):
            unchecked(self, table, plan, out)
            return np.empty(0, dtype=np.int64)
        ShardWindows._load_local = load_unchecked
        records.torn = lambda rows, slots: np.empty(0, dtype=np.int64)
    # Owners keep overwriting their slots with patterned samples (all 1024 floats equal, the
    # class encoded in the value) while every rank samples; a torn read mixes two patterns.
    shard, sampler = make_shard(2, 8, (1024,))
    counter, draws, torn, bad_label, writes = 0, 0, 0, 0, 0
    deadline = time.monotonic() + 4.0
    while time.monotonic() < deadline or draws < 3000:
        labels = np.array([counter % 2, (counter + 1) % 2] * 4)
        # exact in float32 (< 2**24), so the class parity survives the round trip
        values = ((rank * 1_000_000 + counter * 8 + np.arange(8)) % 4_000_000) * 2 + labels
        shard.seen[:] = 0  # keep the reservoir writing to every slot, not only ever rarer ones
        shard.insert(np.repeat(values[:, None], 1024, axis=1).astype(np.float32), labels)
        writes += 8
        counter += 1
        xs, ys = sampler.sample(4)
        for x, y in zip(xs, ys):
            draws += 1
            torn += int(not np.all(x == x[0]))
            bad_label += int(int(x[0]) % 2 != y)
        if draws > 100_000:
            break
    stats = comm.reduce(np.array([draws, torn, bad_label, writes]), root=0)
    if rank == 0:
        result({"draws": int(stats[0]), "torn": int(stats[1]), "bad_label": int(stats[2]),
                "writes": int(stats[3])})
    comm.Barrier()
    free(shard)

elif scenario == "retry":
    # Deterministic torn records: rank 0's record 3 is torn on purpose, four ways, each read by
    # the ranks whose path can meet it, and mended only once every reader has met it torn
    # (readers say so from their first round that found a torn record): no sleep, no race.
    #   odd      half written: sequence number odd, half the sample new, the old hash. Every
    #            reader must wait for the write to end and then return the new sample.
    #   mixed    the bytes a get brings when it overlaps a write: sequence number even and
    #            unchanged, half the sample new, the old hash. Only the hash tells; read from
    #            other nodes only (a same-node writer always makes the sequence number odd first).
    #   moved    a same-node reader's loads straddle a whole write: its sequence number is even
    #            before and after the load of the records, but moved; the write starts after the
    #            reader's first fence and ends before its second (hooked), so the records it
    #            loaded are half written. One reader at a time.
    #   give-up  half written for good, read with the give-up time made 0.5 s: hpccl's error.
    #            Rank 0 mends it after 60 s at most, so a reader that never gives up returns
    #            (and fails the test) instead of hanging the job.
    from hpccl.continual.rehearsal import records, windows
    from hpccl.core.errors import HpcclError
    shard, sampler = make_shard(1, 8, (16,))
    shard.insert(np.repeat((rank * 100 + np.arange(8, dtype=np.float32))[:, None], 16, axis=1),
                 np.zeros(8, dtype=int))
    everything = 8 * size
    comm.Barrier()
    sampler.refresh()
    ctl = comm.Dup()                # this test's own messages between rank 0 and the readers
    MET, STEP, DONE = 1, 2, 3
    w = shard.windows
    near = comm.allgather(bool(w.same_node[0]))     # reads rank 0's records by loads
    readers = list(range(1, size))
    near_readers = [r for r in readers if near[r]]
    far_readers = [r for r in readers if not near[r]]

    # rank 0's writes of its record 3, in the order shard.py writes, fenced like its writes
    def begin(value):           # sequence number odd, the first half of the sample new
        shard._seq[3] += 1
        w.fence()
        shard._sample[3, :8] = value
        w.fence()

    def finish(value):          # the rest of the sample, sequence number even, hash
        shard._sample[3, 8:] = value
        w.fence()
        shard._seq[3] += 1
        records.seal(shard._rows, [3])
        w.fence()

    def hear_from_each(group, tag):
        return sorted(ctl.recv(source=MPI.ANY_SOURCE, tag=tag) for _ in group)

    # readers count the rounds that found torn records and tell rank 0 at the first one
    torn_rounds, tell = [0], [False]
    plain_round = windows.ShardWindows._round

    def counting_round(self, *args):
        bad, totals = plain_round(self, *args)
        if len(bad):
            torn_rounds[0] += 1
            if tell[0]:
                tell[0] = False
                ctl.send((rank, True), dest=0, tag=MET)
        return bad, totals
    windows.ShardWindows._round = counting_round

    def read(give_up_s=60.0, tell_met=True):
        windows.GIVE_UP_S = give_up_s
        torn_rounds[0], tell[0] = 0, tell_met
        t0 = time.monotonic()
        try:
            xs, ys = sampler.sample(everything)
            v = xs[:, 0].tolist()       # sorted by owner, then record: v[3] is rank 0's record 3
            got = {"n": len(ys), "whole": bool(np.all(xs == xs[:, :1])), "record_3": v[3],
                   "others_ok": v[:3] + v[4:] == [float(r * 100 + i) for r in range(size)
                                                  for i in range(8) if (r, i) != (0, 3)]}
        except HpcclError as e:
            got = {"error": str(e)}
        got.update(seconds=time.monotonic() - t0, torn_rounds=torn_rounds[0])
        if tell[0]:             # never met it torn: rank 0 must not wait for that
            tell[0] = False
            ctl.send((rank, False), dest=0, tag=MET)
        return got

    def straddled_by_a_write(info):
        """The next same-node load of this reader: rank 0 begins a write of record 3 right
        after the load's first fence and finishes it right before its second."""
        plain_fence = windows.ShardWindows.fence.__get__(w)
        fences = [0]

        def fence():
            fences[0] += 1
            if fences[0] == 2:
                ctl.send("finish", dest=0, tag=STEP)
                ctl.recv(source=0, tag=STEP)
            plain_fence()
            if fences[0] == 1:
                ctl.send("begin", dest=0, tag=STEP)
                ctl.recv(source=0, tag=STEP)
                plain_fence()

        def load_once(table, plan, out):
            w.fence = fence
            try:
                return windows.ShardWindows._load_local(w, table, plan, out)
            finally:
                del w.fence, w._load_local
                info["straddled"] = fences[0] >= 2
        w._load_local = load_once

    info = {"rank": rank, "near": near[rank]}
    # odd
    if rank == 0:
        begin(1003)
    comm.Barrier()
    if rank == 0:
        info["met"] = hear_from_each(readers, MET)
        finish(1003)
    else:
        info["odd"] = read()
    comm.Barrier()
    # mixed
    if far_readers:
        if rank == 0:
            shard._sample[3, :8] = 2003
            w.fence()
        comm.Barrier()
        if rank == 0:
            info["met_mixed"] = hear_from_each(far_readers, MET)
            begin(2003)
            finish(2003)
        elif rank in far_readers:
            info["mixed"] = read()
        comm.Barrier()
    # moved
    for k, r in enumerate(near_readers, 1):
        if rank == 0:
            assert ctl.recv(source=r, tag=STEP) == "begin"
            begin(3000 + k)
            ctl.send(None, dest=r, tag=STEP)
            assert ctl.recv(source=r, tag=STEP) == "finish"
            finish(3000 + k)
            ctl.send(None, dest=r, tag=STEP)
        elif rank == r:
            moved = {}
            straddled_by_a_write(moved)
            moved.update(read(tell_met=False))
            info["moved"] = dict(moved, write=3000 + k)
        comm.Barrier()
    # give-up
    if rank == 0:
        begin(4003)
    comm.Barrier()
    if rank == 0:
        pending = [ctl.irecv(source=r, tag=DONE) for r in readers]
        deadline = time.monotonic() + 60.0
        while not MPI.Request.testall(pending)[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        finish(4003)
        MPI.Request.waitall(pending)
    else:
        info["give-up"] = read(give_up_s=0.5, tell_met=False)
        ctl.send(rank, dest=0, tag=DONE)
    comm.Barrier()
    windows.ShardWindows._round = plain_round
    result(comm.gather(info, root=0))
    ctl.Free()
    free(shard)

elif scenario == "tiny":
    shard, sampler = make_shard(2, 4, (3,))
    t0 = time.monotonic()
    empty = sampler.sample(7)
    empty_s = time.monotonic() - t0
    comm.Barrier()
    if rank == 0:
        shard.insert(np.array([[1, 1, 1], [2, 2, 2]], dtype=np.float32), np.array([0, 1]))
    comm.Barrier()
    got = [sampler.sample(7) for _ in range(50)]
    sizes = {len(y) for _, y in got}
    contents = {tuple(sorted(x[:, 0].tolist())) for x, _ in got}
    info = comm.gather({"empty": len(empty[1]), "empty_s": empty_s, "sizes": sorted(sizes),
                        "contents": sorted(contents)}, root=0)
    result(info)
    free(shard)

elif scenario == "uint8":
    # Images keep their uint8 bytes: in the slots, through draws (loads or gets), through the
    # shard file. Each sample's bytes encode its rank and index, so a draw can be checked.
    tmp = sys.argv[4]
    shard, sampler = make_shard(4, 8, (3, 4, 4), seed=3, dtype=np.uint8)
    rng = np.random.default_rng(rank)
    x = rng.integers(0, 256, size=(24, 3, 4, 4), dtype=np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = rank, np.arange(24)
    y = np.arange(24) % 4
    shard.insert(x, y)
    comm.Barrier()
    exact = dtype_ok = 0
    mine = {}
    for r, xs in enumerate(comm.allgather(x)):
        for i, s in enumerate(xs):
            mine[(r, i)] = s
    for _ in range(200):
        xs, ys = sampler.sample(3)
        dtype_ok += xs.dtype == np.uint8
        exact += sum(np.array_equal(s, mine[(int(s[0, 0, 0]), int(s[0, 0, 1]))]) for s in xs)
    path = f"{tmp}/shard{rank}.h5"
    shard.save(path)
    held = [shard.samples_of_class(c).copy() for c in range(4)]
    other, _ = make_shard(4, 8, (3, 4, 4), seed=9, dtype=np.uint8)
    other.load(path)
    restored = all(np.array_equal(other.samples_of_class(c), held[c]) for c in range(4))
    import h5py
    with h5py.File(path, "r") as f:
        file_dtype = str(f["x"].dtype)
    as_float, _ = make_shard(4, 8, (3, 4, 4), seed=9)
    try:
        as_float.load(path)
        refused = ""
    except Exception as e:                              # noqa: BLE001 - the message is checked
        refused = str(e)
    info = comm.gather({"exact": int(exact), "dtype_ok": int(dtype_ok), "restored": restored,
                        "file_dtype": file_dtype, "refused": refused,
                        "record_bytes": shard.layout.record_bytes,
                        "float_record_bytes": as_float.layout.record_bytes}, root=0)
    result(info)
    free(shard, other, as_float)

elif scenario == "restart":
    tmp = sys.argv[4]
    rng = np.random.default_rng(rank)
    stream1 = rng.standard_normal((200, 5)).astype(np.float32), rng.integers(0, 3, 200)
    stream2 = rng.standard_normal((200, 5)).astype(np.float32), rng.integers(0, 3, 200)
    a, _ = make_shard(3, 6, (5,), seed=7)
    for i in range(0, 200, 20):
        a.insert(stream1[0][i:i + 20], stream1[1][i:i + 20])
    path = f"{tmp}/shard{rank}.h5"
    a.save(path)
    saved = [a.samples_of_class(c).copy() for c in range(3)]
    for i in range(0, 200, 20):
        a.insert(stream2[0][i:i + 20], stream2[1][i:i + 20])
    after_a = [a.samples_of_class(c).copy() for c in range(3)]
    b, sampler_b = make_shard(3, 6, (5,), seed=99)  # another seed: the file's RNG state must win
    b.load(path)
    restored_equal = all(np.array_equal(b.samples_of_class(c), saved[c]) for c in range(3))
    comm.Barrier()
    xs, ys = sampler_b.sample(10)
    for i in range(0, 200, 20):
        b.insert(stream2[0][i:i + 20], stream2[1][i:i + 20])
    continued_equal = all(np.array_equal(b.samples_of_class(c), after_a[c]) for c in range(3))
    info = comm.gather({"restored_equal": restored_equal, "continued_equal": continued_equal,
                        "sampled": int(len(ys))}, root=0)
    result(info)
    comm.Barrier()
    free(a, b)
else:
    raise SystemExit(f"unknown scenario {scenario}")
