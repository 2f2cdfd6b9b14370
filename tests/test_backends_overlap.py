"""The torch backend allreduces gradients during backward, bucket by bucket (DDP's overlap),
with the same result as one allreduce after it. A stand-in for torch.distributed joins two
ranks in one process; parity with Horovod on real ranks is tests/test_run_mpi.py."""

import threading

import torch

from hpccl.core.backends import _AllreduceOnStep, _BucketedAllreduceOnStep


class TwoRanks:
    """torch.distributed for two ranks run as threads of this process. The k-th all_reduce
    of rank 0 and the k-th of rank 1 are one collective: once both have called it, both
    tensors hold the sum. The ranks get different data, so a reducer that leaves any
    gradient as its rank computed it (no copy back of the averaged bucket, a bucket
    reduced twice or not at all) gives a wrong average."""

    def __init__(self):
        self._cond = threading.Condition()
        self._calls = ([], [])
        self._done = set()
        self.ranks = [_Rank(self, 0), _Rank(self, 1)]

    def _all_reduce(self, rank, flat):
        with self._cond:
            k = len(self._calls[rank])
            self._calls[rank].append(flat)
            if len(self._calls[1 - rank]) > k:
                a, b = self._calls[0][k], self._calls[1][k]
                total = a + b               # a size mismatch (buckets out of order) raises here
                a.copy_(total)
                b.copy_(total)
                self._done.add(k)
                self._cond.notify_all()
        return k

    def _wait(self, k):
        with self._cond:
            if not self._cond.wait_for(lambda: k in self._done, timeout=60):
                raise AssertionError(f"the other rank never joined all_reduce #{k}")


class _Rank:
    def __init__(self, world, rank):
        self.world, self.rank = world, rank
        self.started = []            # (bucket sizes, during backward?)
        self.in_backward = False

    def all_reduce(self, flat, async_op=False):
        self.started.append((flat.numel(), self.in_backward))
        k = self.world._all_reduce(self.rank, flat)
        world = self.world

        class Work:
            def wait(self):
                world._wait(k)
        if not async_op:
            Work().wait()
            return None
        return Work()

    def get_world_size(self):
        return 2


def run_ranks(step):
    """``step(rank)`` on two threads at once; their results, in rank order."""
    results, errors = [None, None], []

    def run(r):
        try:
            results[r] = step(r)
        except BaseException as e:          # noqa: BLE001 - re-raised in the test's thread
            errors.append(e)
    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    assert not any(t.is_alive() for t in threads), "a rank did not finish"
    return results


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def _data(rank):
    """Each rank's own batch (a generator of its own: the ranks run in threads)."""
    return torch.randn(5, 8, generator=torch.Generator().manual_seed(100 + rank))


def _assert_averaged(local, reduced):
    """Every rank's gradients are exactly the mean of the ranks' own ones (computed as the
    reducer does: the sum, halved), and the ranks' own ones differed."""
    for i, (g0, g1) in enumerate(zip(*local)):
        assert not torch.equal(g0, g1), f"gradient {i}: the ranks' own gradients are equal"
        expected = (g0 + g1) / 2
        for r in (0, 1):
            assert torch.equal(reduced[r][i], expected), (r, i, reduced[r][i], expected)


def test_buckets_start_during_backward_in_reverse_order_and_average():
    world = TwoRanks()
    models = [_model(), _model()]       # the same start on both ranks, as after a broadcast

    def step(r):
        model, dist = models[r], world.ranks[r]
        opt = _BucketedAllreduceOnStep(torch.optim.SGD(model.parameters(), lr=0.1),
                                       list(model.parameters()), dist, bucket_bytes=1)  # one per parameter
        loss = model(_data(r)).pow(2).mean()
        dist.in_backward = True
        loss.backward()
        dist.in_backward = False
        local = [p.grad.clone() for p in model.parameters()]
        opt.synchronize()
        return local, [p.grad.clone() for p in model.parameters()]

    (local0, reduced0), (local1, reduced1) = run_ranks(step)
    for dist in world.ranks:
        assert [n for n, _ in dist.started] == [4, 64, 16, 128]      # last layer first
        assert all(during for _, during in dist.started)             # all while backward ran
    _assert_averaged((local0, local1), (reduced0, reduced1))


def test_a_parameter_without_gradient_is_sent_as_zeros_and_keeps_none():
    world = TwoRanks()
    models = [_model(), _model()]
    extras = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))]  # not in the graph

    def step(r):
        model, dist, extra = models[r], world.ranks[r], extras[r]
        params = list(model.parameters()) + [extra]
        opt = _BucketedAllreduceOnStep(torch.optim.SGD(params, lr=0.1), params, dist, bucket_bytes=1)
        model(_data(r)).pow(2).sum().backward()
        # its bucket comes first in order, so nothing can start before synchronize: the same
        # order on every rank, whatever fired
        started_in_backward = list(dist.started)
        local = [p.grad.clone() for p in model.parameters()]
        opt.synchronize()
        reduced = [p.grad.clone() for p in model.parameters()]
        with opt.skip_synchronize():            # as the training loop steps after clipping
            opt.step()
        return started_in_backward, local, reduced

    (before0, local0, reduced0), (before1, local1, reduced1) = run_ranks(step)
    assert before0 == before1 == []
    for dist in world.ranks:
        assert [n for n, _ in dist.started] == [3, 4, 64, 16, 128]
    assert extras[0].grad is None and extras[1].grad is None
    assert torch.equal(extras[0], torch.ones(3))        # no gradient, no step
    _assert_averaged((local0, local1), (reduced0, reduced1))


def test_buckets_give_what_the_single_allreduce_gave():
    """Per-parameter buckets, one bucket, and the plain allreduce after backward: the same
    averaged gradients, and the same parameters after the optimizer's step, on both ranks."""
    def wrap(kind, model, dist):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        if kind == "single":
            return _AllreduceOnStep(opt, list(model.parameters()), dist)
        return _BucketedAllreduceOnStep(opt, list(model.parameters()), dist,
                                        bucket_bytes=1 if kind == "per-parameter" else 1 << 30)

    after = {}
    for kind in ("per-parameter", "one-bucket", "single"):
        world = TwoRanks()
        models = [_model(), _model()]

        def step(r):
            model = models[r]
            opt = wrap(kind, model, world.ranks[r])
            model(_data(r)).pow(2).sum().backward()
            local = [p.grad.clone() for p in model.parameters()]
            opt.step()
            return local, [p.grad.clone() for p in model.parameters()]

        (local0, reduced0), (local1, reduced1) = run_ranks(step)
        _assert_averaged((local0, local1), (reduced0, reduced1))
        # the step used the average: the same as SGD on the averaged gradients by hand
        by_hand = _model()
        for p, g in zip(by_hand.parameters(), reduced0):
            p.grad = g.clone()
        torch.optim.SGD(by_hand.parameters(), lr=0.1).step()
        for m in models:
            for p, q in zip(m.parameters(), by_hand.parameters()):
                assert torch.equal(p, q), kind
        after[kind] = [p.detach().clone() for p in models[0].parameters()]
    for kind in ("one-bucket", "single"):
        assert all(torch.equal(p, q) for p, q in zip(after["per-parameter"], after[kind])), kind
