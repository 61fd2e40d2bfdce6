"""The server side of a federation (run inside Flower's ServerApp process): FedAvg or FedProx over
the clients that answer, the global model evaluated on the real validation and test splits after
every round (the task's own metric code, as a training run's per-epoch validation), and at the end
the final global model tested as `medpipe.train` tests its best checkpoint (operating point and
temperature chosen on validation, bootstrap intervals), saved as a medpipe checkpoint.

MLflow: this process writes every metric of the federation (it is the only writer while the
federation runs): the parent run gets `val/<metric>`, `test/<metric>` and `fl/clients_replied` at
step = round; each client's child run gets its local `train/<metric>`, `fl/num_examples` and
`fl/replied` (1 or 0) at step = round. medpipe.federate created the runs and closes them.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx

from medpipe.building import build_datamodule, build_task
from medpipe.checks import check_run
from medpipe.data.processed import read_meta
from medpipe.federated.job import Job
from medpipe.federated.weights import load_record, to_record
from medpipe.outputs import best_row, write_json


class Tracker:
    """Metrics into the job's MLflow runs (nothing when the run is not tracked)."""

    def __init__(self, job: Job):
        self.job = job
        self.client = None
        if job.tracking_uri and job.parent_run:
            from mlflow import MlflowClient

            self.client = MlflowClient(job.tracking_uri)

    def log(self, run_id: str | None, metrics: dict[str, float], step: int) -> None:
        if self.client is None or not run_id:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(k, float(v), stamp, step) for k, v in metrics.items() if math.isfinite(v)]
        for attempt in range(5):  # sqlite: another writer (a heartbeat) may hold the lock
            try:
                self.client.log_batch(run_id, metrics=items)
                return
            except Exception:  # noqa: BLE001
                if attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))

    def parent(self, metrics: dict[str, float], step: int) -> None:
        self.log(self.job.parent_run, metrics, step)

    def child(self, client: int, metrics: dict[str, float], step: int) -> None:
        runs = self.job.client_runs
        self.log(runs[client] if client < len(runs) else None, metrics, step)

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.client is not None and path.exists():
            self.client.log_artifact(self.job.parent_run, str(path), artifact_path)


def _averaged_train_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Example-weighted mean of the clients' train/* metrics (not their ids or timings)."""
    total: dict[str, float] = {}
    weights = 0.0
    for record in records:
        m = next(iter(record.metric_records.values()))
        w = float(m[weight_key])
        weights += w
        for k, v in m.items():
            if k.startswith("train/"):
                total[k] = total.get(k, 0.0) + w * float(v)
    return MetricRecord({k: v / weights for k, v in total.items()} if weights else {})


def recording(base: type[FedAvg]) -> type[FedAvg]:
    """`base` that records who was asked and who answered in every round (RoundLog)."""

    class Recording(base):  # type: ignore[misc, valid-type]
        def __init__(self, rounds_log: RoundLog, **kwargs: Any):
            super().__init__(**kwargs)
            self.rounds_log = rounds_log

        def configure_train(
            self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
        ) -> Iterable[Message]:
            messages = list(super().configure_train(server_round, arrays, config, grid))
            self.rounds_log.asked(server_round, [m.metadata.dst_node_id for m in messages])
            return messages

        def aggregate_train(self, server_round: int, replies: Iterable[Message]):
            replies = list(replies)
            self.rounds_log.answered(server_round, replies)
            return super().aggregate_train(server_round, replies)

    Recording.__name__ = base.__name__
    return Recording


class RoundLog:
    """Who was asked and who answered, per round; each answer's metrics into its client's run."""

    def __init__(self, clients: int, tracker: Tracker):
        self.clients = clients
        self.tracker = tracker
        self.node_client: dict[int, int] = {}  # Flower node id -> client (partition) id
        self.asked_nodes: dict[int, list[int]] = {}
        self.replied: dict[int, list[int]] = {}  # round -> clients that answered
        self.errors: dict[int, list[str]] = {}

    def asked(self, server_round: int, nodes: list[int]) -> None:
        self.asked_nodes[server_round] = nodes

    def answered(self, server_round: int, replies: list[Message]) -> None:
        ok: list[int] = []
        errors: list[str] = []
        for msg in replies:
            if msg.has_error():
                errors.append(f"{msg.error.code}: {msg.error.reason}"[:300])
                continue
            m = next(iter(msg.content.metric_records.values()))
            client = int(m["client"])
            self.node_client[msg.metadata.src_node_id] = client
            ok.append(client)
            local = {k: float(v) for k, v in m.items() if k.startswith("train/")}
            local["fl/num_examples"] = float(m["num-examples"])
            local["fl/seconds"] = float(m["seconds"])
            local["fl/replied"] = 1.0
            self.tracker.child(client, local, server_round)
        for client in range(self.clients):
            if client not in ok:
                self.tracker.child(client, {"fl/replied": 0.0}, server_round)
        self.replied[server_round] = sorted(ok)
        self.errors[server_round] = errors


class GlobalEvaluator:
    """The global model on the validation and test splits, with the task's metric code."""

    def __init__(self, job: Job):
        c = job.config
        folder = Path(job.folder)
        self.meta = read_meta(folder)
        self.c, self.kind = check_run(c, self.meta)
        L.seed_everything(int(c["seed"]), workers=True, verbose=False)
        no_aug = {**self.c, "augmentation": {"name": "none", "train": []}}
        self.dm = build_datamodule(no_aug, int(c["seed"]), folder, None, splits=("val", "test"))
        self.dm.setup("validate")
        self.dm.test_split = "test"
        self.dm.setup("test")
        self.task = build_task(self.c, self.meta, self.kind)
        self.trainer = self._trainer()

    def _trainer(self) -> L.Trainer:
        t = self.c["trainer"]
        return L.Trainer(
            accelerator=t.get("accelerator", "cpu"),
            devices=1,
            precision=t.get("precision", "32-true"),
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            deterministic=bool(t.get("deterministic", False)),
            default_root_dir=self.c["paths"]["output_dir"],
        )

    def __call__(self, arrays: ArrayRecord) -> dict[str, float]:
        load_record(self.task, arrays)
        out: dict[str, float] = {}
        for split, loader in (
            ("val", self.dm.val_dataloader()),
            ("test", self.dm.test_dataloader()),
        ):
            logged = self.trainer.validate(self.task, dataloaders=loader, verbose=False)
            for k, v in (logged[0] if logged else {}).items():
                if k.startswith("val/"):
                    out[f"{split}/{k[4:]}"] = float(v)
        return out


def run_server(grid: Grid, job: Job) -> dict[str, Any]:
    fl = job.fl
    clients, rounds = int(fl["clients"]), int(fl["rounds"])
    tracker = Tracker(job)
    evaluator = GlobalEvaluator(job)
    c = evaluator.c
    monitor, mode = c["monitor"], c["monitor_mode"]

    # every SuperNode connected before the first round (later rounds go on without the dead)
    deadline = time.monotonic() + float(fl["connect_timeout"])
    while len(list(grid.get_node_ids())) < clients:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(list(grid.get_node_ids()))} of {clients} SuperNodes connected within "
                f"fl.connect_timeout={fl['connect_timeout']} s"
            )
        time.sleep(0.5)
    print(f"medpipe: {clients} clients connected; {rounds} rounds of {fl['strategy']}", flush=True)

    rounds_log = RoundLog(clients, tracker)
    common = dict(
        fraction_train=float(fl["fraction_fit"]),
        fraction_evaluate=0.0,  # the server evaluates the global model on the real splits
        min_train_nodes=int(fl["min_fit_clients"]),
        min_evaluate_nodes=0,
        min_available_nodes=int(fl["min_available_clients"]),
        train_metrics_aggr_fn=_averaged_train_metrics,
    )
    if fl["strategy"] == "fedprox":
        strategy = recording(FedProx)(rounds_log, proximal_mu=float(fl["proximal_mu"]), **common)
    else:
        strategy = recording(FedAvg)(rounds_log, **common)

    history: list[dict[str, float]] = []
    started = time.perf_counter()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:  # the random initial model: not worth a pass over val and test
            return None
        metrics = evaluator(arrays)
        replied = rounds_log.replied.get(server_round, [])
        metrics["fl/clients_replied"] = float(len(replied))
        metrics["fl/seconds"] = time.perf_counter() - started
        tracker.parent(metrics, server_round)
        history.append({"round": server_round, **metrics})
        shown = " ".join(
            f"{k}={metrics[k]:.4f}"
            for k in (monitor, monitor.replace("val/", "test/"))
            if k in metrics
        )
        lost = sorted(set(range(clients)) - set(replied))
        print(
            f"medpipe: round {server_round}/{rounds}: {len(replied)}/{clients} clients answered"
            + (f" (no answer from client {', '.join(map(str, lost))})" if lost else "")
            + f"; global model {shown}",
            flush=True,
        )
        return MetricRecord({k: v for k, v in metrics.items() if math.isfinite(v)})

    result = strategy.start(
        grid=grid,
        initial_arrays=to_record(evaluator.task),
        num_rounds=rounds,
        timeout=float(fl["round_timeout"]),
        train_config=ConfigRecord({"local-epochs": int(fl["local_epochs"])}),
        evaluate_fn=evaluate,
    )
    summary = finish(job, evaluator, result.arrays, history, tracker)
    out = {
        "status": "ok",
        "replied": {str(r): v for r, v in rounds_log.replied.items()},
        "errors": {str(r): v for r, v in rounds_log.errors.items() if v},
        "metrics": summary,
        "monitor": monitor,
        "best": best_row(history, monitor, mode).get(monitor, math.nan) if history else math.nan,
    }
    write_json(job.result_path, out)
    return out


def finish(
    job: Job,
    evaluator: GlobalEvaluator,
    arrays: ArrayRecord,
    history: list[dict[str, float]],
    tracker: Tracker,
) -> dict[str, float]:
    """The final global model tested as a training run tests its best checkpoint; saved as
    checkpoints/final.ckpt (what medpipe.evaluate, explain, export and predict read)."""
    from medpipe.evaluating import collect_outputs, data_info
    from medpipe.evaluation.settings import EvalSettings
    from medpipe.outputs import print_metrics

    c, task, dm = evaluator.c, evaluator.task, evaluator.dm
    out_dir = Path(job.out_dir)
    rounds = int(job.fl["rounds"])
    load_record(task, arrays)
    trainer = evaluator._trainer()  # a fresh one: the test loop and the checkpoint below
    logged = collect_outputs(trainer, task, dm, ("val", "test"))
    evaluation = task.evaluate_outputs(
        out_dir,
        EvalSettings.from_config(c),
        dm.split_arrays("test"),
        info=data_info(evaluator.meta),
    )
    metrics = {**logged, **evaluation.metrics}
    ckpt = out_dir / "checkpoints" / "final.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(ckpt, weights_only=True)
    monitor, mode = c["monitor"], c["monitor_mode"]
    best = best_row(history, monitor, mode) if history else {}
    summary = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    if best:
        summary[f"best/{monitor}"] = float(best[monitor])
        summary["best_round"] = float(best["round"])
    last = history[-1] if history else {}
    summary.update({k: v for k, v in last.items() if k.startswith("val/")})
    tracker.parent({k: v for k, v in summary.items() if not k.startswith("val/")}, rounds)
    write_json(out_dir / "metrics.json", summary)
    if history:
        keys = list(dict.fromkeys(k for row in history for k in row))
        with (out_dir / "history.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)
    for path in [out_dir / "metrics.json", out_dir / "history.csv", *evaluation.files.values()]:
        tracker.artifact(Path(path))
    for path in evaluation.predictions:  # the kept test predictions, as a training run keeps them
        tracker.artifact(Path(path), "predictions")
    tracker.artifact(ckpt, "checkpoints")
    print_metrics(f"test metrics (final global model, after {rounds} rounds):", metrics)
    print(f"final global checkpoint: {ckpt}", flush=True)
    return summary
