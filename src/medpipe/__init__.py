"""medpipe: configuration-driven deep learning for medical images, volumes and signals."""

__version__ = "0.1.0"
