"""A net of your own: one module and one YAML, nothing in medpipe edited."""

from typing import Annotated

from pydantic import Field
from torch import nn

from medpipe.models.nets import NetOptions, register_net


@register_net(explain_layer="features")
class TinyCNN(nn.Module):
    """Two 3x3 convolutions, global average pooling and a linear layer."""

    class Options(NetOptions):  # the options, stated once: checked before training, read here
        width: Annotated[int, Field(gt=0)] = 8
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0

    def __init__(self, in_channels, num_outputs, spatial_shape, **options):
        super().__init__()
        o = self.Options(**options)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, o.width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(o.width, o.width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(o.dropout),
            nn.Linear(o.width, num_outputs),
        )

    def forward(self, x, lengths=None):
        return self.head(self.features(x))
