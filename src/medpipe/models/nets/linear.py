"""Logistic regression on the flattened input: the baseline a CNN must beat."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class LinearClassifier(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int, spatial_shape: Sequence[int]):
        super().__init__()
        self.linear = nn.Linear(in_channels * math.prod(spatial_shape), num_outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        del lengths  # fixed-size input; accepted so every net has the same call signature
        return self.linear(x.flatten(1))
