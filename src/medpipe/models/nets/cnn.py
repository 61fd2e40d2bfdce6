"""The seeds' CNN: conv-ReLU-maxpool blocks and a dense head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from medpipe.models.nets.registry import NetOptions, register_net

__all__ = ["SimpleCNN"]


@register_net(explain_layer="last_block")
class SimpleCNN(nn.Module):
    """Conv(k x k, 'same')-[BN]-ReLU-MaxPool(2) per entry of `channels`, then flatten,
    Dense(hidden)-ReLU-Dropout and a linear output layer. 2D (image) input (B, C, H, W)."""

    class Options(NetOptions):
        channels: Annotated[list[Annotated[int, Field(gt=0)]], Field(min_length=1)] = [32, 64, 128]
        kernel_size: Annotated[int, Field(gt=0)] = 3
        hidden: Annotated[int, Field(ge=0)] = 512  # width of the dense layer (0: none)
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5
        batch_norm: bool = False

    def __init__(self, in_channels: int, num_outputs: int, spatial_shape: Sequence[int], **options):
        super().__init__()
        o = self.Options(**options)
        channels, kernel_size, hidden, dropout, batch_norm = (
            o.channels, o.kernel_size, o.hidden, o.dropout, o.batch_norm
        )  # fmt: skip
        if len(spatial_shape) != 2:
            raise ValueError(f"SimpleCNN reads 2D images; got spatial shape {tuple(spatial_shape)}")
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in channels:
            layers.append(
                nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n_flat = self.features(torch.zeros(1, in_channels, *spatial_shape)).numel()
        if n_flat == 0:
            raise ValueError(
                f"{len(channels)} pooling blocks leave nothing of a {tuple(spatial_shape)} image"
            )
        head: list[nn.Module] = [nn.Flatten()]
        if hidden > 0:
            head += [nn.Linear(n_flat, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            n_flat = hidden
        head.append(nn.Linear(n_flat, num_outputs))
        self.head = nn.Sequential(*head)

    @property
    def last_block(self) -> nn.Module:
        """The last conv block's ReLU, before its pool: the finest maps that see the most (on 28
        px, 7x7; after the pool, 3x3 maps point at the synthetic lesions far less often)."""
        return self.features[-2]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        del lengths  # fixed-size input; accepted so every net has the same call signature
        return self.head(self.features(x))
