"""Plain nn.Modules. Each takes in_channels, num_outputs and spatial_shape (filled in from the
processed data's metadata) plus its own options from the model config."""

from medpipe.models.nets.cnn import SimpleCNN
from medpipe.models.nets.crnn import CRNN1D, CRNN2D, SliceCNN
from medpipe.models.nets.linear import LinearClassifier
from medpipe.models.nets.resnet import ResNet
from medpipe.models.nets.rnn import RNN, RNNHead

__all__ = [
    "CRNN1D",
    "CRNN2D",
    "RNN",
    "LinearClassifier",
    "RNNHead",
    "ResNet",
    "SimpleCNN",
    "SliceCNN",
]
