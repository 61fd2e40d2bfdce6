"""medpipe: configuration-driven deep learning for medical images, volumes and signals."""

__version__ = "0.1.0"

import os as _os

# MLflow 3 sends usage telemetry to its vendor from background threads unless told not to. Runs on
# medical data send nothing anywhere by default (README: Privacy); MLFLOW_DISABLE_TELEMETRY=false
# in the environment turns it back on.
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


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
