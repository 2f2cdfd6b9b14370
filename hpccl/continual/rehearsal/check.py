"""``hpccl check``: a pre-flight test of the allocation, run on every rank by each generated
job script before training (a few seconds), so that a 128-GPU job that cannot work fails at
once with the reason instead of hanging for hours.

It checks, on the real ranks and nodes:

- ``thread level``: MPI_THREAD_MULTIPLE, which the rehearsal thread and Horovod need;
- ``windows``: the rehearsal buffer's RMA windows can be created across the job's nodes;
- ``busy owner``: one-sided reads of a shard complete while its owner is busy outside MPI
  (the hang of lock-based RMA under MPICH and UCX), under a timeout; with the same
  background thread a training run uses;
- ``gpus``: with ``device: cuda`` (or ``auto`` on a GPU node), one distinct GPU per rank;
- ``horovod``: with ``backend: horovod``, that it imports, and has NCCL ops when CUDA is used.

Rank 0 prints one table (check, result, detail); the exit code is 2 when a check failed.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skipped"
_ORDER = {OK: 0, SKIP: 0, WARN: 1, FAIL: 2}


@dataclass
class Finding:
    check: str
    status: str
    detail: str


def _thread_level(needs_multiple: bool, why: str) -> Finding:
    from hpccl.core.mpi import thread_level
    level = thread_level()
    if level == "multiple":
        return Finding("thread level", OK, "MPI_THREAD_MULTIPLE")
    return Finding("thread level", FAIL if needs_multiple else WARN,
                   f"MPI provides MPI_THREAD_{level.upper()}, {why} needs MULTIPLE. HINT: Cray MPICH: "
                   "export MPICH_MAX_THREAD_SAFETY=multiple (site file 'env:')")


def _busy_owner(world, ranks_per_node, busy_s: float, timeout_s: float, progress_ms: float,
                transport: str = "auto"):
    """Two phases; in each, half of the nodes (or of a node's ranks, on one node) work outside
    MPI for ``busy_s`` while the others draw from the global buffer. Returns Findings for
    ``windows`` and ``busy owner`` on this rank."""
    from hpccl.continual.rehearsal.buffer import RehearsalThread, buffer_group, progress_function
    from hpccl.continual.rehearsal.sampler import GlobalSampler
    from hpccl.continual.rehearsal.shard import Shard, ShardLayout
    try:
        group = buffer_group(world, ranks_per_node)
        shard = Shard(world.comm, group, ShardLayout(2, 8, (1024,)), np.random.default_rng(world.rank),
                      transport=transport)
    except Exception as e:  # noqa: BLE001 - peers may wait in the collective: end the job
        print(f"hpccl check: rank {world.rank}: windows  FAIL  the rehearsal buffer's windows could "
              f"not be created: {type(e).__name__}: {e}", flush=True)
        world.comm.Abort(2)
    w = shard.windows
    layout = f"{w.num_nodes} node(s)" + (" (pseudo-nodes of rehearsal.ranks_per_node)" if ranks_per_node else "")
    kinds = ["shared-memory window"] if w.node_win is not None else []
    kinds += {"rma": ["RMA window across nodes"], "messages": ["messages across nodes"]}.get(w.transport, [])
    windows = Finding("windows", OK, f"{layout}; {' + '.join(kinds)}; transport {w.transport_note}")
    values = np.full((16, 1024), world.rank, dtype=np.float32)
    shard.insert(values, np.arange(16) % 2)
    sampler = GlobalSampler(shard, np.random.default_rng(1000 + world.rank))
    serve = progress_function(w)
    serve = RehearsalThread(serve, progress_ms / 1e3) if serve is not None else None
    world.comm.Barrier()
    sampler.refresh()
    node = w.leaders                          # each rank's (pseudo-)node, by its first rank
    leaders = sorted(set(node))
    worst, draws, from_busy, stuck = 0.0, 0, 0, False
    served, waited = 0, 0       # draws touching a busy owner done before / after it was back
    for phase in (0, 1):
        if len(leaders) > 1:
            busy = [leaders.index(n) % 2 != phase for n in node]
        else:
            busy = [(r % 2) != phase for r in range(world.size)]
        world.comm.Barrier()
        if busy[world.rank]:
            _work_outside_mpi(busy_s)
        elif world.size > 1:
            result = {"lat": [], "busy": 0, "served": 0, "waited": 0}

            def reader():
                start = time.perf_counter()
                owners_back = start + 0.9 * busy_s      # the barrier's exits differ slightly
                while time.perf_counter() < start + 0.7 * busy_s:
                    t0 = time.perf_counter()
                    x, _ = sampler.sample(8)
                    done = time.perf_counter()
                    result["lat"].append(done - t0)
                    from_busy_now = int(sum(busy[int(v)] for v in x[:, 0]))
                    result["busy"] += from_busy_now
                    if from_busy_now:
                        result["served" if done < owners_back else "waited"] += 1

            thread = threading.Thread(target=reader, daemon=True)
            thread.start()
            thread.join(busy_s + timeout_s)
            if thread.is_alive():
                stuck = True
            else:
                worst = max(worst, max(result["lat"], default=0.0))
                draws += len(result["lat"])
                from_busy += result["busy"]
                served += result["served"]
                waited += result["waited"]
        if stuck:
            break
        world.comm.Barrier()
    if stuck:
        return windows, Finding("busy owner", FAIL, f"a read from rank(s) busy outside MPI did not "
                                f"complete within {busy_s + timeout_s:.0f} s: this MPI needs the "
                                "target's help for one-sided gets and did not get it")
    if serve is not None:
        serve.shutdown()
    shard.free()
    if group is not world.node_comm:
        group.Free()
    transport = {"rma": "RMA gets", "messages": "messages"}.get(w.transport, "shared-memory loads")
    if world.size == 1:
        return windows, Finding("busy owner", SKIP, "one rank")
    # A read that needs its busy owner cannot finish before the owner is back in MPI, so what
    # tells the cases apart is whether reads of busy owners' samples finished while they were
    # busy; not how long the slowest draw took, which on a loaded machine is the machine
    # (12 ranks on 2 cores stalled a plain load for 1.6 s).
    detail = (f"{draws} draws ({from_busy} samples from busy ranks) by {transport}; {served} draws "
              f"touching a busy owner finished while it was busy, {waited} after; slowest "
              f"{worst * 1e3:.1f} ms")
    if served:
        return windows, Finding("busy owner", OK, detail)
    if waited:
        return windows, Finding("busy owner", FAIL, detail + ": reads waited for their busy owner")
    return windows, Finding("busy owner", WARN, detail + ": no draw touched a busy owner, nothing to "
                            "tell (raise --busy-seconds)")


def _work_outside_mpi(seconds: float):
    """Keep this rank busy without entering MPI: numpy work and Python, as a training step.
    Element-wise only: a BLAS call would start the library's own spinning threads, which on
    a machine with fewer cores than threads starve every other process for long stretches."""
    a = np.random.default_rng(0).standard_normal(1 << 16).astype(np.float32)
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        a = np.tanh(a * 1.0001)


def _gpus(world, device: str) -> Finding:
    import torch
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return Finding("gpus", SKIP, "device is cpu" if device == "cpu" else "no GPU seen (device: auto)")
    if not torch.cuda.is_available():
        return Finding("gpus", FAIL, f"device is cuda but torch sees no GPU on {world.hostname} "
                       f"(CUDA build: {torch.version.cuda})")
    count = torch.cuda.device_count()
    index = world.local_rank % count
    uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", f"{world.hostname}:{index}"))
    mine = (world.hostname, uuid)
    everyone = world.comm.allgather(mine)
    shared = sum(1 for other in everyone if other == mine)
    if shared > 1:
        return Finding("gpus", FAIL, f"{shared} ranks on {world.hostname} share GPU {index} ({count} "
                       "visible per rank). HINT: one rank per GPU: check the launcher's GPU binding")
    return Finding("gpus", OK, f"one GPU per rank ({torch.cuda.get_device_name(index)})")


def _horovod(backend: str, uses_cuda: bool) -> Finding:
    if backend != "horovod":
        return Finding("horovod", SKIP, f"backend is {backend}")
    from hpccl.core.mpi import horovod_mpi_mismatch
    mismatch = horovod_mpi_mismatch()
    if mismatch:
        return Finding("horovod", FAIL, mismatch)
    try:
        import horovod.torch as hvd
    except ImportError as e:
        return Finding("horovod", FAIL, f"cannot import horovod.torch ({e}). HINT: scripts/setup.sh, "
                       "or runtime.backend: mpi (or torch)")
    if uses_cuda and not hvd.nccl_built():
        return Finding("horovod", FAIL, "Horovod was built without NCCL ops; GPU tensors would go "
                       "through MPI on the host. HINT: rebuild with HOROVOD_GPU_OPERATIONS=NCCL "
                       "(scripts/setup.sh does when nvcc is found)")
    return Finding("horovod", OK, f"MPI {hvd.mpi_built()}, NCCL {bool(hvd.nccl_built())}")


def run_check(cfg, busy_s: float = 2.0, timeout_s: float = 10.0) -> int:
    """Run every check on this rank; rank 0 prints the table. Returns the exit code."""
    from hpccl.core.runtime import World, mpi
    MPI = mpi()
    comm = MPI.COMM_WORLD
    node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    import torch
    world = World(comm=comm, rank=comm.Get_rank(), size=comm.Get_size(), node_comm=node_comm,
                  local_rank=node_comm.Get_rank(), local_size=node_comm.Get_size(), node_index=0,
                  num_nodes=0, hostname=socket.gethostname(), device=torch.device("cpu"))
    # Without a job: the torch backend and an asynchronous rehearsal buffer on real nodes.
    continual = cfg is None or cfg.kind == "continual"
    uses_buffer = cfg is None or (continual and cfg.learner.kind == "rehearsal")
    reh = cfg.rehearsal if cfg is not None else None
    backend = cfg.runtime.backend if cfg is not None else "torch"
    device = cfg.runtime.device if cfg is not None else "auto"
    needs = []
    if backend == "horovod":
        needs.append("Horovod")
    if uses_buffer and (reh is None or reh.async_updates):
        needs.append("the rehearsal thread")
    findings = [_thread_level(bool(needs), " and ".join(needs) or "nothing here")]
    if not uses_buffer:
        findings.append(Finding("busy owner", SKIP, "the job uses no rehearsal buffer"))
    elif findings[0].status == FAIL:
        findings.append(Finding("busy owner", SKIP, "needs MPI_THREAD_MULTIPLE"))
    else:
        windows, busy = _busy_owner(world, reh.ranks_per_node if reh else None, busy_s, timeout_s,
                                         reh.progress_ms if reh else 1.0, reh.transport if reh else "auto")
        findings += [windows, busy]
    uses_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    findings += [_gpus(world, device), _horovod(backend, uses_cuda)]
    hosts = len(set(comm.allgather(world.hostname)))
    stuck = any(f.check == "busy owner" and f.status == FAIL and "did not complete" in f.detail
                for f in findings)
    if stuck:
        # A reader thread is blocked inside MPI: report from this rank and end the job; a
        # gather could wait on it.
        _print_table(world, hosts, [[(f.check, f.status, f.detail) for f in findings]])
        comm.Abort(2)
    everyone = comm.gather([(f.check, f.status, f.detail) for f in findings], root=0)
    code = 0
    if world.rank == 0:
        code = _print_table(world, hosts, everyone)
    code = comm.bcast(code, root=0)
    node_comm.Free()
    return code


def _print_table(world, hosts, per_rank) -> int:
    """One row per check: the worst result over ranks, and the detail of a rank that had it."""
    rows = {}
    for rank, findings in enumerate(per_rank):
        for check, status, detail in findings:
            prev = rows.get(check)
            if prev is None or _ORDER[status] > _ORDER[prev[0]]:
                where = f"rank {rank}: " if len(per_rank) > 1 and status in (FAIL, WARN) else ""
                rows[check] = (status, where + detail)
    width = max(map(len, rows))
    print(f"hpccl check: {world.size} rank(s) on {hosts} host(s)")
    for check, (status, detail) in rows.items():
        print(f"  {check:<{width}}  {status:<7}  {detail}")
    failed = [c for c, (s, _) in rows.items() if s == FAIL]
    print("hpccl check: " + ("FAILED: " + ", ".join(failed) if failed else "all checks passed"), flush=True)
    return 2 if failed else 0
