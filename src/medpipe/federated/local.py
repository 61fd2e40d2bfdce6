"""One client's local training in one round: the medpipe task built from the run's config,
trained for `fl.local_epochs` on the client's shard of the training split, from the global weights."""

from __future__ import annotations

import copy
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from flwr.app import ArrayRecord
from hydra.utils import instantiate

from medpipe.building import build_datamodule, build_task
from medpipe.checks import check_run
from medpipe.data.processed import read_meta
from medpipe.federated.job import Job
from medpipe.federated.weights import ProximalTerm, load_record, to_record


def client_config(job: Job) -> dict[str, Any]:
    """The run's config as one client trains with it: `fl.local_epochs` epochs a round."""
    c = copy.deepcopy(job.config)
    c["trainer"]["max_epochs"] = int(job.fl["local_epochs"])
    c["trainer"]["min_epochs"] = None
    return c


def train_local(
    job: Job, client: int, server_round: int, arrays: ArrayRecord, proximal_mu: float = 0.0
) -> tuple[ArrayRecord, dict[str, float]]:
    """(the trained weights, metrics: num-examples, client, the last local epoch's train/*)."""
    started = time.perf_counter()
    c = client_config(job)
    folder = Path(job.folder)
    meta = read_meta(folder)
    c, kind = check_run(c, meta)
    # each client and round its own stream (shuffling, augmentation), the same on a re-run
    seed = int(job.fl.get("seed") if job.fl.get("seed") is not None else c["seed"])
    seed = seed + 1009 * client + 100_003 * server_round
    L.seed_everything(seed, workers=True, verbose=False)
    folds = job.client_folds(client)
    dm = build_datamodule(c, seed, folder, folds, splits=("train",))
    task = build_task(c, meta, kind)
    load_record(task, arrays)
    callbacks: list[L.Callback] = []
    if proximal_mu > 0:
        callbacks.append(ProximalTerm(proximal_mu))
    with tempfile.TemporaryDirectory(prefix="medpipe-fl-client-") as tmp:
        trainer: L.Trainer = instantiate(
            c["trainer"],
            callbacks=callbacks,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,  # the server evaluates the global model
            num_sanity_val_steps=0,
            default_root_dir=tmp,
        )
        trainer.fit(task, datamodule=dm)
    metrics = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if k.startswith("train/") and math.isfinite(float(v))
    }
    metrics.update(
        {
            "num-examples": int(len(folds["train"])),
            "client": int(client),
            "seconds": float(time.perf_counter() - started),
        }
    )
    return to_record(task), metrics
