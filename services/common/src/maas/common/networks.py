"""The built-in networks that are not torchvision's: the CIFAR-10 tutorial LeNet and the MLP (torch).

Their declarations (arguments, parameter tables) are torch-free, in
`maas.common.builtin_architectures`; these are the modules they build.
"""

from __future__ import annotations

import torch
from torch import nn

from maas.common.builtin_architectures import lenet_side


class LeNet(nn.Module):
    """The classic CIFAR-10 tutorial CNN, with channels, classes and size adapted."""

    def __init__(self, in_channels: int, num_classes: int, input_size: int, padding: int) -> None:
        super().__init__()
        side = lenet_side(input_size, padding)
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=padding)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=padding)
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], num_classes: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
