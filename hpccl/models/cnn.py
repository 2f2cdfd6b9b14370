"""A small CNN for small images (8x8 digits up to 32x32 CIFAR and beyond)."""

from __future__ import annotations

from torch import nn


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    # No conv bias: the following BatchNorm has its own shift.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three stages of two conv-bn-relu blocks (width, 2*width, 4*width channels).

    Two 2x2 max-pools sit between the stages and a global average pool ends the feature
    extractor, so any H, W >= 4 gives the same classifier input (8x8 digits end on 2x2
    maps, 32x32 CIFAR on 8x8).
    """

    def __init__(self, input_shape, num_classes: int, width: int = 32):
        super().__init__()
        c = input_shape[0]
        w1, w2, w3 = width, 2 * width, 4 * width
        self.features = nn.Sequential(
            _conv_bn_relu(c, w1), _conv_bn_relu(w1, w1), nn.MaxPool2d(2),
            _conv_bn_relu(w1, w2), _conv_bn_relu(w2, w2), nn.MaxPool2d(2),
            _conv_bn_relu(w2, w3), _conv_bn_relu(w3, w3),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(w3, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.fc(self.features(x))
