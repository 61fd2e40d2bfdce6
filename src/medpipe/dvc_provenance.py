"""Where a run started by DVC came from: the stage, the experiment and the DVC hash of its data.

DVC sets $DVC_STAGE (e.g. `train`) for every stage command, $DVC_ROOT, and $DVC_EXP_NAME under
`dvc exp run`. The prepare stages have already written their outputs' hashes to dvc.lock when train
starts, so an MLflow run can name the DVC object that holds its data (`dvc.data.md5`), next to
medpipe's own hashes (data.sha256, data.processed_sha256, data.fingerprint).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def _lock_entry_for(folder: Path, lock_path: Path) -> tuple[str, dict[str, Any]] | None:
    """The dvc.lock stage and output entry whose path holds `folder` (or is it)."""
    try:
        lock = yaml.safe_load(lock_path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    root = lock_path.parent.resolve()
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs") or []:
            out_path = (root / str(out.get("path", ""))).resolve()
            if folder == out_path or out_path in folder.parents:
                return stage, out
    return None


def dvc_tags(processed_dir: str | os.PathLike) -> dict[str, str]:
    """MLflow tags for a run started by a DVC stage; empty when DVC did not start it."""
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return {}
    tags = {"dvc.stage": stage}
    if exp := os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = exp
    # DVC runs a stage in the folder of its dvc.yaml (the workspace, or a temporary copy of it).
    found = _lock_entry_for(Path(processed_dir).resolve(), Path.cwd() / "dvc.lock")
    if found:
        data_stage, out = found
        tags["dvc.data.stage"] = data_stage
        tags["dvc.data.path"] = str(out.get("path"))
        if out.get("md5"):
            tags["dvc.data.md5"] = str(out["md5"])
    return tags
