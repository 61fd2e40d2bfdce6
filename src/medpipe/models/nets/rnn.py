"""Recurrent networks for sequences: an LSTM/GRU reading a signal (N, C, T) step by step.

`RNNHead` is the reusable part (a feature sequence (N, T, F) in, logits out); `RNN` is the net that
reads a raw signal, and the convolutional-recurrent nets in `crnn` put it on top of their CNNs.

Variable-length records are zero-padded at the end of the batch and come with `lengths` (N,), the
number of valid steps per record. The padding is never read: the recurrence runs on a packed
sequence, and every pooling ignores the padded steps, so a padded record and the same record
unpadded give the same output (up to float rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
POOLINGS = ("last", "mean", "attention")


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

    def __init__(
        self,
        input_size: int,
        num_outputs: int,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 2,
        bidirectional: bool = True,
        dropout: float = 0.0,
        pooling: str = "attention",
        input_proj: int = 0,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell: '{cell}' is not one of {', '.join(CELLS)}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling: '{pooling}' is not one of {', '.join(POOLINGS)}")
        self.pooling = pooling
        self.directions = 2 if bidirectional else 1
        self.input_proj: nn.Module = nn.Identity()
        if input_proj > 0:
            self.input_proj = nn.Sequential(nn.Linear(input_size, input_proj), nn.ReLU())
            input_size = input_proj
        self.rnn = CELLS[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        out_size = hidden_size * self.directions
        self.score: nn.Module | None = None
        if pooling == "attention":
            self.score = nn.Sequential(
                nn.Linear(out_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 1)
            )
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(out_size, num_outputs)
        self.out_size = out_size

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        steps = seq.shape[1]
        seq = self.input_proj(seq)
        mask = None
        if lengths is None:
            out, h_n = self.rnn(seq)
        else:
            lengths = lengths.to(device=seq.device, dtype=torch.long).clamp(1, steps)
            packed = pack_padded_sequence(
                seq, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
            out, h_n = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)
            mask = length_mask(lengths, steps)
        if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
            h_n = h_n[0]
        return self.out(self.dropout(self._pool(out, h_n, mask, lengths)))

    def _pool(self, out, h_n, mask, lengths) -> torch.Tensor:
        if self.pooling == "last":
            # h_n: (layers * directions, N, H); the last layer's directions, forward first, as in out
            return torch.cat(list(h_n[-self.directions :]), dim=1)
        if self.pooling == "mean":
            if mask is None:
                return out.mean(1)
            return (out * mask[..., None]).sum(1) / lengths[:, None].to(out.dtype)
        scores = self.score(out).squeeze(-1)  # (N, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(1)
        return (weights[..., None] * out).sum(1)


class RNN(nn.Module):
    """An LSTM/GRU reading a signal (N, C, T) one sample at a time (C features per step); see
    RNNHead for the options. Long signals are slow to read this way (one step per sample);
    CRNN1D shortens them with convolutions first."""

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        spatial_shape: Sequence[int],
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 2,
        bidirectional: bool = True,
        dropout: float = 0.0,
        pooling: str = "attention",
        input_proj: int = 0,
    ):
        super().__init__()
        if len(spatial_shape) != 1:
            raise ValueError(f"RNN reads signals (C, T); got spatial shape {tuple(spatial_shape)}")
        self.head = RNNHead(
            in_channels,
            num_outputs,
            cell=cell,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            pooling=pooling,
            input_proj=input_proj,
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(x.transpose(1, 2), lengths)
