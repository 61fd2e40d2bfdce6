"""medpipe: configuration-driven deep learning for medical images, volumes and signals."""

__version__ = "0.1.0"


def _register_resolvers() -> None:
    """${medmnist_kind:flag}: image or volume, so data.flag alone selects 2D or 3D handling."""
    from omegaconf import OmegaConf

    def medmnist_kind(flag: str) -> str:
        from medpipe.data.catalog import CATALOG

        info = CATALOG.get(str(flag))
        return info.kind if info else "image"

    if not OmegaConf.has_resolver("medmnist_kind"):
        OmegaConf.register_new_resolver("medmnist_kind", medmnist_kind)


_register_resolvers()
