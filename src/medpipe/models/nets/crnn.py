"""Convolutional-recurrent networks, and the 2.5D slice CNN.

CRNN1D: 1D convolutions shorten a signal (N, C, T) into a feature sequence that an RNNHead reads.
CRNN2D: one 2D CNN encodes every slice of a volume (N, C, D, H, W), or every frame of a frame
sequence (N, C, T, H, W), into a feature vector; an RNNHead reads the vectors in order.
SliceCNN: the same per-slice 2D CNN with a linear head per slice, logits averaged over the slices
(MedMNIST v2's 2.5D baseline; on frames, the single-frame CNN baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from medpipe.models.nets.registry import NetOptions, register_net
from medpipe.models.nets.rnn import RNNHead, RNNOptions, length_mask

__all__ = ["CRNN1D", "CRNN2D", "SliceCNN"]
PosInt = Annotated[int, Field(gt=0)]


def conv_out_length(
    lengths: torch.Tensor, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> torch.Tensor:
    """Output length of a Conv1d/MaxPool1d (floor mode) per input length, at least 1."""
    return ((lengths + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1).clamp(min=1)


@register_net(explain_layer="last_block")
class CRNN1D(nn.Module):
    """Per entry of `channels`: Conv1d(kernel_size, 'same')-[BN]-ReLU-MaxPool1d(pool), then an
    RNNHead (options in `rnn`, see RNNHead) over the pooled feature sequence.

    With `lengths`, features beyond each record's valid length are zeroed before every convolution
    and before every pool, and the lengths go through each pool by its output-length formula
    (floor(L / pool), at least 1): the padding, whatever its values (normalised zeros are not
    zero), never reaches a valid position, so padded and unpadded records agree. A pool window
    straddling the end of a record lands beyond the new valid length and is dropped, as floor-mode
    pooling of the unpadded record drops it. BatchNorm in training mode still counts the padded
    positions in its batch statistics; in eval mode it is per-position and exact.
    """

    class Options(NetOptions):
        channels: Annotated[list[PosInt], Field(min_length=1)] = [32, 64, 64]
        kernel_size: PosInt = 7
        pool: PosInt | Annotated[list[PosInt], Field(min_length=1)] = 2  # stride per block
        batch_norm: bool = True
        rnn: RNNOptions = RNNOptions()

        @model_validator(mode="after")
        def _pools(self):
            if isinstance(self.pool, list) and len(self.pool) != len(self.channels):
                raise ValueError(
                    f"pool: {len(self.pool)} strides for {len(self.channels)} conv blocks "
                    "(channels)"
                )
            return self

    def __init__(self, in_channels: int, num_outputs: int, spatial_shape: Sequence[int], **options):
        super().__init__()
        o = self.Options(**options)
        channels, kernel_size, batch_norm = o.channels, o.kernel_size, o.batch_norm
        if len(spatial_shape) != 1:
            raise ValueError(
                f"CRNN1D reads signals (C, T); got spatial shape {tuple(spatial_shape)}"
            )
        pools = [o.pool] * len(channels) if isinstance(o.pool, int) else list(o.pool)
        self.blocks = nn.ModuleList()
        self.pools = nn.ModuleList()
        self.strides = pools
        c_in = in_channels
        for c_out, p in zip(channels, pools, strict=True):
            layers: list[nn.Module] = [
                nn.Conv1d(c_in, c_out, kernel_size, padding="same", bias=not batch_norm)
            ]
            if batch_norm:
                layers.append(nn.BatchNorm1d(c_out))
            layers.append(nn.ReLU(inplace=True))
            self.blocks.append(nn.Sequential(*layers))
            self.pools.append(nn.MaxPool1d(p) if p > 1 else nn.Identity())
            c_in = c_out
        total = 1
        for p in pools:
            total *= p
        if spatial_shape[0] < total:
            raise ValueError(
                f"pool: strides {pools} shrink {total}x, more than the {spatial_shape[0]} samples"
            )
        self.head = RNNHead(c_in, num_outputs, o.rnn)

    @property
    def last_block(self) -> nn.Module:
        """The last Conv1d-[BN]-ReLU block (before its pool): (N, C, T') maps to explain."""
        return self.blocks[-1]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is not None:
            lengths = lengths.to(device=x.device, dtype=torch.long).clamp(1, x.shape[-1])
        for block, pool, stride in zip(self.blocks, self.pools, self.strides, strict=True):
            if lengths is not None:
                x = x.masked_fill(~length_mask(lengths, x.shape[-1])[:, None], 0.0)
            x = block(x)
            if stride > 1:
                if lengths is not None:
                    x = x.masked_fill(~length_mask(lengths, x.shape[-1])[:, None], 0.0)
                    lengths = conv_out_length(lengths, stride, stride)
                x = pool(x)
        return self.head(x.transpose(1, 2), lengths)


class SliceEncoder(nn.Module):
    """2D CNN: per entry of `channels`, Conv2d(kernel_size, 'same')-[BN]-ReLU-MaxPool2d(2) (ceil
    mode: odd sizes keep their last row/column, and a 1-pixel side stays 1), then global average
    pooling; with feature_dim > 0, a Linear(feature_dim)-ReLU. (B, C, H, W) -> (B, out_features)."""

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (32, 64, 128),
        kernel_size: int = 3,
        batch_norm: bool = True,
        feature_dim: int = 0,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in channels:
            layers.append(nn.Conv2d(c_in, c_out, kernel_size, padding="same", bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if feature_dim > 0:
            layers += [nn.Linear(c_in, feature_dim), nn.ReLU(inplace=True)]
            c_in = feature_dim
        self.net = nn.Sequential(*layers)
        self.out_features = c_in
        # the last block's ReLU (just before the last pool), by index: a property names it
        # without a second module path, so checkpoints keep their parameter names
        self._last_relu = max(i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)) - 1

    @property
    def last_block(self) -> nn.Module:
        """The last conv block's ReLU, before its pool: (B, C, h, w) maps to explain."""
        return self.net[self._last_relu]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _check_volume(name: str, spatial_shape: Sequence[int], axis: int) -> None:
    if len(spatial_shape) != 3:
        raise ValueError(
            f"{name} reads volumes or frame sequences (C, D, H, W); "
            f"got spatial shape {tuple(spatial_shape)}"
        )
    if axis not in (0, 1, 2):
        raise ValueError(f"axis: {axis} is not a spatial axis (0, 1 or 2)")


def encode_slices(encoder: nn.Module, x: torch.Tensor, axis: int, context: int = 0) -> torch.Tensor:
    """(N, C, D, H, W) -> (N, S, F): the slices along spatial `axis` folded into the batch and
    encoded in one call. With context k, each slice is read together with its k neighbours on
    either side (zeros beyond the ends) as extra channels: (2k + 1) * C input channels."""
    x = x.movedim(2 + axis, 1)  # (N, S, C, A, B)
    n, s = x.shape[:2]
    if context > 0:
        padded = nn.functional.pad(x, (0, 0, 0, 0, 0, 0, context, context))
        x = padded.unfold(1, 2 * context + 1, 1)  # (N, S, C, A, B, 2k+1)
        x = x.permute(0, 1, 5, 2, 3, 4).reshape(n, s, -1, *x.shape[3:5])
    feats = encoder(x.reshape(n * s, *x.shape[2:]))
    return feats.view(n, s, -1)


class SliceEncoderOptions(NetOptions):
    """The 2D CNN shared by every slice or frame (SliceCNN and CRNN2D)."""

    channels: Annotated[list[PosInt], Field(min_length=1)] = [32, 64, 128]
    kernel_size: PosInt = 3
    batch_norm: bool = True
    feature_dim: Annotated[int, Field(ge=0)] = 0  # width of a Linear-ReLU on pooled features
    axis: Literal[0, 1, 2] = 0  # slicing axis of (D, H, W)
    context: Annotated[int, Field(ge=0, le=8)] = 0  # neighbours read with each slice


class SliceFeatures(nn.Module):
    """(N, C, D, H, W) -> (N, S, F): a SliceEncoder over every slice along spatial `axis`, each
    slice read with `context` neighbours on either side as channels (see encode_slices)."""

    def __init__(
        self, name: str, in_channels: int, spatial_shape: Sequence[int], o: SliceEncoderOptions
    ):
        super().__init__()
        _check_volume(name, spatial_shape, o.axis)
        self.axis, self.context = o.axis, o.context
        self.encoder = SliceEncoder(
            in_channels * (2 * o.context + 1),
            o.channels,
            o.kernel_size,
            o.batch_norm,
            o.feature_dim,
        )
        self.out_features = self.encoder.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return encode_slices(self.encoder, x, self.axis, self.context)


@register_net(explain_layer="slices.encoder.last_block")  # slices folded: see slice_axis
class CRNN2D(nn.Module):
    """A SliceEncoder shared by every slice along spatial `axis` (0: depth of a volume, or time of
    a frame sequence), then an RNNHead (options in `rnn`) over the slice features in order.
    `lengths`, if given, counts the valid slices along `axis`."""

    class Options(SliceEncoderOptions):
        rnn: RNNOptions = RNNOptions()

    def __init__(self, in_channels: int, num_outputs: int, spatial_shape: Sequence[int], **options):
        super().__init__()
        o = self.Options(**options)
        self.slices = SliceFeatures("CRNN2D", in_channels, spatial_shape, o)
        self.head = RNNHead(self.slices.out_features, num_outputs, o.rnn)

    @property
    def slice_axis(self) -> int:
        """The axis of (D, H, W) whose slices the encoder reads folded into the batch."""
        return self.slices.axis

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.slices(x), lengths)


@register_net(explain_layer="slices.encoder.last_block")  # slices folded: see slice_axis
class SliceCNN(nn.Module):
    """2.5D: a SliceEncoder and a linear head applied to every slice along spatial `axis`, the
    logits averaged over the slices (over the valid ones when `lengths` counts them). Averaging
    logits of a linear head equals the head applied to the averaged slice features, so this is
    also "2D features, averaged over slices, then one classifier" (dropout aside)."""

    class Options(SliceEncoderOptions):
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # before the per-slice linear head

    def __init__(self, in_channels: int, num_outputs: int, spatial_shape: Sequence[int], **options):
        super().__init__()
        o = self.Options(**options)
        self.slices = SliceFeatures("SliceCNN", in_channels, spatial_shape, o)
        self.dropout = nn.Dropout(o.dropout)
        self.out = nn.Linear(self.slices.out_features, num_outputs)

    @property
    def slice_axis(self) -> int:
        """The axis of (D, H, W) whose slices the encoder reads folded into the batch."""
        return self.slices.axis

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.out(self.dropout(self.slices(x)))  # (N, S, K)
        if lengths is None:
            return logits.mean(1)
        lengths = lengths.to(device=x.device, dtype=torch.long).clamp(1, logits.shape[1])
        mask = length_mask(lengths, logits.shape[1])[..., None].to(logits.dtype)
        return (logits * mask).sum(1) / lengths[:, None].to(logits.dtype)
