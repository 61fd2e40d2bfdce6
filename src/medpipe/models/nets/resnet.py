"""ResNets from MONAI, 2D or 3D from the data's spatial shape, with a stem fit for small inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import ResNet as MonaiResNet
from torch import nn

_LAYERS = {
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
    200: ("bottleneck", [3, 24, 36, 3]),
}


class ResNet(nn.Module):
    """stem='small': 3x3 stride-1 first convolution and no max-pool (MedMNIST's ResNet at 28 px);
    stem='imagenet': 7x7 stride-2 convolution followed by max-pool."""

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        spatial_shape: Sequence[int],
        depth: int = 18,
        stem: str = "small",
        widen_factor: float = 1.0,
    ):
        super().__init__()
        block, layers = _LAYERS[depth]
        small = stem == "small"
        self.net = MonaiResNet(
            block=block,
            layers=layers,
            block_inplanes=[64, 128, 256, 512],
            spatial_dims=len(spatial_shape),
            n_input_channels=in_channels,
            conv1_t_size=3 if small else 7,
            conv1_t_stride=1 if small else 2,
            no_max_pool=small,
            shortcut_type="B",
            widen_factor=widen_factor,
            num_classes=num_outputs,
            bias_downsample=False,
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        del lengths  # fixed-size input; accepted so every net has the same call signature
        return self.net(x)
