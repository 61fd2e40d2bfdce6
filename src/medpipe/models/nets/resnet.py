"""ResNets from MONAI, 2D or 3D from the data's spatial shape, with a stem fit for small inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from medpipe.models.nets.registry import NetOptions, register_net

__all__ = ["ResNet"]

_LAYERS = {
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
    200: ("bottleneck", [3, 24, 36, 3]),
}


@register_net(explain_layer="net.layer4")
class ResNet(nn.Module):
    """stem='small': 3x3 stride-1 first convolution and no max-pool (MedMNIST's ResNet at 28 px);
    stem='imagenet': 7x7 stride-2 convolution followed by max-pool."""

    class Options(NetOptions):
        depth: Literal[10, 18, 34, 50, 101, 152, 200] = 18
        stem: Literal["small", "imagenet"] = "small"
        widen_factor: Annotated[float, Field(gt=0)] = 1.0

    def __init__(self, in_channels: int, num_outputs: int, spatial_shape: Sequence[int], **options):
        from monai.networks.nets import ResNet as MonaiResNet  # on use: monai takes ~2 s to import

        super().__init__()
        o = self.Options(**options)
        block, layers = _LAYERS[o.depth]
        small = o.stem == "small"
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
            widen_factor=o.widen_factor,
            num_classes=num_outputs,
            bias_downsample=False,
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        del lengths  # fixed-size input; accepted so every net has the same call signature
        return self.net(x)
