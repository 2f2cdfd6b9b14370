import pytest
import torch
from torch import nn

from hpccl.alma.metrics import AnytimeMetrics, cumulative_error_rate, flops_per_sample, num_parameters
from hpccl.models import MLP


def test_flops_match_hand_count_for_mlp():
    torch.manual_seed(0)
    d, h1, h2, c, b = 12, 9, 7, 5, 8
    model = MLP((d,), c, hidden=(h1, h2))
    x, y = torch.randn(b, d), torch.randint(0, c, (b,))
    fwd, bwd = flops_per_sample(model, x, y)
    # FlopCounterMode counts matmuls only: a Linear's forward is 2*in*out per sample (bias,
    # ReLU, cross-entropy count 0). Backward: 2*in*out for the weight gradient plus 2*in*out
    # for the input gradient, except for the first layer, whose input needs no gradient.
    layers = [(d, h1), (h1, h2), (h2, c)]
    assert fwd == sum(2 * i * o for i, o in layers)
    assert bwd == 2 * d * h1 + sum(4 * i * o for i, o in layers[1:])
    assert fwd + bwd == 3 * sum(2 * i * o for i, o in layers) - 2 * d * h1
    assert all(p.grad is None for p in model.parameters())   # grads untouched


def test_cer_arithmetic():
    assert cumulative_error_rate([0.9, 0.5, 0.25, 0.125]) == pytest.approx(1.775)
    m = AnytimeMetrics()
    for wrong in (90, 50, 25, 10):
        m.record(wrong, 100)
    assert m.cer == pytest.approx(0.9 + 0.5 + 0.25 + 0.1)
    assert m.cer_normalized == pytest.approx(1.75 / 4)
    assert m.final_error == pytest.approx(0.1)
    with pytest.raises(ValueError):
        cumulative_error_rate([1.5])
    with pytest.raises(ValueError):
        m.record(3, 2)


def test_num_parameters():
    a, b = nn.Linear(3, 2), nn.Linear(2, 1)
    assert num_parameters(a) == 8
    assert num_parameters([a, b]) == 11
