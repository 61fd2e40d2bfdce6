"""MiniRocket (Dempster et al. 2021) as a net: the classical non-deep baseline for signals.

The transform (84 fixed length-9 kernels at several dilations, biases from quantiles of the
convolution outputs, PPV pooling) is sktime's numba implementation; it is fitted once on the
training split before the first step (medpipe.callbacks.FitOnTrainingSplit calls `fit_features`)
and never changes after. A linear head on the standardised features is then trained by the normal
Lightning loop with the task kind's loss: cross-entropy makes it the logistic-regression version
of the paper, a squared or Huber loss on the z-scored target a linear (weight decay: ridge-like)
regressor. Everything fitted is a buffer, so checkpoints load weights-only like any other net's.

Padded records (variable length) are read as stored: T samples, the zero padding included (the
lengths are not used); records of another length than the training data's keep its dilations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import numpy as np
import torch
from pydantic import Field
from torch import nn

from medpipe.models.nets.registry import NetOptions, register_net

__all__ = ["MiniRocket"]

KERNELS = 84  # MiniRocket's fixed kernels: every choice of 3 of the 9 weights set to 2
FIT_CHUNK = 512  # records per transform call when the training split's features are scaled


def _numba_parts():
    """sktime's MiniRocket functions (imported on use: numba compiles on import)."""
    from sktime.transformations.rocket._minirocket_multi_numba import (
        _fit_dilations,
        _fit_multi,
        _transform_multi,
    )

    return _fit_dilations, _fit_multi, _transform_multi


@register_net
class MiniRocket(nn.Module):
    """(N, C, T) signals -> MiniRocket features (fitted on the training split) -> linear."""

    # The features are computed in numpy: no gradient reaches the input (explanations use
    # occlusion) and torch.export/ONNX cannot trace it (the MLflow model, pickled, works).
    input_gradients = False
    exportable = False
    pip_requirements = ("sktime==1.2.0", "numba==0.68.1")

    class Options(NetOptions):
        """num_kernels: features (rounded down to a multiple of 84); max_dilations_per_kernel:
        as in the paper; seed: of the channel combinations and of the records the biases are
        drawn from."""

        num_kernels: Annotated[int, Field(ge=KERNELS)] = 10_000
        max_dilations_per_kernel: Annotated[int, Field(ge=1)] = 32
        seed: Annotated[int, Field(ge=0, lt=2**31)] = 0

    def __init__(self, in_channels: int, num_outputs: int, spatial_shape: Sequence[int], **options):
        super().__init__()
        o = self.Options(**options)
        if len(spatial_shape) != 1 or int(spatial_shape[0]) < 9:
            raise ValueError(
                f"MiniRocket reads signals (C, T) with T >= 9; got spatial shape "
                f"{tuple(spatial_shape)}"
            )
        self.options = o
        fit_dilations, _, _ = _numba_parts()
        # deterministic from T and the options, so every buffer's shape is known before fitting
        # (a checkpoint loads into a freshly built net)
        dilations, per_dilation = fit_dilations(
            int(spatial_shape[0]), o.num_kernels, o.max_dilations_per_kernel
        )
        n_features = KERNELS * int(per_dilation.sum())
        self.register_buffer("dilations", torch.as_tensor(dilations, dtype=torch.int32))
        self.register_buffer(
            "features_per_dilation", torch.as_tensor(per_dilation, dtype=torch.int32)
        )
        # the channels each (kernel, dilation) sums over, padded with -1 (at most 9 channels)
        combinations, width = KERNELS * len(dilations), min(int(in_channels), 9)
        self.register_buffer("channels", torch.full((combinations, width), -1, dtype=torch.int32))
        self.register_buffer("biases", torch.zeros(n_features))
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.head = nn.Linear(n_features, num_outputs)
        nn.init.zeros_(self.head.weight)  # logistic/linear regression starts from zero
        nn.init.zeros_(self.head.bias)

    @property
    def num_features(self) -> int:
        return int(self.biases.numel())

    def _sktime_parameters(self) -> tuple[np.ndarray, ...]:
        """The fitted transform in sktime's form (per-combination channel counts, indices,
        dilations, features per dilation, biases)."""
        ch = self.channels.cpu().numpy()
        return (
            (ch >= 0).sum(1).astype(np.int32),
            np.ascontiguousarray(ch[ch >= 0], dtype=np.int32),
            self.dilations.cpu().numpy().astype(np.int32),
            self.features_per_dilation.cpu().numpy().astype(np.int32),
            self.biases.cpu().numpy().astype(np.float32),
        )

    def transform(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Raw MiniRocket features (N, num_features) of (N, C, T) inputs, float32."""
        _, _, transform = _numba_parts()
        if isinstance(x, torch.Tensor):
            x = x.detach().float().cpu().numpy()
        return transform(np.ascontiguousarray(x, dtype=np.float32), self._sktime_parameters())

    @torch.no_grad()
    def fit_features(self, x: torch.Tensor | np.ndarray) -> None:
        """Fit the transform on the training split's (preprocessed) records, then the features'
        mean and standard deviation; the head is left to the training loop."""
        _, fit, _ = _numba_parts()
        if isinstance(x, torch.Tensor):
            x = x.detach().float().cpu().numpy()
        x = np.ascontiguousarray(x, dtype=np.float32)
        state = np.random.get_state()  # sktime seeds numpy's global generator
        try:
            o = self.options
            parts = fit(x, o.num_kernels, o.max_dilations_per_kernel, np.int32(o.seed))
            per_combination, indices, dilations, _, biases = parts
        finally:
            np.random.set_state(state)
        if not np.array_equal(dilations, self.dilations.cpu().numpy()):
            raise ValueError(
                f"MiniRocket: training records of {x.shape[-1]} samples; the net was built for "
                "another length"
            )
        channels = np.full(tuple(self.channels.shape), -1, dtype=np.int32)
        start = 0
        for row, n in enumerate(per_combination):
            channels[row, :n] = indices[start : start + n]
            start += n
        self.channels.copy_(torch.from_numpy(channels))
        self.biases.copy_(torch.from_numpy(biases))
        features = np.concatenate(
            [self.transform(x[i : i + FIT_CHUNK]) for i in range(0, len(x), FIT_CHUNK)]
        ).astype(np.float64)
        std = features.std(0)
        self.feature_mean.copy_(torch.from_numpy(features.mean(0)))
        # a feature constant over the training split (0 or 1 everywhere) is left unscaled
        self.feature_std.copy_(torch.from_numpy(np.where(std > 1e-6, std, 1.0)))
        self.fitted.fill_(True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        del lengths  # the padded arrays as stored (see the module's docstring)
        if not bool(self.fitted):
            raise RuntimeError(
                "MiniRocket: the transform is not fitted; training fits it on the training split "
                "(medpipe.callbacks.FitOnTrainingSplit)"
            )
        features = torch.from_numpy(self.transform(x)).to(x.device)
        features = (features - self.feature_mean) / self.feature_std
        return self.head(features.to(self.head.weight.dtype))
