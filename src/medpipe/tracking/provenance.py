"""Where a run came from: git commit and dirty flag, command-line overrides."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(root: Path) -> dict[str, str]:
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "git.commit": commit,
        "git.dirty": "unknown" if status is None else str(bool(status)).lower(),
    }


def hydra_overrides() -> list[str]:
    """The overrides given on the command line, when running inside a Hydra app."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001 - not inside Hydra (e.g. called from Python)
        return []
