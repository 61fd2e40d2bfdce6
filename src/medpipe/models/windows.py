"""Windowed reading of long signal records (`data.preprocess.window.mode: random`).

The processed data holds whole records (padded, with their true lengths). Training reads one
window of the training length at a random place of each record per step (a fresh crop every
epoch); validation, test, `evaluate`, `predict` and the exported model read every window of that
length `stride` samples apart covering the record (the windows sliding mode cuts: a last one
ends at the record's last sample) and combine their outputs, `mean` or `max` of the
probabilities (classification) or values (regression). So a 60-s record is classified from all of
its 60 s, not from its first window.

Everything is tensor arithmetic on fixed shapes (the window grid follows the padded length), so
the same code runs in eager mode, under DDP and inside torch.export / ONNX.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

LINKS = ("softmax", "sigmoid", "identity")  # how a net's raw outputs become what is combined


@dataclass(frozen=True)
class WindowReading:
    """Window length and inference stride in samples, and the rule combining window outputs."""

    length: int
    stride: int
    aggregate: str = "mean"

    @classmethod
    def of(cls, source: dict[str, Any] | None) -> WindowReading | None:
        """From the processed data's source description (`meta.source`): None unless its
        preprocess window is mode random."""
        window = ((source or {}).get("preprocess") or {}).get("window") or {}
        if window.get("mode") != "random":
            return None
        length = int(window["length"])
        return cls(
            length, int(window.get("stride") or length), str(window.get("aggregate") or "mean")
        )


def _full_lengths(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is None:
        return torch.full((x.shape[0],), x.shape[-1], dtype=torch.long, device=x.device)
    return lengths.to(device=x.device, dtype=torch.long).clamp(1, x.shape[-1])


def _at_least(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad the time axis to `length` samples when it is shorter."""
    short = length - x.shape[-1]
    return nn.functional.pad(x, (0, short)) if short > 0 else x


def random_windows(
    x: torch.Tensor, lengths: torch.Tensor | None, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One window of `length` per record (N, C, T) at a uniformly random start inside the
    record's valid samples (a record shorter than the window is read whole, padded); returns the
    windows (N, C, length) and their valid lengths. Draws from torch's global generator, which
    the run's seed sets."""
    lengths = _full_lengths(x, lengths)
    x = _at_least(x, length)
    n, c, _ = x.shape
    span = (lengths - length).clamp(min=0)
    start = (torch.rand(n, device=x.device) * (span + 1).to(torch.float32)).long()
    start = torch.minimum(start, span)  # rand may round up to span + 1 in float32
    index = start[:, None] + torch.arange(length, device=x.device)
    windows = x.gather(2, index[:, None, :].expand(n, c, length))
    return windows, lengths.clamp(max=length)


def inference_windows(
    x: torch.Tensor, lengths: torch.Tensor | None, length: int, stride: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every window covering each record: (windows (N*J, C, length), their lengths (N*J,),
    valid (N, J)). Windows start every `stride` samples while they fit inside the record, plus
    one ending at the record's last sample when the grid misses it (signal.window_starts);
    a record shorter than the window gives its one (padded) window. J is fixed by the padded
    length; windows beyond a record's end are marked invalid."""
    lengths = _full_lengths(x, lengths)
    x = _at_least(x, length)
    n, c, t = x.shape
    grid = torch.arange(0, t - length + 1, stride, device=x.device)  # (K,)
    tail = (lengths - length).clamp(min=0)  # the window ending at the last sample
    starts = torch.cat([grid[None].expand(n, -1), tail[:, None]], 1)  # (N, K + 1)
    valid_grid = (grid[None] + length <= lengths[:, None]) | (grid[None] == 0)
    valid_tail = (lengths > length) & ((lengths - length) % stride != 0)
    valid = torch.cat([valid_grid, valid_tail[:, None]], 1)
    j = starts.shape[1]
    index = starts[..., None] + torch.arange(length, device=x.device)  # (N, J, length)
    windows = x[:, None].expand(n, j, c, t).gather(3, index[:, :, None, :].expand(n, j, c, length))
    window_lengths = lengths.clamp(max=length)[:, None].expand(n, j)
    return windows.reshape(n * j, c, length), window_lengths.reshape(-1), valid


def combine(values: torch.Tensor, valid: torch.Tensor, how: str) -> torch.Tensor:
    """Values (N*J, K) of windows -> (N, K): mean or max over each record's valid windows."""
    n, j = valid.shape
    v = values.reshape(n, j, -1)
    mask = valid[..., None]
    if how == "max":
        return v.masked_fill(~mask, float("-inf")).amax(1)
    weights = mask.to(v.dtype)
    return (v * weights).sum(1) / weights.sum(1).clamp(min=1)


def to_link(raw: torch.Tensor, link: str) -> torch.Tensor:
    """Raw net outputs -> what is combined: probabilities (softmax, sigmoid) or values."""
    if link == "softmax":
        return raw.float().softmax(-1)
    if link == "sigmoid":
        return torch.sigmoid(raw.float())
    return raw


def from_link(combined: torch.Tensor, link: str) -> torch.Tensor:
    """Combined probabilities back to raw outputs the task reads as before: log-probabilities
    (softmax of them is the combined, renormalised distribution) or logits."""
    if link == "softmax":
        return combined.clamp_min(1e-12).log()
    if link == "sigmoid":
        p = combined.clamp(1e-7, 1 - 1e-7)
        return torch.log(p) - torch.log1p(-p)
    return combined


def read_windows(
    net: Callable[..., torch.Tensor],
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    reading: WindowReading,
    link: str,
    training: bool,
) -> torch.Tensor:
    """The net's raw outputs for records (N, C, T): in training one random window per record;
    otherwise every window, combined per record, returned in the net's raw output space."""
    if training:
        w, wl = random_windows(x, lengths, reading.length)
        return net(w, lengths=wl)
    w, wl, valid = inference_windows(x, lengths, reading.length, reading.stride)
    exporting = torch.compiler.is_exporting() or torch.jit.is_tracing()
    if exporting:  # fixed shapes: every grid window is read, the invalid ones are masked out
        raw = net(w, lengths=wl)
    else:  # only the valid windows are read
        keep = valid.reshape(-1)
        part = net(w[keep], lengths=wl[keep])
        raw = part.new_zeros((keep.shape[0], *part.shape[1:]))
        raw[keep] = part
    return from_link(combine(to_link(raw, link), valid, reading.aggregate), link)


def read_net(
    net: nn.Module,
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    reading: WindowReading | None,
    link: str,
    training: bool = False,
) -> torch.Tensor:
    """The net's raw outputs for a batch, through the records' windows when the data is read in
    windows: the one call of the task's forward and of the exported inference models."""
    if reading is not None:
        return read_windows(net, x, lengths, reading, link, training)
    return net(x) if lengths is None else net(x, lengths=lengths)
