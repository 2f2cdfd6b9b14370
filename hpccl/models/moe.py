"""A growing mixture-of-experts MLP (ALMA's "growing model", Caccia et al. 2022).

Each hidden layer is a dense (soft) mixture of affine experts; ``MoELayer.split`` duplicates an
expert without changing the network's function, so a learner can grow the network between
updates (:class:`hpccl.alma.learners.GrowingMoE`).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

AllreduceMean = Callable[[list], list]


class MoELayer(nn.Module):
    """``out = sum_e softmax(gate(x))_e * (W_e x + b_e)``: a dense (soft) mixture of affine
    experts, so that every expert gets a gradient and splitting is exact."""

    def __init__(self, d_in: int, d_out: int, num_experts: int = 1):
        super().__init__()
        self.gate = nn.Linear(d_in, num_experts)
        bound = 1 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(num_experts, d_out, d_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_experts, d_out).uniform_(-bound, bound))
        self.record = False
        self.usage_sum: Optional[torch.Tensor] = None
        self.usage_count = 0

    @property
    def num_experts(self) -> int:
        return self.weight.shape[0]

    def forward(self, x):
        probs = torch.softmax(self.gate(x), dim=1)                                # [B, E]
        experts = torch.einsum("bi,eoi->beo", x, self.weight) + self.bias         # [B, E, O]
        if self.record:
            self.usage_sum = probs.detach().sum(0) + (0 if self.usage_sum is None else self.usage_sum)
            self.usage_count += len(x)
        return (probs.unsqueeze(-1) * experts).sum(1)

    @torch.no_grad()
    def split(self, e: int, noise: float = 1e-3, generator: Optional[torch.Generator] = None):
        """Split expert ``e`` in two without changing the layer's function.

        The copy gets expert e's gate row, and both gate biases get ``+ log(1/2)``: the
        softmax then gives each copy exactly half of e's old probability, since
        ``exp(z_e + log 1/2) * 2 = exp(z_e)`` leaves every other probability unchanged too.
        Two identical copies would receive identical gradients forever; to break the tie the
        copies' weights are perturbed in opposite directions, ``W_e + d`` and ``W_e - d``
        (``d`` ~ ``noise`` x mean |W_e| x N(0, 1)). Because the experts are affine and the two
        share one probability ``p/2``, ``p/2 (W + d) x + p/2 (W - d) x = p W x``: the output is
        unchanged (up to rounding), while the gate rows of the copies now get different
        gradients (their experts' outputs differ) and the copies drift apart as training goes on.
        """
        w, b = self.weight.data, self.bias.data
        d = (torch.randn(w[e].shape, generator=generator, dtype=w.dtype).to(w.device)  # CPU generator
             * noise * w[e].abs().mean())
        new_w = torch.cat([w, w[e:e + 1]])
        new_w[e] += d
        new_w[-1] -= d
        self.weight = nn.Parameter(new_w)
        self.bias = nn.Parameter(torch.cat([b, b[e:e + 1]]))
        gw, gb = self.gate.weight.data, self.gate.bias.data
        gate = nn.Linear(self.gate.in_features, self.num_experts)
        gate.weight.data.copy_(torch.cat([gw, gw[e:e + 1]]))
        new_gb = torch.cat([gb, gb[e:e + 1]])
        new_gb[e] += math.log(0.5)
        new_gb[-1] += math.log(0.5)
        gate.bias.data.copy_(new_gb)
        self.gate = gate


class MoENet(nn.Module):
    """Flatten -> [MoELayer -> ReLU] x num_layers -> Linear head."""

    def __init__(self, input_shape, num_classes: int, hidden: int = 64, num_layers: int = 2, num_experts: int = 1):
        super().__init__()
        width = math.prod(input_shape)
        self.moe = nn.ModuleList()
        for _ in range(num_layers):
            self.moe.append(MoELayer(width, hidden, num_experts))
            width = hidden
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        h = x.flatten(1)
        for layer in self.moe:
            h = torch.relu(layer(h))
        return self.head(h)

    @torch.no_grad()
    def gate_usage(self, x, allreduce_mean: Optional[AllreduceMean] = None, batch_size: int = 4096) -> list:
        """Mean gate probability of each expert, per layer, over x (and over ranks)."""
        was = self.training
        self.eval()
        for layer in self.moe:
            layer.record, layer.usage_sum, layer.usage_count = True, None, 0
        try:
            for i in range(0, len(x), batch_size):
                self(x[i:i + batch_size])
        finally:
            for layer in self.moe:
                layer.record = False
            self.train(was)
        usage = []
        for layer in self.moe:
            device = layer.weight.device
            sums = layer.usage_sum if layer.usage_sum is not None else torch.zeros(layer.num_experts, device=device)
            stats = torch.cat([sums, torch.tensor([float(layer.usage_count)], device=device)])
            if allreduce_mean is not None:
                stats = allreduce_mean([stats])[0]
            usage.append(stats[:-1] / stats[-1].clamp_min(1e-12))
        return usage
