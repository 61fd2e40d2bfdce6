"""ResNet for time series (Wang, Yan, Oates 2017): residual blocks of Conv1d-BN-ReLU layers over
a signal (N, C, T), global average pooling over each record's valid samples, a linear head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from medpipe.models.nets.inception1d import (
    SameConv1d,
    check_signal,
    masked_mean,
    stem,
    zero_padding,
)
from medpipe.models.nets.registry import NetOptions, register_net

__all__ = ["ResNet1D"]
PosInt = Annotated[int, Field(gt=0)]


class ResBlock1D(nn.Module):
    """Conv-BN-ReLU per kernel size (the last ReLU after the residual add); the shortcut is a 1x1
    conv + BN where the channels change, BN alone otherwise."""

    def __init__(self, c_in: int, c_out: int, kernel_sizes: Sequence[int]):
        super().__init__()
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        c = c_in
        for k in kernel_sizes:
            self.convs.append(SameConv1d(c, c_out, k))
            self.bns.append(nn.BatchNorm1d(c_out))
            c = c_out
        self.shortcut = (
            nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out))
            if c_in != c_out
            else nn.BatchNorm1d(c_out)
        )
        self.act = nn.ReLU()  # its own module (not in place): the explain layer hooks it

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = zero_padding(x, mask)
        y = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            y = bn(conv(zero_padding(y, mask) if i else y))
            if i < len(self.convs) - 1:
                y = F.relu(y)
        return self.act(y + self.shortcut(x))


@register_net(explain_layer="last_block")
class ResNet1D(nn.Module):
    """Wang et al.'s time-series ResNet: one ResBlock1D per entry of `channels`, each with one
    Conv-BN-ReLU per entry of `kernel_sizes`, then global average pooling, dropout, linear head.

    With `lengths`, every convolution sees zeros beyond each record's valid length and the average
    counts the valid samples only, so in eval mode a padded record gives the output of the
    unpadded one (BatchNorm in training mode still counts the padding in its batch statistics).
    `stem_pool` > 1 max-pools the signal by that stride first (ceil mode, lengths ceil-divided).
    """

    class Options(NetOptions):
        channels: Annotated[list[PosInt], Field(min_length=1)] = [64, 128, 128]  # one per block
        kernel_sizes: Annotated[list[PosInt], Field(min_length=1)] = [8, 5, 3]  # convs per block
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # before the linear head
        stem_pool: PosInt = 1  # max-pool stride before the blocks (1: none)

    def __init__(self, in_channels: int, num_outputs: int, spatial_shape: Sequence[int], **options):
        super().__init__()
        o = self.Options(**options)
        check_signal("ResNet1D", spatial_shape, o.stem_pool)
        self.stem_pool = o.stem_pool
        self.blocks = nn.ModuleList()
        c_in = in_channels
        for c_out in o.channels:
            self.blocks.append(ResBlock1D(c_in, c_out, o.kernel_sizes))
            c_in = c_out
        self.dropout = nn.Dropout(o.dropout)
        self.out = nn.Linear(c_in, num_outputs)

    @property
    def last_block(self) -> nn.Module:
        """The last block's final ReLU (after the residual add): (N, C, T') maps to explain."""
        return self.blocks[-1].act

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x, lengths, mask = stem(x, lengths, self.stem_pool)
        for block in self.blocks:
            x = block(x, mask)
        return self.out(self.dropout(masked_mean(x, lengths, mask)))
