import copy

import pytest
import torch

from hpccl.alma.learners import (FixedEnsemble, GrowingEnsemble, GrowingMoE, MoELayer, MoENet, SingleModel,
                                 TrainSettings, train_early_stopping)
from hpccl.alma.metrics import FlopMeter
from hpccl.models import MLP


def _data(n=64, d=6, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long() % c


FAST = TrainSettings(lr=0.1, batch_size=16, max_epochs=3, patience=1)


@pytest.mark.parametrize("init", ["fresh", "copy"])
def test_ensemble_prediction_is_mean_of_member_logits(init):
    x, y = _data()
    ens = GrowingEnsemble(lambda: MLP((6,), 3, hidden=(8,)), FAST, init=init)
    for k in range(3):
        ens.update(x, y, x[:16], y[:16], k)
    assert len(ens.members) == 3
    with torch.no_grad():
        want = sum(m(x) for m in ens.members) / 3
    assert torch.allclose(ens.predict(x), want, atol=1e-6)
    assert ens.num_parameters() == 3 * sum(p.numel() for p in ens.members[0].parameters())
    fixed = FixedEnsemble(lambda: MLP((6,), 3, hidden=(8,)), FAST, size=2, train="round_robin")
    before = copy.deepcopy(fixed.members[1].state_dict())
    fixed.update(x, y, x[:16], y[:16], 0)    # trains member 0 only
    assert all(torch.equal(v, fixed.members[1].state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        assert torch.allclose(fixed.predict(x), (fixed.members[0](x) + fixed.members[1](x)) / 2, atol=1e-6)


@torch.no_grad()
def test_expert_split_keeps_function():
    torch.manual_seed(0)
    net = MoENet((10,), 4, hidden=12, num_layers=2, num_experts=3)
    for layer in net.moe:   # non-trivial gates
        layer.gate.weight.normal_()
        layer.gate.bias.normal_()
    x = torch.randn(50, 10)
    before = net(x)
    for layer, e in zip(net.moe, (0, 2)):
        layer.split(e, noise=0.05)
    assert [layer.num_experts for layer in net.moe] == [4, 4]
    assert torch.allclose(net(x), before, atol=1e-5)
    # the copies share the split expert's probability, other experts keep theirs
    layer = MoELayer(5, 3, num_experts=3)
    layer.gate.bias.normal_()
    z = torch.randn(7, 5)
    p0 = torch.softmax(layer.gate(z), 1)
    layer.split(1, noise=0.1)
    p1 = torch.softmax(layer.gate(z), 1)
    assert torch.allclose(p1[:, 1], p0[:, 1] / 2, atol=1e-6) and torch.allclose(p1[:, 3], p0[:, 1] / 2, atol=1e-6)
    assert torch.allclose(p1[:, [0, 2]], p0[:, [0, 2]], atol=1e-6)
    assert not torch.equal(layer.weight[1], layer.weight[3])     # symmetry broken


def test_growing_moe_splits_most_used_expert_every_g_updates():
    x, y = _data()
    moe = GrowingMoE(lambda: MoENet((6,), 3, hidden=8, num_layers=2, num_experts=1), FAST, split_every=2,
                     max_experts=3)
    splits = [moe.update(x, y, x[:16], y[:16], k)["split"] for k in range(6)]
    assert splits[0] == [] and splits[2] == [] and splits[4] == []
    assert splits[1] == [0, 0]                       # one expert: it is the most used
    assert [layer.num_experts for layer in moe.model.moe] == [3, 3]
    assert splits[5] == [None, None]                 # capped
    usage = moe.model.gate_usage(x)
    assert all(torch.isclose(u.sum(), torch.tensor(1.0)) for u in usage)


def test_early_stopping_restores_best_and_counts_flops():
    x, y = _data(96)
    torch.manual_seed(0)
    model = MLP((6,), 3, hidden=(8,))
    meter = FlopMeter()
    s = TrainSettings(lr=0.1, batch_size=16, max_epochs=8, patience=2)
    out = train_early_stopping(model, x[:64], y[:64], x[64:], y[64:], s, flops=meter)
    assert out["epochs"] <= 8 and out["best_epoch"] < out["epochs"]
    assert out["epochs"] == 8 or out["epochs"] - 1 - out["best_epoch"] >= 2
    with torch.no_grad():
        acc = float((model(x[64:]).argmax(1) == y[64:]).float().mean())
    assert acc == pytest.approx(out["val_accuracy"])
    assert out["samples"] == out["epochs"] * 64
    per_sample = 2 * (6 * 8 + 8 * 3) + 2 * 6 * 8 + 4 * 8 * 3
    assert out["flops_per_sample"] == per_sample and meter.total == per_sample * out["samples"]


def test_allreduce_mean_hook_is_used_and_reinit_changes_model():
    x, y = _data()
    calls = []

    def allreduce_mean(ts):   # one rank: the mean is the identity
        calls.append(len(ts))
        return [t.clone() for t in ts]
    single = SingleModel(lambda: MLP((6,), 3, hidden=(8,)), FAST, mode="reinit", allreduce_mean=allreduce_mean)
    single.update(x, y, x[:16], y[:16], 0)
    first = single.model
    single.update(x, y, x[:16], y[:16], 1)
    assert single.model is not first
    # Per update: the global size (1 tensor), the 4 gradients of every step (64 samples in
    # batches of 16: 4 steps an epoch), the divergence flag and validation counts (1 each).
    grads = sum(1 for n in calls if n == len(list(first.parameters())))
    assert grads >= 2 * 4 and grads % 4 == 0, calls
    assert set(calls) == {1, 4}, calls


def test_two_simulated_ranks_keep_identical_replicas():
    """Data parallelism through ``allreduce_mean`` only: two threads, disjoint shards."""
    import threading

    from hpccl.alma.stream import shard
    x, y = _data(90)
    barrier, slots = threading.Barrier(2), [None, None]

    def make_allreduce(rank):
        def allreduce_mean(ts):
            slots[rank] = [t.detach().clone() for t in ts]
            barrier.wait()
            out = [(a + b) / 2 for a, b in zip(*slots)]
            barrier.wait()
            return out
        return allreduce_mean
    learners, errors = [None, None], []

    def work(rank):
        try:
            lr = GrowingMoE(lambda: MoENet((6,), 3, hidden=8, num_layers=1), FAST, split_every=1,
                            allreduce_mean=make_allreduce(rank), world_size=2, rank=rank)
            tr, va = shard(torch.arange(70), rank, 2), shard(torch.arange(70, 90), rank, 2)
            for k in range(2):
                lr.update(x[tr], y[tr], x[va], y[va], k)
            learners[rank] = lr
        except Exception as e:  # pragma: no cover
            errors.append(e)
            barrier.abort()
    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    a, b = (lr.model.state_dict() for lr in learners)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert learners[0].model.moe[0].num_experts == 3
