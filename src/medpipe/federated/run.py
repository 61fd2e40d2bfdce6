"""The federation medpipe.federate runs: partition, MLflow runs, the Flower processes, the result.

MLflow: one parent run (tag `medpipe.federated`, the partition as params/artifact) holding the
global model's per-round `val/*` and `test/*` and the final test metrics; one child run per client
(tag `mlflow.parentRunId`, `fl.client`, its shard size and class counts). A client that stopped
answering is recorded: `fl/replied` 0 from that round on in its run, which ends FAILED with tag
`fl.client_state`; the parent's `fl/clients_replied` per round and tag `fl.lost_clients`.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medpipe.data.folds import strata
from medpipe.data.processed import SPLITS, read_meta, read_split
from medpipe.federated.job import JOB_FILE, Job
from medpipe.federated.partition import describe, partition
from medpipe.federated.processes import Federation, FederationError
from medpipe.outputs import print_metrics, write_json
from medpipe.tasks.kinds import TaskKind


def fl_settings(c: dict[str, Any]) -> dict[str, Any]:
    """`fl` with its nulls filled in: seed (the run's), min_fit/min_available (clients - 1, at
    least 1: one client may die and the federation goes on)."""
    fl = dict(c["fl"])
    clients = int(fl["clients"])
    tolerant = max(1, clients - 1)
    if fl.get("min_fit_clients") is None:
        fl["min_fit_clients"] = tolerant
    if fl.get("min_available_clients") is None:
        fl["min_available_clients"] = tolerant
    if fl.get("seed") is None:
        fl["seed"] = int(c["seed"])
    return fl


def make_shards(c: dict[str, Any], folder: Path) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    fl = c["fl"]
    meta = read_meta(folder)
    y = np.asarray(read_split(folder, "train", mmap=True).y)
    labels = strata(y, meta.task, int(fl["clients"]))
    parts = partition(
        labels,
        int(fl["clients"]),
        str(fl["partition"]),
        float(fl["alpha"]),
        int(fl["seed"]),
        int(fl["min_samples"]),
    )
    return parts, describe(parts, labels)


def federate(c: dict[str, Any], folder: Path, kind: TaskKind) -> float:
    c = {**c, "fl": fl_settings(c)}
    fl = c["fl"]
    clients = int(fl["clients"])
    out_dir = Path(c["paths"]["output_dir"]).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(c, sort_keys=False))
    meta = read_meta(folder)
    parts, info = make_shards(c, folder)
    write_json(
        out_dir / "partition.json",
        {"method": fl["partition"], "alpha": fl["alpha"], "seed": fl["seed"], "clients": info},
    )
    sizes = {s: int(len(read_split(folder, s, mmap=True).y)) for s in SPLITS}
    print(
        f"federated: {clients} clients, {fl['partition']} partition"
        + (f" (alpha {fl['alpha']})" if fl["partition"] == "dirichlet" else "")
        + ": "
        + "; ".join(f"client {d['client']}: {d['size']} {d['class_counts']}" for d in info)
    )
    job = Job(
        config=c,
        folder=str(Path(folder).resolve()),
        out_dir=str(out_dir),
        shards=[p.tolist() for p in parts],
        split_sizes=sizes,
    )
    parent, children = open_runs(c, meta, kind, info, out_dir)
    if parent is not None:
        job.tracking_uri, job.parent_run = parent.uri, parent.run_id
        job.client_runs = [r.run_id for r in children]
        write_json(out_dir / "run.json", {"run_id": parent.run_id, "tracking_uri": parent.uri})
    job_path = out_dir / JOB_FILE
    job.write(job_path)
    job.result_path.unlink(missing_ok=True)  # only this run's ServerApp writes it

    result: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if parent is not None:
            stack.enter_context(parent.guard())
            for child in children:  # FAILED (KILLED on Ctrl-C) with the parent, if it fails
                stack.enter_context(child.guard(finish=False))
        timeout = float(fl["connect_timeout"]) + int(fl["rounds"]) * float(fl["round_timeout"])
        with Federation(out_dir / "flower", job_path, clients, fl["host"], fl["port"]) as fed:
            print(
                f"Flower SuperLink on {fed.host}:{fed.port}, {clients} SuperNodes; logs in {fed.dir}"
            )
            code = fed.run(timeout=timeout + 120)
            alive = fed.alive_clients()
        if job.result_path.is_file():
            result = json.loads(job.result_path.read_text())
        if result.get("status") != "ok":
            why = result.get("error") or f"flwr run exited with status {code} and no result"
            raise FederationError(f"the federation failed: {why}; logs in {out_dir / 'flower'}")
        lost = record_clients(result, parent, children, alive, int(fl["rounds"]), clients)
        if parent is not None:
            for name in ("partition.json", "config.yaml"):
                parent.log_artifact(out_dir / name)
    metrics = result.get("metrics", {})
    print_metrics(
        f"test metrics (final global model, {fl['rounds']} rounds, {fl['strategy']}, {meta.name}):",
        {k: v for k, v in metrics.items() if k.startswith("test/")},
    )
    if lost:
        print(f"clients that stopped answering: {', '.join(lost)} (the federation went on)")
    print(f"final global checkpoint: {out_dir / 'checkpoints' / 'final.ckpt'}")
    print(f"outputs: {out_dir}")
    if parent is not None:
        print(f"MLflow run {parent.run_id}: {parent.url}")
    best = result.get("best", math.nan)
    return float(best) if best is not None else math.nan


def open_runs(c, meta, kind, info, out_dir: Path):
    """The parent run and one child run per client (None, [] without the mlflow logger)."""
    if "mlflow" not in (c.get("logger") or {}):
        return None, []
    from medpipe.resuming import OUTPUT_DIR_TAG
    from medpipe.training import create_run

    fl = c["fl"]
    tags = {
        "medpipe.federated": "true",
        "mlflow.source.name": "medpipe.federate",
        "fl.clients": str(fl["clients"]),
        "fl.strategy": str(fl["strategy"]),
        "fl.partition": str(fl["partition"]),
        OUTPUT_DIR_TAG: str(out_dir),
    }
    parent = create_run(c, meta, kind, tags, "-federated")
    children = []
    try:
        for d in info:
            child_tags = {
                "mlflow.parentRunId": parent.run_id,
                "mlflow.source.name": "medpipe.federate",
                "medpipe.federated": "true",
                "fl.client": str(d["client"]),
                "fl.shard_size": str(d["size"]),
                "fl.class_counts": json.dumps(d["class_counts"]),
            }
            children.append(create_run(c, meta, kind, child_tags, f"-client{d['client']}"))
    except BaseException:
        for run in [parent, *children]:
            run.end("FAILED")
        raise
    return parent, children


def record_clients(
    result, parent, children, alive: list[int], rounds: int, clients: int
) -> list[str]:
    """End each client's run: FINISHED when it answered the last round, else FAILED with the
    rounds it answered; the parent gets tag fl.lost_clients. Returns the lost clients' lines."""
    replied = {int(r): set(v) for r, v in (result.get("replied") or {}).items()}
    lost: list[str] = []
    for client, run in enumerate(children):
        answered = sorted(r for r, who in replied.items() if client in who)
        if client in replied.get(rounds, set()):
            run.end("FINISHED")
            continue
        last = answered[-1] if answered else 0
        state = f"no answer after round {last} of {rounds}" + (
            "" if client in alive else "; its SuperNode process had exited"
        )
        run.set_tags({"fl.client_state": state, "fl.rounds_answered": ",".join(map(str, answered))})
        run.end("FAILED")
        lost.append(f"client {client} ({state})")
    if not children:  # untracked: still say who was lost
        lost = [f"client {c}" for c in range(clients) if c not in replied.get(rounds, set())]
    if parent is not None:
        parent.set_tags(
            {
                "fl.lost_clients": ",".join(
                    str(i) for i, r in enumerate(children) if i not in replied.get(rounds, set())
                )
                or "none",
                "fl.clients_replied": " ".join(f"{r}:{len(replied[r])}" for r in sorted(replied)),
            }
        )
        errors = result.get("errors") or {}
        if errors:  # Flower's reasons, e.g. "Node Unavailable" for a SuperNode that died
            text = "; ".join(f"round {r}: {' | '.join(v)}" for r, v in sorted(errors.items()))
            parent.set_tags({"fl.round_errors": text[:5000]})
    return lost
