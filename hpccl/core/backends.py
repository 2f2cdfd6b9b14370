"""Gradient allreduce backends behind one small interface.

Both average gradients over ranks before every optimizer step and start every replica from
rank 0's parameters, so the same job gives the same losses on either (up to reduction order).

- ``horovod``: ``hvd.DistributedOptimizer`` (allreduces start during backward as each
  gradient is ready, and are awaited in ``step()``).
- ``torch``: torch.distributed (gloo on CPU, nccl on GPU), rendezvous set up from MPI so no
  torchrun is needed; gradients are bucketed (25 MB) and each bucket's allreduce starts
  during backward as soon as its gradients are ready, awaited in ``step()`` (as DDP does).
- ``mpi``: the same flattened buffer, allreduced by mpi4py on the World's communicator.
"""

from __future__ import annotations

import contextlib
import socket

import torch

from hpccl.core.errors import ConfigError, PeerLost


class GradientBackend:
    name = "?"

    def distributed_optimizer(self, model: torch.nn.Module, optimizer):
        """Return an optimizer whose ``step()`` applies rank-averaged gradients, after
        broadcasting the model and optimizer state from rank 0."""
        raise NotImplementedError

    def allreduced_parameters(self, optimizer) -> list:
        """The parameters whose gradients one ``step()`` of ``optimizer`` allreduces."""
        raise NotImplementedError

    def step_bytes(self, optimizer) -> int:
        """Gradient bytes one step allreduces per rank (what the wrapper really hooked)."""
        return sum(p.numel() * p.element_size() for p in self.allreduced_parameters(optimizer))

    def shutdown(self):
        pass


class HorovodBackend(GradientBackend):
    name = "horovod"

    def __init__(self, world):
        from hpccl.core.mpi import horovod_mpi_mismatch
        mismatch = horovod_mpi_mismatch()
        if mismatch:
            raise ConfigError(mismatch)
        try:
            import horovod.torch as hvd
        except ImportError as e:
            raise ConfigError(
                f"runtime.backend is 'horovod' but Horovod cannot be imported ({e}). HINT: run "
                "scripts/setup.sh (it builds Horovod 0.28.1 with PyTorch+MPI+Gloo), load your "
                "site's Horovod module, or set 'runtime.backend: mpi' (or torch).") from None
        self.hvd = hvd
        from hpccl.core.mpi import require_thread_multiple
        require_thread_multiple("runtime.backend 'horovod' (its background thread runs the "
                                "allreduces)", "or set 'runtime.backend: mpi' (or torch)")
        # Share our (THREAD_MULTIPLE) communicator rather than letting Horovod init MPI.
        hvd.init(comm=world.comm)
        if hvd.size() != world.size:
            raise RuntimeError(f"Horovod sees {hvd.size()} ranks, MPI {world.size}")
        self._count = 0

    def distributed_optimizer(self, model, optimizer):
        hvd = self.hvd
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        self._count += 1
        # Distinct names per optimizer: a learner that rebuilds its model (scratch) gets
        # fresh tensor names, so Horovod never mixes old and new parameters.
        named = [(f"opt{self._count}.{n}", p) for n, p in model.named_parameters()]
        return hvd.DistributedOptimizer(optimizer, named_parameters=named, op=hvd.Average)

    def allreduced_parameters(self, optimizer):
        # Horovod hooks (and allreduces, also when a gradient is missing) exactly these.
        return list(optimizer._requires_update)

    def shutdown(self):
        self.hvd.shutdown()


class _AllreduceOnStep:
    """Wraps an optimizer: ``step()`` first averages all gradients over ranks in one call.

    ``synchronize()`` and ``skip_synchronize()`` mirror Horovod's DistributedOptimizer, so
    the training loop can clip the averaged gradients the same way on both backends.
    """

    def __init__(self, optimizer, params, dist):
        self._opt, self._params, self._dist = optimizer, params, dist
        self._skip = False

    def synchronize(self):
        grads = [p.grad for p in self._params if p.grad is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            self._dist.all_reduce(flat)
            flat /= self._dist.get_world_size()
            offset = 0
            for g in grads:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    @contextlib.contextmanager
    def skip_synchronize(self):
        self._skip = True
        try:
            yield
        finally:
            self._skip = False

    def step(self, closure=None):
        if not self._skip:
            self.synchronize()
        return self._opt.step(closure)

    def __getattr__(self, name):  # zero_grad, param_groups, state_dict, ...
        return getattr(self._opt, name)


@contextlib.contextmanager
def _peer_failures():
    """torch.distributed reports a peer that died or vanished as a RuntimeError from gloo or
    NCCL ("Connection closed by peer", "Connection reset", a timeout): name it as what it is."""
    try:
        yield
    except RuntimeError as e:
        text = str(e)
        if not any(k in text for k in ("Connection closed by peer", "Connection reset", "Timed out",
                                        "timed out", "Broken pipe", "NCCL communicator was aborted")):
            raise
        detail = text.strip().splitlines()[0]
        if "] " in detail:
            detail = detail.split("] ", 1)[1]     # gloo prefixes its source file and line
        raise PeerLost(f"the gradient allreduce (torch.distributed) lost another rank: {detail}. "
                       "Another rank or its node failed; its own error, or the launcher's, says "
                       "why. A requeue or 'hpccl run --resume RUN_DIR' continues from the last "
                       "checkpoint.") from None


class _BucketedAllreduceOnStep(_AllreduceOnStep):
    """Like ``_AllreduceOnStep``, but the gradients are allreduced during the backward pass:
    parameters are grouped into buckets of about ``bucket_bytes`` in reverse order (the order
    backward produces them), and a bucket's asynchronous allreduce starts as soon as its last
    gradient is accumulated, while backward goes on with earlier layers (what DDP does).
    ``synchronize()`` starts the buckets left (parameters that got no gradient this step:
    zeros, as Horovod sends) and waits for all. Buckets start in the same order on every rank,
    so the collectives match whatever order the hooks fire in."""

    def __init__(self, optimizer, params, dist, bucket_bytes: int):
        super().__init__(optimizer, params, dist)
        trainable = [p for p in params if p.requires_grad]
        self._buckets, current, size = [], [], 0
        for p in reversed(trainable):
            current.append(p)
            size += p.numel() * p.element_size()
            if size >= bucket_bytes:
                self._buckets.append(current)
                current, size = [], 0
        if current:
            self._buckets.append(current)
        bucket_of = {id(p): i for i, b in enumerate(self._buckets) for p in b}
        self.hooks = [p.register_post_accumulate_grad_hook(
            lambda p, i=bucket_of[id(p)]: self._gradient_ready(i)) for p in trainable]
        self._start_step()

    def _start_step(self):
        self._waiting = [len(b) for b in self._buckets]
        self._next, self._work = 0, []

    def _gradient_ready(self, bucket: int):
        self._waiting[bucket] -= 1
        while self._next < len(self._buckets) and self._waiting[self._next] <= 0:
            self._launch(self._next)

    def _launch(self, i: int):
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                          for p in self._buckets[i]])
        with _peer_failures():
            self._work.append((i, flat, self._dist.all_reduce(flat, async_op=True)))
        self._next = i + 1

    def synchronize(self):
        while self._next < len(self._buckets):
            self._launch(self._next)
        n = self._dist.get_world_size()
        for i, flat, handle in self._work:
            with _peer_failures():
                handle.wait()
            flat /= n
            offset = 0
            for p in self._buckets[i]:
                if p.grad is not None:      # a parameter without a gradient keeps none
                    p.grad.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        self._start_step()


class TorchDistBackend(GradientBackend):
    name = "torch"

    def __init__(self, world):
        import torch.distributed as dist
        self.dist = dist
        backend = "nccl" if world.device.type == "cuda" else "gloo"
        if world.rank == 0:
            host = "127.0.0.1" if world.num_nodes == 1 else socket.gethostbyname(socket.gethostname())
            with socket.socket() as s:  # a free port; tiny race window, retried below
                s.bind((host, 0))
                port = s.getsockname()[1]
            addr = (host, port)
        else:
            addr = None
        host, port = world.bcast(addr)
        dist.init_process_group(backend, init_method=f"tcp://{host}:{port}",
                                rank=world.rank, world_size=world.size)

    BUCKET_BYTES = 25 << 20       # DDP's default

    def distributed_optimizer(self, model, optimizer):
        for tensor in model.state_dict().values():
            self.dist.broadcast(tensor, src=0)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for hook in getattr(self, "_hooks", ()):    # one wrapper at a time hooks the gradients
            hook.remove()
        wrapped = _BucketedAllreduceOnStep(optimizer, params, self.dist, self.BUCKET_BYTES)
        self._hooks = wrapped.hooks
        return wrapped

    def allreduced_parameters(self, optimizer):
        # synchronize() flattens the gradients of these that have one.
        return [p for p in optimizer._params if p.requires_grad]

    def shutdown(self):
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


class _CollectivesAsDist:
    """What ``_AllreduceOnStep`` needs of torch.distributed, done by the World's collectives."""

    def __init__(self, collectives):
        self._coll = collectives

    def all_reduce(self, tensor):
        self._coll.sum_tensors([tensor], exact=False)     # in place, in the gradients' dtype

    def get_world_size(self) -> int:
        return self._coll.size


class MpiBackend(GradientBackend):
    """Gradients averaged by one MPI_Allreduce per step through mpi4py, on the World's own
    communicator: no second runtime beside MPI (no Horovod build, no TCP rendezvous), so it
    runs wherever mpi4py does (Cray MPICH, HPC-X, OpenMPI). It does not overlap the allreduce
    with the backward pass as Horovod does, and a CUDA gradient travels through host memory."""
    name = "mpi"

    def __init__(self, world):
        self.world = world

    def distributed_optimizer(self, model, optimizer):
        state = model.state_dict()
        for key, value in self.world.bcast({k: v.cpu() for k, v in state.items()}).items():
            state[key].copy_(value)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return _AllreduceOnStep(optimizer, params, _CollectivesAsDist(self.world.collectives))

    def allreduced_parameters(self, optimizer):
        return [p for p in optimizer._params if p.requires_grad]


BACKENDS = {"horovod": HorovodBackend, "torch": TorchDistBackend, "mpi": MpiBackend}


def make_backend(name: str, world) -> GradientBackend:
    return BACKENDS[name](world)
