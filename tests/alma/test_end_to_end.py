import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from hpccl.alma.driver import run
from hpccl.alma.learners import GrowingEnsemble, GrowingMoE, MoENet, SingleModel, TrainSettings
from hpccl.alma.stream import MegaBatchStream, Schedule
from hpccl.models import MLP


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    perm = np.random.default_rng(0).permutation(len(y))
    te, tr = perm[:300], perm[300:]
    return x[tr], y[tr], x[te], y[te]


SETTINGS = TrainSettings(lr=0.05, batch_size=32, max_epochs=6, patience=2, seed=1)


@pytest.mark.parametrize("make", [
    lambda: SingleModel(lambda: MLP((64,), 10, hidden=(32,)), SETTINGS, mode="finetune"),
    lambda: GrowingEnsemble(lambda: MLP((64,), 10, hidden=(32,)), SETTINGS, init="copy"),
    lambda: GrowingMoE(lambda: MoENet((64,), 10, hidden=16, num_layers=1), SETTINGS, split_every=1),
], ids=["finetune", "ensemble", "moe"])
def test_digits_error_decreases(digits, make):
    xtr, ytr, xte, yte = digits
    learner = make()
    sched = Schedule(MegaBatchStream(len(ytr), 4, seed=0), wait=1, replay=0.5)
    m = run(sched, learner, lambda idx: (xtr[idx], ytr[idx]), xte, yte, val_share=0.15)
    assert len(m.errors) == 4 and all(m.updated)
    assert m.errors[-1] < m.errors[0] and m.final_error < 0.2
    assert m.cer == pytest.approx(sum(m.errors))
    assert m.flops[-1] > 0 and m.flops == sorted(m.flops)


def test_waiting_learner_is_untrained_until_first_update(digits):
    xtr, ytr, xte, yte = digits
    learner = SingleModel(lambda: MLP((64,), 10, hidden=(32,)), SETTINGS)
    m = run(Schedule(MegaBatchStream(len(ytr), 4, seed=0), wait=2), learner, lambda idx: (xtr[idx], ytr[idx]),
            xte, yte)
    assert m.updated == [False, True, False, True]
    assert m.errors[0] > 0.5 and m.errors[1] < m.errors[0]    # chance-level before the first update
    assert m.errors[2] == m.errors[1]   # waiting keeps the model
