"""The job file: everything the ServerApp and ClientApp processes need, written once by
medpipe.federate (the resolved config, the prepared data folder, the shards, the MLflow runs)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

JOB_FILE = "job.json"
RESULT_FILE = "result.json"


@dataclass
class Job:
    config: dict[str, Any]  # resolved and checked (monitor filled in), with its `fl` section
    folder: str  # the processed data
    out_dir: str
    shards: list[list[int]]  # per client: rows of the training split
    split_sizes: dict[str, int]  # train, val, test (rows of the pooled data: train, val, test)
    tracking_uri: str | None = None
    parent_run: str | None = None
    client_runs: list[str] = field(default_factory=list)  # per client

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: str | Path) -> Job:
        return cls(**json.loads(Path(path).read_text()))

    @property
    def fl(self) -> dict[str, Any]:
        return self.config["fl"]

    @property
    def result_path(self) -> Path:
        return Path(self.out_dir) / RESULT_FILE

    def client_folds(self, client: int) -> dict[str, Any]:
        """The client's rows of the pooled data (train, then val, then test), as cross-validation
        folds are given to the DataModule: its shard for training; val and test as they are."""
        import numpy as np

        n = self.split_sizes
        return {
            "train": np.asarray(self.shards[client], dtype=np.int64),
            "val": n["train"] + np.arange(n["val"]),
            "test": n["train"] + n["val"] + np.arange(n["test"]),
        }
