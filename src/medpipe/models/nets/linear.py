"""Logistic regression on the flattened input: the baseline a CNN must beat."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from medpipe.models.nets.registry import NetOptions, register_net

__all__ = ["LinearClassifier"]


@register_net
class LinearClassifier(nn.Module):
    class Options(NetOptions):
        """No options: one linear layer on the flattened input."""

    def __init__(self, in_channels: int, num_outputs: int, spatial_shape: Sequence[int], **options):
        super().__init__()
        self.Options(**options)
        self.linear = nn.Linear(in_channels * math.prod(spatial_shape), num_outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        del lengths  # fixed-size input; accepted so every net has the same call signature
        return self.linear(x.flatten(1))
