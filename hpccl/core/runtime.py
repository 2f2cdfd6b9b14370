"""The World a rank lives in: MPI rank and size, its node, its device, the collectives on
its communicator, and the gradient allreduce backend (Horovod, torch.distributed or MPI)
behind one small interface.

Rank layout comes from MPI itself (``Split_type(COMM_TYPE_SHARED)`` groups the ranks of a
node), so it is the same under mpirun, srun, and Cray/PALS mpiexec, with no launcher-specific
environment variables.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from hpccl.core.collectives import Collectives
from hpccl.core.errors import ConfigError
from hpccl.core.mpi import mpi
from hpccl.core.watchdog import NoWatchdog, Watchdog

if TYPE_CHECKING:
    from hpccl.core.backends import GradientBackend


@dataclass
class World:
    comm: object                 # MPI.COMM_WORLD (or a sub-communicator)
    rank: int
    size: int
    node_comm: object            # the ranks sharing this node's memory
    local_rank: int
    local_size: int
    node_index: int              # which node, 0..num_nodes-1, in rank order
    num_nodes: int
    hostname: str
    device: torch.device
    backend: "GradientBackend | None" = field(default=None, repr=False)
    collectives: Collectives = field(default=None, repr=False)   # on ``comm``; see core/collectives.py
    watchdog: object = field(default_factory=NoWatchdog, repr=False)   # core/watchdog.py

    def __post_init__(self):
        if self.collectives is None:
            self.collectives = Collectives(self.comm)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def barrier(self, what: str = "a barrier"):
        with self.watchdog.waiting(what):
            self.comm.Barrier()

    def bcast(self, obj, root: int = 0, what: str = "a broadcast"):
        with self.watchdog.waiting(what):
            return self.comm.bcast(obj, root=root)

    def allreduce_sum(self, values, what: str = "a metrics allreduce"):
        """Sum a small float64 array over ranks (metrics, counts): one MPI call."""
        with self.watchdog.waiting(what):
            return self.collectives.sum(values)

    def abort(self, code: int = 1):
        self.comm.Abort(code)


def _pick_device(kind: str, local_rank: int) -> torch.device:
    if kind == "cpu" or (kind == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("runtime.device is 'cuda' but torch sees no GPU on this node "
                          f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). "
                          "HINT: use 'device: auto' to fall back to the CPU.")
    # One GPU per rank on its node; several ranks share a GPU only when oversubscribed.
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    # Fixed shapes batch after batch: let cuDNN time its algorithms once and keep the fastest.
    torch.backends.cudnn.benchmark = True
    return torch.device("cuda", index)


def _my_cores() -> frozenset:
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:
        return frozenset(range(os.cpu_count() or 1))


def _kernel_id() -> str:
    """Which running kernel this is: ranks with the same id share one machine's cores, whatever
    MPI calls their nodes (containers, network namespaces and VMs' hosts report another
    hostname on the same cores)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return socket.gethostname()


def core_sharers(comm) -> int:
    """How many ranks (this one included) run on this machine with CPU sets that overlap this
    rank's: the ranks its threads compete with for cores. MPI's node (``COMM_TYPE_SHARED``)
    can undercount them: hosts made by namespaces or containers on one machine are separate
    nodes to MPI and still share its cores."""
    mine = _my_cores()
    me = _kernel_id()
    everyone = comm.allgather((me, sorted(mine)))
    return sum(1 for kernel, cores in everyone if kernel == me and mine & set(cores))


def busy_poll_warning(sharers: int, local_size: int, hostname: str, env=os.environ) -> str | None:
    """OpenMPI waits by polling without yielding unless it sees more ranks on its node than
    cores; ranks it places on different nodes of one machine (namespaces, containers) then
    spin against each other's compute (measured on the multi-host test bed: Horovod's
    background thread made 3 epochs 31x slower). Say so, with the fix, where it applies."""
    cores = len(_my_cores())
    if sharers <= cores or local_size > cores or "OMPI_MCA_mpi_yield_when_idle" in env:
        return None
    MPI = mpi()
    if "Open MPI" not in MPI.Get_library_version():
        return None         # MPICH yields to the scheduler after a bounded number of polls
    return (f"{sharers} ranks share the {cores} cores of this machine, but MPI places only "
            f"{local_size} on its node {hostname!r}, so Open MPI's waits poll without yielding and "
            "steal the cores from training. HINT: export OMPI_MCA_mpi_yield_when_idle=1 in the job's "
            "environment (the site file's 'env:'), which is what Open MPI does by itself when it "
            "sees more ranks than cores.")


def _set_threads(device: torch.device, sharers: int, threads: int | None):
    if threads is None:
        cores = len(_my_cores())
        # On CPU the ranks that share these cores split them (compute threads beyond the cores
        # stall in OpenMP barriers behind each other); on GPU a couple of threads suffice.
        threads = max(1, cores // max(1, sharers)) if device.type == "cpu" else min(4, cores)
    torch.set_num_threads(threads)


def init_world(runtime_cfg, comm=None) -> World:
    """Initialise MPI, place this rank on a device, and start the allreduce backend."""
    MPI = mpi()
    comm = comm if comm is not None else MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    node_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    local_rank, local_size = node_comm.Get_rank(), node_comm.Get_size()
    # Number nodes by their lowest rank so node_index is the same on every launcher.
    leader = node_comm.bcast(rank, root=0)
    leaders = sorted(set(comm.allgather(leader)))
    device = _pick_device(runtime_cfg.device, local_rank)
    sharers = core_sharers(comm)
    _set_threads(device, sharers, runtime_cfg.threads_per_rank)
    warning = busy_poll_warning(sharers, local_size, socket.gethostname())
    if warning and rank == 0:
        sys.stderr.write(f"hpccl: warning: {warning}\n")
        sys.stderr.flush()
    world = World(comm=comm, rank=rank, size=size, node_comm=node_comm, local_rank=local_rank,
                  local_size=local_size, node_index=leaders.index(leader), num_nodes=len(leaders),
                  hostname=socket.gethostname(), device=device)
    timeout = runtime_cfg.hang_timeout_s
    if timeout > 0 and size > 1:
        world.watchdog = Watchdog(timeout, rank, world.hostname, abort=comm.Abort)
    from hpccl.core.backends import make_backend
    world.backend = make_backend(runtime_cfg.backend, world)
    return world


def shutdown_world(world: World):
    world.watchdog.stop()
    if world.backend is not None:
        world.backend.shutdown()
        world.backend = None
    world.node_comm.Free()


def abort_on_error(fn):
    """Run ``fn()``; if it raises on this rank, print the error tagged with the rank and abort
    the whole MPI job, so other ranks blocked in a collective never hang."""
    try:
        return fn()
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure must end all ranks
        from hpccl.core.errors import CollectiveError, HpcclError
        MPI = mpi()
        rank = MPI.COMM_WORLD.Get_rank() if MPI.Is_initialized() else 0
        size = MPI.COMM_WORLD.Get_size() if MPI.Is_initialized() else 1
        if isinstance(exc, CollectiveError):     # every rank is here: no abort needed
            if rank == 0:
                sys.stderr.write(f"hpccl: error: {exc}\n")
                sys.stderr.flush()
            raise SystemExit(exc.exit_code) from None
        if isinstance(exc, HpcclError):
            text = f"hpccl: error on rank {rank} ({socket.gethostname()}): {exc}\n"
        else:
            text = f"hpccl: rank {rank} failed:\n" + "".join(traceback.format_exception(exc))
        sys.stderr.write(text)
        sys.stderr.flush()
        if size > 1 and MPI.Is_initialized() and not MPI.Is_finalized():
            # Give the launcher a moment to forward what was just written: MPICH's Hydra
            # tears the job down on the first abort and was seen to drop every rank's message.
            import time
            time.sleep(0.5)
            MPI.COMM_WORLD.Abort(1)
        raise SystemExit(1)
