"""Online training: masks are respected, the spiral task is learned, tasks and records."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hpccl.rtrl import (EGRUNet, OnlineTrainer, digits_task, evaluate, from_arrays,
                        spiral_task)


@pytest.mark.parametrize("mode", ["rtrl_sparse", "rtrl_dense", "bptt"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_masked_parameters_never_change(mode, optimizer):
    task = spiral_task(64, seed=1)
    net = EGRUNet(2, 12, 2, seed=2, weight_sparsity=0.7, input_gain=3.0)
    off = net.cell.mask == 0
    assert off.any()
    U0 = net.cell.U.detach().clone()
    assert (U0[:, off] == 0).all()
    tr = OnlineTrainer(net, mode, update_every=4, lr=0.05, optimizer=optimizer)
    tr.run(task.stream(12, seed=0))
    assert tr.updates > 0
    U = net.cell.U.detach()
    assert (U[:, off] == 0).all()                        # masked weights untouched ...
    assert not torch.equal(U[:, ~off], U0[:, ~off])      # ... while the others learned


def test_online_run_learns_spiral():
    torch.manual_seed(0)
    task = spiral_task(2048, seed=0)
    train, test = task.split(0.25, seed=0)
    net = EGRUNet(2, 16, 2, seed=0, weight_sparsity=0.5, input_gain=3.0)
    recs = []
    tr = OnlineTrainer(net, "rtrl_sparse", lr=0.01)
    tr.run(train.stream(400, seed=1), callback=recs.append)
    final = np.mean([r["correct"] for r in recs[-100:]])
    first = np.mean([r["correct"] for r in recs[:100]])
    assert final >= 0.8, (first, final)                   # chance is 0.5
    assert evaluate(net, test.x, test.y) >= 0.8
    r = recs[-1]
    assert 0 < r["activity"] < 1 and 0 < r["relevant"] <= 1
    assert 0 < r["influence_nnz"] <= 1
    assert r["mem_bytes"] == 16 * (3 * 16 * 2 + 3 * int(net.cell.mask.sum()) + 3 * 16 + 16) * 4
    assert r["macs_per_step"] > 0 and r["time_per_step"] > 0 and r["updates"] == 400


def test_record_fields_and_online_updates():
    task = spiral_task(32, seed=3)
    net = EGRUNet(2, 8, 2, seed=0, weight_sparsity=0.5)
    recs = []
    tr = OnlineTrainer(net, "rtrl_sparse", update_every=1, loss_at="all", lr=1e-3)
    out = tr.run(task.stream(3, seed=0), callback=recs.append)
    assert out["sequences"] == 3 and tr.updates == 3 * task.seq_len
    keys = {"sequence", "mode", "steps", "loss", "correct", "acc_window", "acc_stream",
            "activity", "relevant", "influence_nnz", "macs_per_step", "mem_bytes",
            "time_per_step", "updates"}
    assert keys <= set(recs[0])
    assert all(math.isfinite(r["loss"]) for r in recs)


def test_bptt_memory_grows_rtrl_does_not():
    mem = {}
    for T in (10, 40):
        x = np.random.default_rng(0).normal(size=(4, T, 2))
        task = from_arrays(x, [0, 1, 0, 1])
        for mode in ("bptt", "rtrl_sparse"):
            net = EGRUNet(2, 8, 2, seed=0)
            recs = []
            OnlineTrainer(net, mode).run(task.stream(1), callback=recs.append)
            mem[mode, T] = recs[0]["mem_bytes"]
    assert mem["bptt", 40] > 3 * mem["bptt", 10]
    assert mem["rtrl_sparse", 40] == mem["rtrl_sparse", 10]


def test_tasks():
    d = digits_task()
    assert d.x.shape[1:] == (8, 8) and d.num_classes == 10 and d.x.max() <= 1.0
    s = spiral_task(100, seq_len=17, seed=0)
    assert s.x.shape == (100, 17, 2) and set(np.unique(s.y)) == {0, 1}
    # the two classes are mirror images: same radius, opposite rotation sense
    x0 = s.x[s.y == 0][0]
    cross = x0[:-1, 0] * x0[1:, 1] - x0[:-1, 1] * x0[1:, 0]
    x1 = s.x[s.y == 1][0]
    cross1 = x1[:-1, 0] * x1[1:, 1] - x1[:-1, 1] * x1[1:, 0]
    assert (np.sign(cross) == -np.sign(cross1[0])).all()
    # streams: rank shards are disjoint, deterministic, and cycle
    t = from_arrays(np.arange(10 * 2 * 1).reshape(10, 2, 1), np.arange(10) % 2)
    r0 = [int(x[0, 0]) // 2 for x, _ in t.stream(5, rank=0, world_size=2)]
    r1 = [int(x[0, 0]) // 2 for x, _ in t.stream(5, rank=1, world_size=2)]
    assert sorted(r0) == [0, 2, 4, 6, 8] and sorted(r1) == [1, 3, 5, 7, 9]
    assert r0 == [int(x[0, 0]) // 2 for x, _ in t.stream(5, rank=0, world_size=2)]
    assert len(list(t.stream(23))) == 23
    with pytest.raises(ValueError):
        from_arrays(np.zeros((3, 4)), [0, 1, 0])
    with pytest.raises(ValueError):
        from_arrays(np.zeros((3, 4, 1)), [0, 1])


def test_bad_arguments():
    net = EGRUNet(2, 4, 2)
    with pytest.raises(ValueError):
        OnlineTrainer(net, "rtrl_fast")
    with pytest.raises(ValueError):
        OnlineTrainer(net, update_every=0)
    with pytest.raises(ValueError):
        EGRUNet(2, 4, 2, weight_sparsity=1.0)
