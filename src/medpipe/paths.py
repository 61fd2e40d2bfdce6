"""Where the project's configs and outputs live: from the package location or the environment."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The project root: $MEDPIPE_ROOT, else the checkout that holds this (editable) package."""
    env = os.environ.get("MEDPIPE_ROOT")
    if env:
        return Path(env).resolve()
    return PACKAGE_DIR.parents[1]


def conf_dir() -> Path:
    """The Hydra config folder: $MEDPIPE_CONF, else <project root>/conf."""
    env = os.environ.get("MEDPIPE_CONF")
    return Path(env).resolve() if env else project_root() / "conf"


def export_root() -> Path:
    """Set $MEDPIPE_ROOT (read by conf/paths) to an absolute root and return it."""
    root = project_root()
    os.environ["MEDPIPE_ROOT"] = str(root)
    return root
