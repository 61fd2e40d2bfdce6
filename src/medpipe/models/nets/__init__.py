"""Plain nn.Modules. Each takes in_channels, num_outputs and spatial_shape (filled in from the
processed data's metadata) plus its own options from the model config."""

from medpipe.models.nets.cnn import SimpleCNN
from medpipe.models.nets.linear import LinearClassifier
from medpipe.models.nets.resnet import ResNet

__all__ = ["LinearClassifier", "ResNet", "SimpleCNN"]
