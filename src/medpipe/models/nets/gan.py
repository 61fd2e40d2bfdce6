"""A conditional GAN for 2D images, as one registered net: a DCGAN-style generator and a
spectrally normalised discriminator, both conditioned on the class.

Own nets rather than MONAI's `Generator` / `Discriminator`: MONAI's take no class input (the
conditioning would have to be wired around their forward), have no spectral normalisation option
and build their layers from a channel/stride list that does not map onto the 28- and 64-pixel
pyramids used here. These two are about a hundred lines, and every choice that matters for a small
GAN (transposed-convolution upsampling with batch norm in the generator, no normalisation but
spectral norm in the discriminator, projection conditioning) is in plain sight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from medpipe.models.nets.registry import NetOptions, register_net

__all__ = ["ConditionalGAN"]


def gan_levels(spatial_shape: Sequence[int]) -> tuple[int, tuple[int, int]]:
    """(number of x2 steps, the smallest (h, w)): both sides halved while even and >= 8, so 28 px
    runs 7 -> 14 -> 28 and 64 px 4 -> 8 -> 16 -> 32 -> 64. Sides must be multiples of 4."""
    if len(spatial_shape) != 2:
        raise ValueError(
            f"ConditionalGAN makes 2D images; got spatial shape {tuple(spatial_shape)}"
        )
    h, w = (int(s) for s in spatial_shape)
    if h % 4 or w % 4 or min(h, w) < 8:
        raise ValueError(
            f"ConditionalGAN needs image sides that are multiples of 4 and at least 8 (e.g. 28 or "
            f"64); got {h}x{w}"
        )
    n = 0
    while h % 2 == 0 and w % 2 == 0 and min(h, w) >= 8:
        h, w, n = h // 2, w // 2, n + 1
    return n, (h, w)


class Generator(nn.Module):
    """noise (N, z_dim) and class (N,) -> images (N, C, H, W) in [-1, 1] (tanh).

    The class embedding is concatenated to the noise; a linear layer makes the smallest maps,
    then per level a 4x4 stride-2 transposed convolution, batch norm and ReLU; a 3x3 convolution
    and tanh give the image. Channels double from `width` at full size toward the smallest maps
    (at most 8x)."""

    def __init__(
        self,
        out_channels: int,
        num_classes: int,
        spatial_shape: Sequence[int],
        z_dim: int,
        width: int,
        embed_dim: int,
    ):
        super().__init__()
        n, (h, w) = gan_levels(spatial_shape)
        chans = [width * min(2 ** (n - k), 8) for k in range(n + 1)]  # smallest maps first
        self.z_dim, self.base = z_dim, (chans[0], h, w)
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.project = nn.Linear(z_dim + embed_dim, chans[0] * h * w, bias=False)
        self.project_norm = nn.Sequential(nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            blocks += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Sequential(nn.Conv2d(chans[-1], out_channels, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.project(torch.cat([z, self.embed(y.long())], 1))
        h = self.project_norm(h.view(-1, *self.base))
        return self.to_image(self.blocks(h))


class Discriminator(nn.Module):
    """image (N, C, H, W) and class (N,) -> one score per image (higher: more real).

    Per level a 4x4 stride-2 convolution and LeakyReLU(0.2), a 3x3 convolution at the smallest
    size, the features summed over space (h). `projection` (Miyato & Koyama 2018): score =
    linear(h) + <embed(y), h>; `embedding`: an MLP on [h, embed(y)]. No batch norm (it couples the
    samples of a batch, which a gradient penalty and real/fake batches concatenated must not);
    spectral normalisation of every weight keeps the discriminator 1-Lipschitz per layer."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        spatial_shape: Sequence[int],
        width: int,
        conditioning: str,
        embed_dim: int,
        use_spectral_norm: bool,
    ):
        super().__init__()
        n, _ = gan_levels(spatial_shape)
        sn = spectral_norm if use_spectral_norm else (lambda m: m)
        chans = [width * min(2**k, 8) for k in range(n + 1)]
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in chans[:n]:
            layers += [sn(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c_in = c_out
        layers += [sn(nn.Conv2d(c_in, chans[n], 3, padding=1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.conditioning = conditioning
        features = chans[n]
        if conditioning == "projection":
            self.linear = sn(nn.Linear(features, 1))
            self.embed = sn(nn.Embedding(num_classes, features))
        else:
            self.embed = sn(nn.Embedding(num_classes, embed_dim))
            self.head = nn.Sequential(
                sn(nn.Linear(features + embed_dim, features)),
                nn.LeakyReLU(0.2),
                sn(nn.Linear(features, 1)),
            )

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(N, F): the last features summed over space."""
        return self.features(x).sum((2, 3))

    def score(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N,) scores of pooled features `h` as images of classes `y`."""
        e = self.embed(y.long())
        if self.conditioning == "projection":
            return self.linear(h)[:, 0] + (e * h).sum(1)
        return self.head(torch.cat([h, e], 1))[:, 0]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.score(self.pooled(x), y)


@register_net
class ConditionalGAN(nn.Module):
    """Both networks of a class-conditional GAN for 2D images (sides multiples of 4: 28, 64, ...).

    `generator(z, y)`: noise (N, z_dim) and class indices (N,) -> images (N, C, H, W) in [-1, 1],
    which the GAN task reads as x / scale * 2 - 1 of the stored intensities (see
    medpipe.tasks.gan). `discriminator(x, y)`: images in the task's normalised input space (what
    `preprocess` makes of stored samples) and classes -> one score each. `forward(x)` keeps the
    net contract: (N, num_outputs) scores, column c the discriminator's score of x as a real image
    of class c. num_outputs is the number of classes.
    """

    class Options(NetOptions):
        z_dim: Annotated[int, Field(gt=0)] = 64  # length of the noise vector
        g_width: Annotated[int, Field(gt=0)] = 32  # generator channels at full size (x2 per level)
        d_width: Annotated[int, Field(gt=0)] = 32  # discriminator channels after the first step
        embed_dim: Annotated[int, Field(gt=0)] = 32  # class embedding (generator; D `embedding`)
        spectral_norm: bool = True  # on every weight of the discriminator
        conditioning: Literal["projection", "embedding"] = "projection"  # how D reads the class

    def __init__(self, in_channels: int, num_outputs: int, spatial_shape: Sequence[int], **options):
        super().__init__()
        o = self.Options(**options)
        if num_outputs < 2:
            raise ValueError(f"ConditionalGAN needs at least 2 classes; got {num_outputs}")
        self.num_classes, self.z_dim = num_outputs, o.z_dim
        self.generator = Generator(
            in_channels, num_outputs, spatial_shape, o.z_dim, o.g_width, o.embed_dim
        )
        self.discriminator = Discriminator(
            in_channels,
            num_outputs,
            spatial_shape,
            o.d_width,
            o.conditioning,
            o.embed_dim,
            o.spectral_norm,
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        del lengths  # fixed-size images; accepted so every net has the same call signature
        h = self.discriminator.pooled(x)
        n = len(x)
        classes = torch.arange(self.num_classes, device=x.device)
        scores = self.discriminator.score(
            h.repeat_interleave(self.num_classes, 0), classes.repeat(n)
        )
        return scores.view(n, self.num_classes)
