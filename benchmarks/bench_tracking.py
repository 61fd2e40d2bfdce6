"""Tracking cost: MLflow logging time per epoch as a share of epoch time (default experiment).

In-process, `medpipe.pipeline.train` on the default experiment (synthetic lesions, seeds' CNN,
`logger=mlflow` with asynchronous logging into a sqlite store in a temporary folder), shortened to
`--epochs` epochs; the first epoch is not counted. Every method of medpipe's MLflow logger
(`EpochStepMLFlowLogger.log_metrics`, `log_hyperparams`, `after_save_checkpoint`, `save`,
`finalize`) is wrapped with a timer, and `benchmarks.probes.EpochClock` marks the epochs.

direct share: time spent inside the logger's calls during the counted epochs / their wall time.
end-to-end share: the same runs with `logger=none` are interleaved (alternating order); share =
(epoch time with MLflow - epoch time without) / epoch time with MLflow, medians over rounds.
This also catches work the asynchronous logger does on its background thread (which competes for
the same cores), but it is within the noise of a shared machine.
One-time costs of a run (not per epoch) are reported apart: creating the run (experiment, tags,
the flattened config as params), logging the outputs after training (config, metrics, history,
checkpoint, plots, the MLflow model) and closing the run (flush of the async queue).

    python -m benchmarks.bench_tracking
"""

from __future__ import annotations

import argparse
import copy
import functools
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Bench, compose, md_table, spread
from benchmarks.common import threads as set_threads

CALLS: list[tuple[str, float, float]] = []  # (name, start, seconds)
ONE_TIME: dict[str, list[float]] = {}


def _timed(fn, name: str, store_one_time: bool = False):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.perf_counter() - t0
            if store_one_time:
                ONE_TIME.setdefault(name, []).append(dt)
            else:
                CALLS.append((name, t0, dt))

    return wrapper


def instrument() -> None:
    from medpipe import training
    from medpipe.tracking.mlflow_run import EpochStepMLFlowLogger, MlflowRun

    for meth in ("log_metrics", "log_hyperparams", "after_save_checkpoint", "save", "finalize"):
        setattr(EpochStepMLFlowLogger, meth, _timed(getattr(EpochStepMLFlowLogger, meth), meth))
    training.create_run = _timed(training.create_run, "create run (tags, params)", True)
    training.log_run_outputs = _timed(
        training.log_run_outputs, "log outputs (artifacts, model)", True
    )
    MlflowRun.end = _timed(MlflowRun.end, "end run (flush, status)", True)


def one_run(root: Path, logger: str, epochs: int, tag: str) -> dict[str, Any]:
    from benchmarks.probes import EpochClock
    from medpipe.pipeline import train

    cfg = compose(
        root,
        [
            "callbacks.progress_bar=plain",
            f"trainer.max_epochs={epochs}",
            f"logger={logger}",
            "+callbacks.bench_clock._target_=benchmarks.probes.EpochClock",
        ],
    )
    cfg.paths.output_dir = str(root / f"out-{tag}")
    EpochClock.records.clear()
    CALLS.clear()
    t0 = time.perf_counter()
    train(copy.deepcopy(cfg))
    total = time.perf_counter() - t0
    (rec,) = EpochClock.records
    bounds = rec["starts"] + [rec["end"]]
    epochs_s, mlflow_s = [], []
    for i in range(len(rec["starts"])):
        a, b = bounds[i], bounds[i + 1]
        epochs_s.append(b - a)
        mlflow_s.append(sum(dt for _, t, dt in CALLS if a <= t < b))
    calls = {}
    for name, _, dt in CALLS:
        c = calls.setdefault(name, {"n": 0, "s": 0.0})
        c["n"] += 1
        c["s"] += dt
    return {
        "logger": logger,
        "epoch_s": epochs_s,
        "mlflow_s": mlflow_s,
        "total_s": total,
        "calls": calls,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--epochs", type=int, default=2, help="epochs per run; the first is not counted"
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    n_threads = set_threads(args.threads)
    bench = Bench(
        "tracking",
        "Tracking cost: MLflow logging per epoch (default experiment)",
        (__doc__ or "").split("\n\n    python")[0],
    )
    instrument()
    root = Path(tempfile.mkdtemp(prefix="medpipe-bench-tracking-"))
    runs: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            for logger in ["mlflow", "none"] if r % 2 == 0 else ["none", "mlflow"]:
                res = one_run(root, logger, args.epochs, f"{logger}-{r}")
                res["round"] = r
                runs.append(res)
                counted = res["epoch_s"][1:]
                print(
                    f"  round {r + 1} {logger}: epochs {', '.join(f'{e:.2f}' for e in counted)} s; "
                    f"MLflow calls {sum(res['mlflow_s'][1:]) * 1e3:.1f} ms",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    ml = [r for r in runs if r["logger"] == "mlflow"]
    no = [r for r in runs if r["logger"] == "none"]
    ml_epochs = [e for r in ml for e in r["epoch_s"][1:]]
    no_epochs = [e for r in no for e in r["epoch_s"][1:]]
    ml_calls = [m for r in ml for m in r["mlflow_s"][1:]]
    direct = sum(ml_calls) / sum(ml_epochs)
    per_round = []
    for r in range(args.rounds):
        a = statistics.median([e for x in ml if x["round"] == r for e in x["epoch_s"][1:]])
        b = statistics.median([e for x in no if x["round"] == r for e in x["epoch_s"][1:]])
        per_round.append((a - b) / a)
    e2e = spread(per_round)
    calls: dict[str, dict[str, float]] = {}
    for r in ml:
        for name, c in r["calls"].items():
            d = calls.setdefault(name, {"n": 0, "s": 0.0})
            d["n"] += c["n"]
            d["s"] += c["s"]
    rows = [
        [
            "epoch time with MLflow (median)",
            f"{statistics.median(ml_epochs):.3f} s",
            f"{len(ml_epochs)} epochs",
        ],
        [
            "epoch time with logger=none (median)",
            f"{statistics.median(no_epochs):.3f} s",
            f"{len(no_epochs)} epochs",
        ],
        [
            "MLflow logger calls per epoch (median)",
            f"{statistics.median(ml_calls) * 1e3:.2f} ms",
            f"{calls.get('log_metrics', {'n': 0})['n'] / len(ml) / args.epochs:.1f} log_metrics calls per epoch",
        ],
        ["**direct share** (logger calls / epoch time)", f"**{direct * 100:.3f} %**", ""],
        [
            "end-to-end share ((with - without) / with, per round)",
            f"{e2e['median'] * 100:.1f} %",
            f"rounds: {', '.join(f'{v * 100:.1f} %' for v in per_round)}",
        ],
    ]
    call_rows = [
        [name, c["n"], f"{c['s'] / c['n'] * 1e3:.3f}", f"{c['s'] * 1e3:.1f}"]
        for name, c in sorted(calls.items())
    ]
    one_rows = [
        [name, f"{v[0]:.2f}", f"{statistics.median(v[1:]):.2f}" if len(v) > 1 else "n/a", len(v)]
        for name, v in ONE_TIME.items()
    ]
    bench.write(
        settings={
            "epochs_per_run": args.epochs,
            "counted_epochs_per_run": args.epochs - 1,
            "rounds": args.rounds,
            "threads": n_threads,
            "experiment": "default (synthetic lesions, cnn, mlflow async, sqlite)",
        },
        results={
            "runs": runs,
            "direct_share": direct,
            "end_to_end_share": e2e,
            "calls": calls,
            "one_time_s": {k: spread(v) for k, v in ONE_TIME.items()},
        },
        sections=[
            ("Per epoch", md_table(["", "value", ""], rows)),
            (
                "Logger calls (all epochs of the MLflow runs)",
                md_table(["call", "n", "ms per call", "ms total"], call_rows),
            ),
            (
                "One-time costs per run (not in the epochs)",
                md_table(
                    ["step", "first run (new sqlite store) s", "later runs s (median)", "runs"],
                    one_rows,
                )
                + "\n\nThe first run in a new store creates the MLflow database tables.",
            ),
        ],
        notes=[
            f"{n_threads} torch thread(s); the machine is shared with other jobs, so the end-to-end "
            "difference of a few percent is within the noise: the direct share is the robust figure."
        ],
        headline={
            "direct_share": direct,
            "end_to_end_share": e2e["median"],
            "mlflow_ms_per_epoch": statistics.median(ml_calls) * 1e3,
            "epoch_s": statistics.median(ml_epochs),
        },
    )


if __name__ == "__main__":
    main()
