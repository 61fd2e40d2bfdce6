"""Recurrent networks for sequences: an LSTM/GRU reading a signal (N, C, T) step by step.

`RNNHead` is the reusable part (a feature sequence (N, T, F) in, logits out); `RNN` is the net that
reads a raw signal, and the convolutional-recurrent nets in `crnn` put it on top of their CNNs.

Variable-length records are padded at the end of the batch and come with `lengths` (N,), the
number of valid steps per record. The padding never reaches a valid step (see RNNHead._recur), and
every pooling ignores the padded steps, so a padded record and the same record unpadded give the
same output (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn

from medpipe.models.nets.registry import NetOptions, register_net

__all__ = ["RNN", "RNNHead", "RNNOptions"]
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class RNNOptions(NetOptions):
    """The recurrent part shared by RNN, CRNN1D and CRNN2D (RNNHead)."""

    cell: Literal["lstm", "gru"] = "lstm"
    hidden_size: Annotated[int, Field(gt=0)] = 64  # units per direction
    num_layers: Annotated[int, Field(gt=0)] = 2
    bidirectional: bool = True
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    pooling: Literal["last", "mean", "attention"] = "attention"
    input_proj: Annotated[int, Field(ge=0)] = 0  # width of a Linear-ReLU per step (0: none)


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size) bool, True on the first lengths[i] positions of row i."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


class RNNHead(nn.Module):
    """Optional Linear(input_proj)-ReLU per step, a (bi)LSTM/GRU stack, pooling over the steps,
    dropout and a linear output layer. Input (N, T, F) with optional lengths (N,).

    pooling='last': the forward direction's state at the last valid step, concatenated with the
    backward direction's state at step 0 (having read the whole valid part), i.e. h_n;
    'mean': mean of the outputs over the valid steps; 'attention': a learned score per step
    (Linear-Tanh-Linear), softmax over the valid steps, the weighted sum of the outputs.
    """

    def __init__(self, input_size: int, num_outputs: int, options: RNNOptions | dict[str, Any]):
        super().__init__()
        o = options if isinstance(options, RNNOptions) else RNNOptions(**options)
        cell, hidden_size, num_layers, dropout, pooling, input_proj = (
            o.cell, o.hidden_size, o.num_layers, o.dropout, o.pooling, o.input_proj
        )  # fmt: skip
        bidirectional = o.bidirectional
        self.pooling = pooling
        self.directions = 2 if bidirectional else 1
        self.input_proj: nn.Module = nn.Identity()
        if input_proj > 0:
            self.input_proj = nn.Sequential(nn.Linear(input_size, input_proj), nn.ReLU())
            input_size = input_proj
        out_size = hidden_size * self.directions
        # one single-layer unidirectional RNN per layer and direction (the parameters of
        # nn.LSTM(num_layers, bidirectional)); see _recur for why they are run one by one
        self.layers = nn.ModuleList(
            nn.ModuleList(
                CELLS[cell](input_size if i == 0 else out_size, hidden_size, batch_first=True)
                for _ in range(self.directions)
            )
            for i in range(num_layers)
        )
        self.score: nn.Module | None = None
        if pooling == "attention":
            self.score = nn.Sequential(
                nn.Linear(out_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 1)
            )
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(out_size, num_outputs)
        self.out_size = out_size
        self.hidden_size = hidden_size

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        steps = seq.shape[1]
        mask = None
        if lengths is not None:
            lengths = lengths.to(device=seq.device, dtype=torch.long).clamp(1, steps)
            mask = length_mask(lengths, steps)
        out = self._recur(self.input_proj(seq), lengths)
        if mask is not None:
            out = out.masked_fill(~mask[..., None], 0.0)
        return self.out(self.dropout(self._pool(out, mask, lengths)))

    def _recur(self, seq: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Outputs (N, T, directions * H); beyond each record's length they are meaningless.

        The forward direction reads the padded batch as it is: the padding comes after the valid
        steps, so it never reaches them. The backward direction reads each record reversed within
        its own length (padding again at the end) and its outputs are put back in order. This is
        exact, like a packed sequence, without pack_padded_sequence, whose backward pass on CPU
        grows with the square of the length (minutes for a batch of 3000-sample records).
        """
        reverse = None
        if self.directions == 2 and lengths is not None:
            reverse = reverse_index(lengths, seq.shape[1])
        for i, directions in enumerate(self.layers):
            if i > 0:
                seq = self.dropout(seq)  # between layers, as nn.LSTM(dropout=...)
            outs = [directions[0](seq)[0]]
            if len(directions) == 2:
                backward = directions[1](_reverse(seq, reverse))[0]
                outs.append(_reverse(backward, reverse))
            seq = torch.cat(outs, dim=-1)
        return seq

    def _pool(self, out, mask, lengths) -> torch.Tensor:
        if self.pooling == "last":
            # forward direction at the last valid step, backward direction at step 0
            if lengths is None:
                last = out[:, -1]
            else:
                last = out[torch.arange(out.shape[0], device=out.device), lengths - 1]
            h = self.hidden_size
            return torch.cat([last[:, :h], out[:, 0, h:]], dim=1)
        if self.pooling == "mean":
            if mask is None:
                return out.mean(1)
            return out.sum(1) / lengths[:, None].to(out.dtype)  # padding already zeroed
        scores = self.score(out).squeeze(-1)  # (N, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(1)
        return (weights[..., None] * out).sum(1)


def reverse_index(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size) gather index reversing each row's first lengths[i] steps, the rest in place.
    Its own inverse."""
    steps = torch.arange(size, device=lengths.device)[None, :]
    flipped = lengths[:, None] - 1 - steps
    return torch.where(flipped >= 0, flipped, steps)


def _reverse(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    if index is None:
        return x.flip(1)
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


@register_net
class RNN(nn.Module):
    """An LSTM/GRU reading a signal (N, C, T) one sample at a time (C features per step); see
    RNNHead for the options. Long signals are slow to read this way (one step per sample):
    `frame=f` makes each step read f consecutive samples (a vector of C*f values), f times fewer
    steps; CRNN1D shortens them with convolutions instead."""

    class Options(RNNOptions):
        frame: Annotated[int, Field(gt=0)] = 1  # samples read per step

    def __init__(self, in_channels: int, num_outputs: int, spatial_shape: Sequence[int], **options):
        super().__init__()
        o = self.Options(**options)
        if len(spatial_shape) != 1:
            raise ValueError(f"RNN reads signals (C, T); got spatial shape {tuple(spatial_shape)}")
        self.frame = o.frame
        head = RNNOptions(**o.model_dump(exclude={"frame"}))
        self.head = RNNHead(in_channels * o.frame, num_outputs, head)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        f = self.frame
        if f > 1:
            # each step reads f consecutive samples of every channel: (N, ceil(T/f), C*f)
            n, c, t = x.shape
            if lengths is not None:  # a partial last frame must not see the padding
                x = x.masked_fill(~length_mask(lengths.to(x.device), t)[:, None, :], 0.0)
            x = nn.functional.pad(x, (0, -t % f))
            x = x.reshape(n, c, -1, f).permute(0, 2, 1, 3).reshape(n, -1, c * f)
            if lengths is not None:
                lengths = torch.div(lengths + f - 1, f, rounding_mode="floor")
            return self.head(x, lengths)
        return self.head(x.transpose(1, 2), lengths)
