"""The torch module conv1d builds (imported only where torch is installed)."""

from __future__ import annotations

import torch
from torch import nn


class Conv1dNet(nn.Module):
    def __init__(
        self, in_channels: int, width: int, blocks: int, kernel_size: int, dropout: float, num_classes: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(blocks):
            layers += [
                nn.Conv1d(channels, width, kernel_size, padding=kernel_size // 2),
                nn.BatchNorm1d(width),
                nn.ReLU(),
                nn.MaxPool1d(2),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=2)  # global average over time
        return self.head(self.dropout(x))
