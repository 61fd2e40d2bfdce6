"""A scratch copy of this project for running the dvc CLI in isolation (tests/test_dvc.py and
benchmarks/bench_dvc.py): which files make the pipeline, copying them, an environment without this
process's DVC/MLflow/medpipe settings, and editing one value of a YAML file in place."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# What a DVC pipeline copy needs: code, config, dvc.yaml, params and DVC's own config.
PROJECT_FILES = re.compile(
    r"^(conf/|src/|dvc\.yaml$|params\.yaml$|\.dvc/|\.dvcignore$|\.gitignore$)"
)


def listed_files(root: Path) -> list[str]:
    """Every file git does not ignore under `root` (tracked or not), relative to it."""
    return subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()


def copy_files(root: Path, dest: Path, names: list[str]) -> None:
    for name in names:
        if (root / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dest / name)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without DVC_*, MEDPIPE_*, MLFLOW_* and PYTHONPATH, with the running
    interpreter's scripts (dvc) first on PATH, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DVC_", "MEDPIPE_", "MLFLOW_")) and k != "PYTHONPATH"
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    env.update(extra)
    return env


def set_value(path: Path, key: str, value: str) -> None:
    """Set the first `key:` line of a YAML file (comments after the value are dropped)."""
    text, n = re.subn(
        rf"^([ \t]*-?[ \t]*{re.escape(key)}:)[^\n]*",
        rf"\g<1> {value}",
        path.read_text(),
        count=1,
        flags=re.M,
    )
    if n != 1:
        raise ValueError(f"no '{key}:' line in {path}")
    path.write_text(text)
