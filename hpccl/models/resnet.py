"""ResNet-18 and ResNet-50, written from scratch (torchvision is not always installable).

Layer names, block layout and initialisation follow torchvision's ``resnet18``/``resnet50``
so parameter counts and state-dict keys match at ``width=64`` with the ImageNet stem.
"""

from __future__ import annotations

from torch import nn


def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class _ResidualBlock(nn.Module):
    """relu(branch(x) + shortcut), the shortcut being x itself or, where the block changes the
    shape, ``downsample(x)``; a subclass builds the modules and says what its branch does."""

    def branch(self, x):
        raise NotImplementedError

    def last_bn(self):
        """The branch's last BatchNorm: zeroed, it makes the block start as the identity."""
        raise NotImplementedError

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.branch(x) + identity)


class BasicBlock(_ResidualBlock):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def last_bn(self):
        return self.bn2

    def branch(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(_ResidualBlock):
    # Stride on the 3x3 conv (ResNet v1.5, as torchvision does).
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self):
        return self.bn3

    def branch(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class ResNet(nn.Module):
    def __init__(self, block, layers, input_shape, num_classes: int, stem: str = "imagenet",
                 width: int = 64, zero_init_residual: bool = False):
        super().__init__()
        cin = input_shape[0]
        self.inplanes = width
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(cin, width, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            # Small images (CIFAR): downsampling 4x in the stem would leave 1x1 maps at layer4.
            self.conv1 = _conv3x3(cin, width)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each residual branch starts as zero, so every block starts as the identity
            # (helps large-batch training, Goyal et al. 2017).
            for m in self.modules():
                if isinstance(m, _ResidualBlock):
                    nn.init.zeros_(m.last_bn().weight)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        mods = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(input_shape, num_classes, **options) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], input_shape, num_classes, **options)


def resnet50(input_shape, num_classes, **options) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], input_shape, num_classes, **options)
