"""The torch backend allreduces gradients during backward, bucket by bucket (DDP's overlap),
with the same result as one allreduce after it. A stand-in for torch.distributed records
when each bucket starts; parity with Horovod on real ranks is tests/test_run_mpi.py."""

import torch

from hpccl.core.backends import _BucketedAllreduceOnStep


class RecordingDist:
    """Two 'ranks' whose gradients are equal: the sum doubles each value."""

    def __init__(self):
        self.started = []            # (bucket sizes, during backward?)
        self.in_backward = False

    def all_reduce(self, flat, async_op=False):
        self.started.append((flat.numel(), self.in_backward))
        flat.mul_(2)

        class Done:
            def wait(self):
                pass
        return Done()

    def get_world_size(self):
        return 2


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def test_buckets_start_during_backward_in_reverse_order_and_average():
    model, dist = _model(), RecordingDist()
    opt = _BucketedAllreduceOnStep(torch.optim.SGD(model.parameters(), lr=0.1),
                                   list(model.parameters()), dist, bucket_bytes=1)   # one per parameter
    loss = model(torch.randn(5, 8)).pow(2).mean()
    dist.in_backward = True
    loss.backward()
    dist.in_backward = False
    reference = [p.grad.clone() for p in model.parameters()]
    assert [n for n, _ in dist.started] == [4, 64, 16, 128]      # last layer first
    assert all(during for _, during in dist.started)             # all while backward ran
    opt.synchronize()
    for p, g in zip(model.parameters(), reference):
        assert torch.equal(p.grad, g * 2 / 2)                    # summed over 2 ranks, averaged


def test_a_parameter_without_gradient_is_sent_as_zeros_and_keeps_none():
    model, dist = _model(), RecordingDist()
    extra = torch.nn.Parameter(torch.ones(3))                    # not in the graph this step
    params = list(model.parameters()) + [extra]
    opt = _BucketedAllreduceOnStep(torch.optim.SGD(params, lr=0.1), params, dist, bucket_bytes=1)
    model(torch.randn(5, 8)).sum().backward()
    # its bucket comes first in order, so nothing can start before synchronize: the same
    # order on every rank, whatever fired
    assert dist.started == []
    opt.synchronize()
    assert [n for n, _ in dist.started] == [3, 4, 64, 16, 128] and extra.grad is None
    opt.step()


def test_one_bucket_gives_what_the_single_allreduce_gave():
    a, b = _model(), _model()
    x = torch.randn(5, 8)
    for model, size in ((a, 1), (b, 1 << 30)):
        opt = _BucketedAllreduceOnStep(torch.optim.SGD(model.parameters(), lr=0.1),
                                       list(model.parameters()), RecordingDist(), bucket_bytes=size)
        model(x).sum().backward()
        opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
