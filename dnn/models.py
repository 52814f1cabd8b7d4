"""The networks axnet trains: each AdderNet model beside the ordinary CNN of the same shape as its baseline.

`build_model(name, **kw)` builds one; `MODELS` maps each name to its builder and a one-line description.
In the AdderNet models every adder layer is followed by BatchNorm (without it AdderNet does not train), and, as the
AdderNet authors do, the first convolution and the classifier of LeNet-5 and ResNet-20 stay multiplication layers.
"""
from __future__ import annotations

import torch
from torch import nn

from circuits.errors import AxnetError


def adder_conv(in_ch, out_ch, kernel_size, stride=1, padding=0):
    """An AdderNet 2-D layer (no bias: BatchNorm follows)."""
    from dnn.layers.adder2d import Adder2d
    return Adder2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False)


def adder_fc(in_features, out_features):
    """An AdderNet fully connected layer (no bias: BatchNorm follows)."""
    from dnn.layers.adder_linear import AdderLinear
    return AdderLinear(in_features, out_features, bias=False)


def mult_conv(in_ch, out_ch, kernel_size, stride=1, padding=0):
    """An ordinary convolution, bias-free like its adder counterpart."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False)


def mult_fc(in_features, out_features):
    """An ordinary fully connected layer, bias-free like its adder counterpart."""
    return nn.Linear(in_features, out_features, bias=False)


class MnistNet(nn.Module):
    """Seed 000's network: two 3x3 layers 1->16->32 (padding 1) each with BatchNorm and ReLU, global average
    pooling, linear 32->10. With `adder=True` both 3x3 layers are AdderNet layers; the classifier is ordinary."""

    def __init__(self, adder=True, num_classes=10, in_channels=1):
        super().__init__()
        layer = adder_conv if adder else mult_conv
        self.conv1 = layer(in_channels, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = layer(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class LeNet5BN(nn.Module):
    """LeNet-5 with BatchNorm after every hidden layer (the AdderNet paper's MNIST model). With `adder=True` the
    second convolution and the two hidden fully connected layers are AdderNet layers; the first convolution and
    the classifier stay multiplication layers."""

    def __init__(self, adder=True, num_classes=10, in_channels=1):
        super().__init__()
        conv = adder_conv if adder else mult_conv
        fc = adder_fc if adder else mult_fc
        self.conv1 = mult_conv(in_channels, 6, 5, padding=2)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = conv(6, 16, 5)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc1 = fc(16 * 5 * 5, 120)
        self.bn3 = nn.BatchNorm1d(120)
        self.fc2 = fc(120, 84)
        self.bn4 = nn.BatchNorm1d(84)
        self.fc3 = nn.Linear(84, num_classes)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        x = self.pool(self.relu(self.bn1(self.conv1(x))))
        x = self.pool(self.relu(self.bn2(self.conv2(x))))
        x = torch.flatten(x, 1)
        x = self.relu(self.bn3(self.fc1(x)))
        x = self.relu(self.bn4(self.fc2(x)))
        return self.fc3(x)


class BasicBlock(nn.Module):
    """ResNet basic block; module names (conv1, bn1, conv2, bn2, downsample.0/.1) match the official AdderNet
    ResNet-20 so its checkpoint loads."""

    expansion = 1

    def __init__(self, layer, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = layer(inplanes, planes, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = layer(planes, planes, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (3 stages of 3 basic blocks, 16/32/64 channels). With `adder=True` every 3x3 and 1x1 layer
    inside the blocks is an AdderNet layer; the first convolution stays ordinary, and the classifier is a 1x1
    convolution followed by BatchNorm, as in the official AdderNet ResNet-20 (same module names: conv1, bn1,
    layer1..3, fc, bn2)."""

    def __init__(self, adder=True, num_classes=10, in_channels=3, blocks=(3, 3, 3)):
        super().__init__()
        self.layer_fn = adder_conv if adder else mult_conv
        self.inplanes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self.make_stage(16, blocks[0], stride=1)
        self.layer2 = self.make_stage(32, blocks[1], stride=2)
        self.layer3 = self.make_stage(64, blocks[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Conv2d(64, num_classes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(num_classes)
        del self.layer_fn

    def make_stage(self, planes, count, stride):
        """`count` basic blocks; the first one changes resolution/width through a 1x1 layer + BatchNorm."""
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(self.layer_fn(self.inplanes, planes, 1, stride=stride),
                                       nn.BatchNorm2d(planes))
        blocks = [BasicBlock(self.layer_fn, self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        blocks += [BasicBlock(self.layer_fn, planes, planes) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.bn2(self.fc(self.avgpool(x)))
        return torch.flatten(x, 1)


MODELS = {
    "mnist-addernet": (lambda **kw: MnistNet(adder=True, **kw),
                       "seed-000 network: two 3x3 adder layers 1->16->32 + BN + ReLU, avg pool, linear 32->10"),
    "mnist-cnn": (lambda **kw: MnistNet(adder=False, **kw), "the same network with ordinary convolutions"),
    "lenet5-addernet": (lambda **kw: LeNet5BN(adder=True, **kw),
                        "LeNet-5 with BatchNorm, adder conv2/fc1/fc2 (AdderNet paper's MNIST model)"),
    "lenet5-cnn": (lambda **kw: LeNet5BN(adder=False, **kw), "LeNet-5 with BatchNorm, ordinary layers"),
    "resnet20-addernet": (lambda **kw: ResNet20(adder=True, **kw),
                          "CIFAR ResNet-20, adder layers in the blocks (official AdderNet module names)"),
    "resnet20-cnn": (lambda **kw: ResNet20(adder=False, **kw), "CIFAR ResNet-20 with ordinary convolutions"),
}

MODEL_INPUT = {"mnist": (1, 28), "lenet5": (1, 28), "resnet20": (3, 32)}


def model_input(name):
    """(channels, side) of the images a model expects."""
    check_model_name(name)
    return MODEL_INPUT[name.split("-")[0]]


def check_model_name(name):
    """A one-line AxnetError listing the choices when `name` is not a model."""
    if name not in MODELS:
        raise AxnetError(f"--model '{name}': unknown model; choose one of {', '.join(MODELS)}")


def build_model(name, **kw):
    """A fresh model by name (see MODELS); keyword arguments go to its constructor (num_classes, in_channels)."""
    check_model_name(name)
    return MODELS[name][0](**kw)


def strip_module_prefix(state):
    """A state dict saved from (Distributed)DataParallel has keys 'module.x'; return it with plain keys 'x'."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state
