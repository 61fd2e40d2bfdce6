"""Shared fixtures: compose configs like the entry points do, run the CLI, find the real data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import medpipe  # noqa: F401  (registers the config resolvers)
from medpipe.paths import conf_dir

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PNEUMONIA_NPZ = SHARED_DATA / "medmnist" / "pneumoniamnist" / "pneumoniamnist_reconstructed.npz"
needs_shared_data = pytest.mark.skipif(
    not PNEUMONIA_NPZ.exists(), reason=f"{SHARED_DATA} not present"
)

# Small synthetic data: the real generator, sized for fast tests.
SMALL_SYNTHETIC = ["data.n_train=256", "data.n_val=128", "data.n_test=128", "data.batch_size=64"]


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")


def compose_config(root: Path, overrides: list[str], config_name: str = "train") -> DictConfig:
    """Compose as `python -m medpipe.<config_name>` would, with every path under `root`."""
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose(
            config_name, overrides=[f"paths.root_dir={root}", *overrides], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "out")
        del cfg["hydra"]
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_config(tmp_path, list(overrides), config_name)

    return make


def run_cli(
    module: str, *args: str, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m medpipe.<module> args` from the repository root, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update({"NO_ALBUMENTATIONS_UPDATE": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", f"medpipe.{module}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def write_medmnist_npz(
    path: Path, n: int = 40, shape=(28, 28), labels="n1", n_classes: int = 2, seed: int = 0
) -> Path:
    """A small MedMNIST-layout npz with learnable labels (class shifts the mean intensity)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "val", "test"):
        if labels == "multilabel":
            y = (rng.random((n, n_classes)) < 0.4).astype(np.uint8)
            level = y.sum(1)
        else:
            y = rng.integers(0, n_classes, n).astype(np.uint8)
            level = y
        x = np.clip(rng.normal(60 + 40 * level[:, None, None], 20, (n, *shape)), 0, 255).astype(
            np.uint8
        )
        arrays[f"{split}_images"] = x
        arrays[f"{split}_labels"] = y[:, None] if labels == "n1" else y
    np.savez(path, **arrays)
    return path
