"""Multi-layer perceptron over flattened inputs (vectors or small images)."""

from __future__ import annotations

import math

from torch import nn


class MLP(nn.Module):
    def __init__(self, input_shape, num_classes: int, hidden=(256, 256), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
