"""InceptionTime (Ismail Fawaz et al. 2020) for signals (N, C, T): stacked Inception modules with
residual shortcuts, global average pooling over each record's valid samples, a linear head, and
optionally an ensemble of independently initialised copies whose logits are averaged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from medpipe.models.nets.registry import NetOptions, register_net
from medpipe.models.nets.rnn import length_mask

__all__ = ["InceptionTime"]
PosInt = Annotated[int, Field(gt=0)]


def check_signal(name: str, spatial_shape: Sequence[int], stem_pool: int) -> None:
    """Refuse a non-signal layout, and a stem pool longer than the records."""
    if len(spatial_shape) != 1:
        raise ValueError(f"{name} reads signals (C, T); got spatial shape {tuple(spatial_shape)}")
    if spatial_shape[0] < stem_pool:
        raise ValueError(f"stem_pool: {stem_pool} is longer than the {spatial_shape[0]} samples")


def stem(
    x: torch.Tensor, lengths: torch.Tensor | None, pool: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Clamp the lengths, max-pool by `pool` and return (x, lengths, mask (N, 1, T')).

    Ceil mode, with -inf beyond each record's length: the window straddling the end of a record
    takes the max of its valid samples, as ceil-mode pooling of the unpadded record does, so a
    record shorter than `pool` still gives one sample instead of none (lengths: ceil(L / pool))."""
    if lengths is not None:
        lengths = lengths.to(device=x.device, dtype=torch.long).clamp(1, x.shape[-1])
    if pool > 1:
        if lengths is not None:
            x = x.masked_fill(~length_mask(lengths, x.shape[-1])[:, None], float("-inf"))
            lengths = torch.div(lengths + pool - 1, pool, rounding_mode="floor")
        x = F.max_pool1d(x, pool, ceil_mode=True)
    mask = None if lengths is None else length_mask(lengths, x.shape[-1])[:, None]
    return zero_padding(x, mask), lengths, mask


def masked_mean(x: torch.Tensor, lengths: torch.Tensor | None, mask: torch.Tensor | None):
    """(N, C, T) -> (N, C): the mean over the valid positions only."""
    if mask is None:
        return x.mean(-1)
    return x.masked_fill(~mask, 0.0).sum(-1) / lengths[:, None].to(x.dtype)


def zero_padding(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero beyond each record's length: a convolution then sees what its own zero padding of the
    unpadded record would be, whatever values (normalised zeros are not zero) the padding held."""
    return x if mask is None else x.masked_fill(~mask, 0.0)


class SameConv1d(nn.Conv1d):
    """A bias-free Conv1d that keeps the length for any kernel size: an even kernel is padded
    asymmetrically (one more zero on the right, as PyTorch's and Keras' 'same')."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int):
        super().__init__(c_in, c_out, kernel_size, bias=False)
        total = kernel_size - 1
        self.pads = (total // 2, total - total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads))


class InceptionModule(nn.Module):
    """[1x1 bottleneck] -> parallel 'same' convolutions of `kernel_sizes`, plus MaxPool(3) -> 1x1
    conv on the module's input; concatenated ((len(kernel_sizes) + 1) * filters channels), BN, ReLU.
    """

    def __init__(self, c_in: int, filters: int, kernel_sizes: Sequence[int], bottleneck: int):
        super().__init__()
        # the paper skips the bottleneck on a single-channel input: nothing to compress
        use = bottleneck > 0 and c_in > 1
        self.bottleneck = nn.Conv1d(c_in, bottleneck, 1, bias=False) if use else None
        c_b = bottleneck if use else c_in
        self.convs = nn.ModuleList(SameConv1d(c_b, filters, k) for k in kernel_sizes)
        self.pool = nn.MaxPool1d(3, stride=1, padding=1)
        self.pool_conv = nn.Conv1d(c_in, filters, 1, bias=False)
        self.out_channels = filters * (len(kernel_sizes) + 1)
        self.bn = nn.BatchNorm1d(self.out_channels)
        self.act = nn.ReLU()  # its own module (not in place): the explain layer hooks it

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = zero_padding(x, mask)
        # a bias-free 1x1 conv keeps the zeroed padding zero
        b = x if self.bottleneck is None else self.bottleneck(x)
        branches = [conv(b) for conv in self.convs]
        if mask is None:
            pooled = self.pool(x)
        else:
            # -inf, as MaxPool1d pads the unpadded record: zeros would win over negative inputs
            pooled = self.pool(x.masked_fill(~mask, float("-inf"))).masked_fill(~mask, 0.0)
        branches.append(self.pool_conv(pooled))
        return self.act(self.bn(torch.cat(branches, 1)))


class Shortcut(nn.Module):
    """Residual connection over three modules: ReLU(BN(1x1 conv(input)) + output)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm1d(c_out)
        self.act = nn.ReLU()

    def forward(self, res: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None):
        return self.act(self.bn(self.conv(zero_padding(res, mask))) + x)


class InceptionNetwork(nn.Module):
    """One InceptionTime member: `depth` Inception modules, a shortcut every third, global average
    pooling over the valid samples, dropout and a linear head."""

    def __init__(self, in_channels: int, num_outputs: int, o: InceptionTime.Options):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.shortcuts = nn.ModuleList()
        c_in, c_res = in_channels, in_channels
        for d in range(o.depth):
            self.blocks.append(InceptionModule(c_in, o.filters, o.kernel_sizes, o.bottleneck))
            c_in = self.blocks[-1].out_channels
            if o.residual and d % 3 == 2:
                self.shortcuts.append(Shortcut(c_res, c_in))
                c_res = c_in
        self.dropout = nn.Dropout(o.dropout)
        self.out = nn.Linear(c_in, num_outputs)

    @property
    def last_block(self) -> nn.Module:
        """The activation giving the last feature map (N, C, T'): the last shortcut's ReLU where it
        closes the last module, else the last module's ReLU."""
        if len(self.shortcuts) and len(self.blocks) % 3 == 0:
            return self.shortcuts[-1].act
        return self.blocks[-1].act

    def forward(self, x, lengths: torch.Tensor | None, mask: torch.Tensor | None):
        res = x
        for d, block in enumerate(self.blocks):
            x = block(x, mask)
            if len(self.shortcuts) and d % 3 == 2:
                x = self.shortcuts[d // 3](res, x, mask)
                res = x
        return self.out(self.dropout(masked_mean(x, lengths, mask)))


@register_net(explain_layer="last_block")
class InceptionTime(nn.Module):
    """InceptionTime: `ensemble` independently initialised networks of `depth` Inception modules
    (see InceptionModule), their logits averaged (the paper ensembles 5 seeds).

    With `lengths`, every convolution and pool sees zeros (-inf for the max-pools) beyond each
    record's valid length and the global average counts the valid samples only, so in eval mode a
    padded record gives the output of the unpadded one. BatchNorm in training mode still counts the
    padded positions in its batch statistics. `stem_pool` > 1 max-pools the signal by that stride
    first (ceil mode, lengths ceil-divided), which shortens long records (e.g. 300 Hz ECG) on a CPU.
    """

    class Options(NetOptions):
        filters: PosInt = 32  # per branch; a module outputs (len(kernel_sizes) + 1) * filters
        depth: PosInt = 6  # Inception modules
        kernel_sizes: Annotated[list[PosInt], Field(min_length=1)] = [39, 19, 9]
        bottleneck: Annotated[int, Field(ge=0)] = 32  # 0: no bottleneck
        residual: bool = True  # a shortcut every 3 modules
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # before the linear head
        ensemble: PosInt = 1  # members, logits averaged
        stem_pool: PosInt = 1  # max-pool stride before the modules (1: none)

    def __init__(self, in_channels: int, num_outputs: int, spatial_shape: Sequence[int], **options):
        super().__init__()
        o = self.Options(**options)
        check_signal("InceptionTime", spatial_shape, o.stem_pool)
        self.stem_pool = o.stem_pool
        self.members = nn.ModuleList(
            InceptionNetwork(in_channels, num_outputs, o) for _ in range(o.ensemble)
        )

    @property
    def last_block(self) -> nn.Module:
        """The last feature map's activation (N, C, T') of the first member, to explain."""
        return self.members[0].last_block

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x, lengths, mask = stem(x, lengths, self.stem_pool)
        logits = [member(x, lengths, mask) for member in self.members]
        return logits[0] if len(logits) == 1 else torch.stack(logits).mean(0)
