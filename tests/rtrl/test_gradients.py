"""Sparse RTRL, dense RTRL and BPTT compute the same gradient (float64)."""
from __future__ import annotations

import pytest
import torch

from hpccl.rtrl import EGRUNet, RTRLLearner, make_learner, spiral_task


def _net(n=10, d=3, ws=0.5, act=True, support=1.0, learn_thr=True, seed=0):
    net = EGRUNet(d, n, 3, seed=seed, dtype=torch.float64, weight_sparsity=ws,
                  activity_sparse=act, pseudo_support=support, learn_threshold=learn_thr,
                  input_gain=3.0)
    with torch.no_grad():  # stronger recurrence: more events and more mixing between units
        net.cell.U.mul_(2.0)
        net.cell.b.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(seed))
    return net


def _inputs(T=12, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, d, generator=g, dtype=torch.float64)


def _grads(net, mode, x, targets, **kw):
    for p in net.parameters():
        p.grad = None
    L = RTRLLearner(net, sparse=(mode == "rtrl_sparse"), **kw) if mode != "bptt" \
        else make_learner(net, mode)
    L.reset()
    stats = []
    for t in range(x.shape[0]):
        stats.append(L.step(x[t], targets[t]).stats)
    assert L.flush() == sum(tg is not None for tg in targets)
    return {k: p.grad.clone() for k, p in net.named_parameters()}, stats


def _assert_close(ga, gb, tol=1e-10):
    for k in ga:
        scale = 1.0 + float(ga[k].abs().max())
        err = float((ga[k] - gb[k]).abs().max())
        assert err <= tol * scale, f"{k}: max |diff| {err:.3e}"


CASES = [
    # weight sparsity, activity sparse, pseudo-derivative support, learn thresholds
    (0.0, True, 1.0, True),
    (0.6, True, 1.0, True),
    (0.6, True, 0.3, True),   # narrow support: many columns of J are skipped
    (0.8, True, 0.3, False),
    (0.5, False, 1.0, False),  # plain GRU
]


@pytest.mark.parametrize("ws,act,support,learn_thr", CASES)
@pytest.mark.parametrize("loss_at", ["last", "all"])
def test_sparse_dense_bptt_agree(ws, act, support, learn_thr, loss_at):
    net = _net(ws=ws, act=act, support=support, learn_thr=learn_thr)
    x = _inputs()
    T = x.shape[0]
    targets = [t % 3 if (loss_at == "all" or t == T - 1) else None for t in range(T)]
    g_bptt, _ = _grads(net, "bptt", x, targets)
    g_dense, _ = _grads(net, "rtrl_dense", x, targets)
    g_sparse, st = _grads(net, "rtrl_sparse", x, targets)
    assert float(g_bptt["cell.U"].abs().max()) > 1e-6  # the check is not vacuous
    _assert_close(g_dense, g_bptt)
    _assert_close(g_sparse, g_dense)
    if act:
        assert 0 < max(s["active"] for s in st) < 1
    if support < 1.0:  # the sparse engine really skipped columns
        assert min(s["relevant"] for s in st[1:]) < 1.0
        assert sum(s["macs"] for s in st) < 0.5 * (
            sum(s["macs"] for s in _grads(net, "rtrl_dense", x, targets)[1]))


@pytest.mark.parametrize("spmm", ["dense", "auto"])
def test_spmm_kernels_agree(spmm):
    net = _net(ws=0.7, support=0.5)
    x = _inputs()
    targets = [None] * (x.shape[0] - 1) + [1]
    g_csr, _ = _grads(net, "rtrl_sparse", x, targets)
    g_other, _ = _grads(net, "rtrl_sparse", x, targets, spmm=spmm)
    _assert_close(g_csr, g_other, 1e-12)


def test_sparse_equals_dense_without_sparsity():
    """Activity sparsity off and density 1: same layout, same influence matrix, same grads."""
    net = _net(ws=0.0, act=False, learn_thr=False)
    x = _inputs(T=15)
    dense, sparse = RTRLLearner(net, sparse=False), RTRLLearner(net, sparse=True)
    dense.reset()
    sparse.reset()
    assert dense.layout.P == sparse.layout.P
    for t in range(x.shape[0]):
        tgt = t % 3
        dense.step(x[t], tgt)
        sparse.step(x[t], tgt)
        assert torch.allclose(dense.M, sparse.M, rtol=0, atol=1e-12)
    assert torch.allclose(dense.grad_flat, sparse.grad_flat, rtol=0, atol=1e-12)


def test_masked_columns_not_stored():
    net = _net(n=20, ws=0.75)
    dense, sparse = RTRLLearner(net, sparse=False), RTRLLearner(net, sparse=True)
    nnz = int(net.cell.mask.sum())
    assert sparse.layout.E == nnz and dense.layout.E == 20 * 20
    assert sparse.influence_bytes() < 0.5 * dense.influence_bytes()
    assert sparse.layout.P_dense == dense.layout.P


def test_spiral_gradients_agree_float64():
    task = spiral_task(4, seed=5)
    net = EGRUNet(2, 12, 2, seed=3, dtype=torch.float64, weight_sparsity=0.5, input_gain=3.0)
    x = torch.as_tensor(task.x[0], dtype=torch.float64)
    targets = [None] * (task.seq_len - 1) + [int(task.y[0])]
    g_bptt, _ = _grads(net, "bptt", x, targets)
    g_dense, _ = _grads(net, "rtrl_dense", x, targets)
    g_sparse, _ = _grads(net, "rtrl_sparse", x, targets)
    _assert_close(g_dense, g_bptt)
    _assert_close(g_sparse, g_bptt)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = _inputs()
    targets = [None] * (x.shape[0] - 1) + [2]
    cpu = _net(ws=0.6, support=0.5)
    gpu = _net(ws=0.6, support=0.5).cuda()
    g_cpu, _ = _grads(cpu, "rtrl_sparse", x, targets)
    g_gpu, _ = _grads(gpu, "rtrl_sparse", x.cuda(), targets)
    _assert_close(g_cpu, {k: v.cpu() for k, v in g_gpu.items()})
