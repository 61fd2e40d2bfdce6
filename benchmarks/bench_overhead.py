"""Overhead: medpipe's full training path against a hand-written PyTorch loop on the same work.

medpipe: `medpipe.pipeline.train` on the composed config (Lightning Trainer, the real callbacks:
best checkpoint on val/auroc, epoch line, history file; torchmetrics; MLflow run with asynchronous
logging in a sqlite store in a temporary folder), timed by `benchmarks.probes.TrainTimer`.
plain:   the same nn.Module built by `medpipe.pipeline.build_task` after the same seeding (so the
same initial weights), the same uint8 training tensors on the device sliced into batches of a
seeded per-epoch permutation, the same normalisation, optimizer (the config's torch.optim class and
arguments), loss, precision, batch size and number of batches; `torch.use_deterministic_algorithms`
and cudnn.benchmark set as the Trainer sets them. No Lightning, no metrics, no logging.

Counted (after `warmup_epochs` uncounted epochs, in both): the training phase of each epoch (from
its start to the end of its last optimizer step; validation excluded from both) gives samples/s
and the headline ratio. The full epoch (training plus validation: medpipe with its metrics,
checkpoint, history and MLflow calls, the plain loop with a forward pass, loss and probabilities
of the validation batches) gives a second ratio. Rounds alternate the order (plain first, then
medpipe first) in one process; each round's ratio compares the two runs of that round.

Sequence models run on their experiments' data: `crnn2d` is experiment=adrenal3d_crnn on
AdrenalMNIST3D 28^3 volumes (../shared/data, no augmentation, in memory), `rnn` experiment=ecg_hr_rnn
on synthetic ECG windows (regression: the plain loop computes the same z-scored Huber loss, and both
pass the records' lengths to the net), `inception1d` experiment=ecg_hr_inception (the same data).

    python -m benchmarks.bench_overhead                # CPU: CNN, ResNet-18, CRNN, RNN, Inception
    python -m benchmarks.bench_overhead --device cuda  # GPU set (bf16-mixed)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Bench,
    Goal,
    checksum,
    compose,
    fmt,
    md_table,
    run_medpipe,
    spread,
    sync,
)
from benchmarks.common import threads as set_threads

# Models measured per set: rounds, and the batches per epoch that keep `make bench` short on a CPU.
CPU_PLAN = {
    # 16 of the 32 batches per epoch: a warm-up epoch, then a counted one
    "cnn": {
        "rounds": 7,  # 16-batch epochs of ~1.5 s: the neighbours' load swings single rounds +-15%
        "warmup_epochs": 1,
        "epochs": 1,
        "limit_train_batches": 16,
        "limit_val_batches": None,
    },
    # ~35 images/s on one thread of this CPU: 1 batch per epoch (the warm-up epoch's batch, then
    # the counted one), validation on 1 batch
    "resnet18": {
        "rounds": 5,
        "warmup_epochs": 1,
        "epochs": 1,
        "limit_train_batches": 1,
        "limit_val_batches": 1,
    },
    # the CRNN on 28^3 volumes (~40 volumes/s on one thread): 3 batches of 32 per epoch, 3 rounds
    # (keeps `make bench` near 10 minutes)
    "crnn2d": {
        "rounds": 3,
        "warmup_epochs": 1,
        "epochs": 1,
        "limit_train_batches": 3,
        "limit_val_batches": 1,
    },
    # the LSTM on 10 s ECG windows (200 steps of 50 ms): 3 batches of 64 per epoch, 5 rounds
    "rnn": {
        "rounds": 5,
        "warmup_epochs": 1,
        "epochs": 1,
        "limit_train_batches": 3,
        "limit_val_batches": 1,
    },
    # InceptionTime on the same ECG windows (1000 samples, no frames): 3 batches of 64, 5 rounds
    "inception1d": {
        "rounds": 5,
        "warmup_epochs": 1,
        "epochs": 1,
        "limit_train_batches": 3,
        "limit_val_batches": 1,
    },
}
ADRENAL_NPZ = (
    Path(__file__).resolve().parents[2] / "shared/data/medmnist/adrenalmnist3d/adrenalmnist3d.npz"
)
# Models that are measured on their experiment's data rather than on the default data.
EXPERIMENTS = {
    "crnn2d": [
        "experiment=adrenal3d_crnn",
        "augmentation=none",
        "data.loader=memory",
        f"data.path={ADRENAL_NPZ}",
    ],
    "rnn": ["experiment=ecg_hr_rnn"],
    # the heart-rate recipe with InceptionTime (half width, stem pool 2), on the RNN's data
    "inception1d": ["experiment=ecg_hr_inception"],
}
GPU_PLAN = {
    "cnn": {
        "rounds": 5,
        "warmup_epochs": 1,
        "epochs": 10,
        "limit_train_batches": None,
        "limit_val_batches": None,
    },
    "resnet18": {
        "rounds": 5,
        "warmup_epochs": 1,
        "epochs": 10,
        "limit_train_batches": None,
        "limit_val_batches": None,
    },
    "crnn2d": {
        "rounds": 5,
        "warmup_epochs": 1,
        "epochs": 5,
        "limit_train_batches": None,
        "limit_val_batches": None,
    },
    "rnn": {
        "rounds": 5,
        "warmup_epochs": 1,
        "epochs": 5,
        "limit_train_batches": None,
        "limit_val_batches": None,
    },
    "inception1d": {
        "rounds": 5,
        "warmup_epochs": 1,
        "epochs": 5,
        "limit_train_batches": None,
        "limit_val_batches": None,
    },
}
SEQUENCE_NOTE = (
    "crnn2d: experiment=adrenal3d_crnn on AdrenalMNIST3D 28^3 (no augmentation); rnn: "
    "experiment=ecg_hr_rnn on synthetic 10 s ECG windows (regression, lengths passed to the net); "
    "inception1d: experiment=ecg_hr_inception (InceptionTime, the same data)."
)


def _overrides(
    model: str,
    plan: dict[str, Any],
    device: str,
    precision: str,
    batch: int | None,
    extra: Sequence[str] = (),
) -> list[str]:
    o = [
        *EXPERIMENTS.get(model, [f"model={model}"]),
        "callbacks.progress_bar=plain",
        "test_after_fit=false",  # after fit: not part of the measured epochs
        "log_model=false",
        f"trainer.max_epochs={plan['warmup_epochs'] + plan['epochs']}",
        "+callbacks.bench_timer._target_=benchmarks.probes.TrainTimer",
        f"+callbacks.bench_timer.warmup_epochs={plan['warmup_epochs']}",
    ]
    if device == "cuda":
        o += ["trainer=gpu", f"trainer.precision={precision}"]
    elif precision != "32-true":
        o.append(f"trainer.precision={precision}")
    for key in ("limit_train_batches", "limit_val_batches"):
        if plan[key] is not None:
            o.append(f"trainer.{key}={plan[key]}")
    if batch:
        o.append(f"data.batch_size={batch}")
    return o + list(extra)


def run_plain(cfg, device: str, plan: dict[str, Any]) -> dict[str, Any]:
    """The hand-written loop. Built exactly as medpipe.pipeline.train builds its net (same seeding,
    same order of construction), so both start from the same weights."""
    import lightning.pytorch as L
    import torch
    import torch.nn.functional as F
    from omegaconf import OmegaConf

    from medpipe.models.optim import build_scheduler
    from medpipe.pipeline import build_datamodule, build_task

    c = OmegaConf.to_container(cfg, resolve=True)
    seed = int(c["seed"])
    L.seed_everything(seed, workers=True, verbose=False)  # as medpipe.pipeline.train does
    dm = build_datamodule(c, seed)
    task = build_task(c, dm.meta)
    net = task.net
    init = checksum(net)
    dev = torch.device(device)
    net.to(dev)
    torch.use_deterministic_algorithms(bool(c["trainer"].get("deterministic", False)))
    torch.backends.cudnn.benchmark = bool(c["trainer"].get("benchmark", False))
    dm.setup("fit")  # the same in-memory uint8 tensors (on the CPU without a trainer)
    x, y, *lens = (t.to(dev) for t in dm._device_splits["train"])
    xv, yv, *lens_v = (t.to(dev) for t in dm._device_splits["val"])
    lengths = lens[0] if lens else None
    lengths_v = lens_v[0] if lens_v else None
    regression = dm.meta.task == "regression"
    t_mean, t_std = float(dm.meta.target_mean), float(dm.meta.target_std)
    huber = c["model"].get("loss") == "huber"
    label_smoothing = float(c["model"].get("label_smoothing", 0.0))

    def loss_fn(out, yb):
        if regression:  # z-scored target, as medpipe's regression task learns it
            z = (yb.float() - t_mean) / t_std
            return F.huber_loss(out[:, 0].float(), z) if huber else F.mse_loss(out[:, 0].float(), z)
        return F.cross_entropy(out, yb.long(), label_smoothing=label_smoothing)

    # the speed options (channels_last, compile) as a hand-written loop would apply them
    fmt = task.memory_format
    fast = torch.compile(net, mode=task.compile_mode) if task.compile_mode else net

    def forward(xb, lb):
        xb = norm(xb) if fmt is None else norm(xb).contiguous(memory_format=fmt)
        return fast(xb) if lb is None else fast(xb, lengths=lb)

    meta = dm.meta
    shape = (1, -1) + (1,) * (len(meta.sample_shape) - 1)
    mean = torch.tensor(meta.mean, dtype=torch.float32, device=dev).view(shape)
    std = torch.tensor(meta.std, dtype=torch.float32, device=dev).view(shape)
    scale = float(meta.scale)
    mode = c["data"].get("normalize", "zscore")

    def norm(xb):
        xb = xb.float()
        if mode == "none":
            return xb
        xb = xb / scale
        return (xb - mean) / std if mode == "zscore" else xb

    augment = dm.batch_augment
    if augment is not None:
        augment.seed = seed
    optimizer = task.optimizer_factory(params=net.parameters())
    scheduler = build_scheduler(optimizer, c["scheduler"], int(c["trainer"]["max_epochs"]))
    precision = str(c["trainer"].get("precision", "32-true"))
    if precision.startswith("bf16"):
        autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16)  # noqa: E731
    elif precision == "32-true" or precision == "32":
        autocast = contextlib.nullcontext
    else:
        raise SystemExit(f"plain loop: precision {precision} not supported (32-true, bf16-mixed)")

    clip = float(c["trainer"].get("gradient_clip_val") or 0.0)
    bs = int(c["data"]["batch_size"])
    n, nv = len(x), len(xv)
    n_batches = math.ceil(n / bs)
    if plan["limit_train_batches"] is not None:
        n_batches = min(n_batches, int(plan["limit_train_batches"]))
    n_val = math.ceil(nv / bs)
    if plan["limit_val_batches"] is not None:
        n_val = min(n_val, int(plan["limit_val_batches"]))

    train_s = full_s = train_cpu_s = 0.0
    samples = batches = 0
    steps: list[float] = []
    last_loss = math.nan
    for epoch in range(plan["warmup_epochs"] + plan["epochs"]):
        counted = epoch >= plan["warmup_epochs"]
        sync(dev)
        t0 = t_last = _now()
        cpu0 = time.process_time()
        net.train()
        g = torch.Generator().manual_seed(seed + 1_000_003 * epoch)
        idx = torch.randperm(n, generator=g).to(dev)
        loss_sum = torch.zeros((), device=dev)
        for b in range(n_batches):
            j = idx[b * bs : (b + 1) * bs]
            xb, yb = x.index_select(0, j), y.index_select(0, j)
            lb = lengths.index_select(0, j) if lengths is not None else None
            if augment is not None:
                xb = augment(xb)
            with autocast():
                logits = forward(xb, lb)
                loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:  # as the Trainer's gradient_clip_val (norm)
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            optimizer.step()
            loss_sum += loss.detach()
            if counted:
                samples += len(xb)
                batches += 1
                t = _now()
                steps.append(t - t_last)
                t_last = t
        sync(dev)
        t1 = _now()
        cpu1 = time.process_time()
        net.eval()
        probs = []
        with torch.no_grad(), autocast():
            for b in range(n_val):
                part = slice(b * bs, (b + 1) * bs)
                logits = forward(xv[part], lengths_v[part] if lengths_v is not None else None)
                loss_fn(logits.float(), yv[part])
                probs.append(logits.float() if regression else logits.float().softmax(1))
        last_loss = float(loss_sum) / n_batches  # one host sync per epoch, as a user would print it
        if scheduler is not None:
            scheduler.step()
        sync(dev)
        t2 = _now()
        if counted:
            train_s += t1 - t0
            train_cpu_s += cpu1 - cpu0
            full_s += t2 - t0
    return {
        "train_s": train_s,
        "train_cpu_s": train_cpu_s,
        "full_s": full_s,
        "samples": samples,
        "batches": batches,
        "epochs": plan["epochs"],
        "init_checksum": init,
        "last_train_loss": last_loss,
        "step_s": steps,
    }


def _now() -> float:
    return time.perf_counter()


def measure(
    model: str,
    plan: dict[str, Any],
    rounds: int,
    device: str,
    precision: str,
    root: Path,
    batch: int | None,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    import torch

    rows = []
    for r in range(rounds):
        cfg = compose(root, _overrides(model, plan, device, precision, batch, extra))
        cfg.paths.output_dir = str(root / f"out-{model}-{batch or 'cfg'}-{r}")
        order = ["plain", "medpipe"] if r % 2 == 0 else ["medpipe", "plain"]
        res: dict[str, dict[str, Any]] = {}
        for which in order:
            if which == "plain":
                res["plain"] = run_plain(copy.deepcopy(cfg), device, plan)
            else:
                res["medpipe"] = run_medpipe(copy.deepcopy(cfg))
            torch.use_deterministic_algorithms(False)
        p, m = res["plain"], res["medpipe"]
        assert p["samples"] == m["samples"], (p, m)
        row = {
            "round": r,
            "order": order,
            "samples": m["samples"],
            "plain_train_sps": p["samples"] / p["train_s"],
            "medpipe_train_sps": m["samples"] / m["train_s"],
            "plain_full_s": p["full_s"],
            "medpipe_full_s": m["full_s"],
            "plain": p,
            "medpipe": m,
        }
        row["ratio_train"] = row["medpipe_train_sps"] / row["plain_train_sps"]
        row["ratio_full"] = p["full_s"] / m["full_s"]
        row["plain_step_ms"] = statistics.median(p["step_s"]) * 1e3
        row["medpipe_step_ms"] = statistics.median(m["step_s"]) * 1e3
        row["ratio_step"] = row["plain_step_ms"] / row["medpipe_step_ms"]
        row["ratio_cpu"] = p["train_cpu_s"] / m["train_cpu_s"]
        rows.append(row)
        print(
            f"  {model} round {r + 1}/{rounds} ({' then '.join(order)}): plain "
            f"{row['plain_train_sps']:,.0f} samples/s, medpipe {row['medpipe_train_sps']:,.0f} "
            f"samples/s, ratio {row['ratio_train']:.3f} (CPU time {row['ratio_cpu']:.3f}, median step "
            f"{row['ratio_step']:.3f}, "
            f"full epoch {row['ratio_full']:.3f})",
            flush=True,
        )
    return {
        "model": model,
        "batch_size": batch or int(cfg.data.batch_size),
        "plan": plan,
        "rounds": rows,
        "ratio_train": spread([r["ratio_train"] for r in rows]),
        "ratio_full": spread([r["ratio_full"] for r in rows]),
        "ratio_step": spread([r["ratio_step"] for r in rows]),
        "ratio_cpu": spread([r["ratio_cpu"] for r in rows]),
        "ratio_step_pooled": statistics.median(s for r in rows for s in r["plain"]["step_s"])
        / statistics.median(s for r in rows for s in r["medpipe"]["step_s"]),
        "plain_step_ms": spread([r["plain_step_ms"] for r in rows]),
        "medpipe_step_ms": spread([r["medpipe_step_ms"] for r in rows]),
        "plain_train_sps": spread([r["plain_train_sps"] for r in rows]),
        "medpipe_train_sps": spread([r["medpipe_train_sps"] for r in rows]),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", default="cnn,resnet18,crnn2d,rnn,inception1d")
    ap.add_argument("--rounds", type=int, default=None, help="default: per model (5)")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: $BENCH_THREADS or 1)"
    )
    ap.add_argument("--precision", default=None, help="default: 32-true on CPU, bf16-mixed on GPU")
    ap.add_argument("--batch-sizes", default="", help="comma list; default: the config's (128)")
    ap.add_argument("--name", default=None, help="result name (default overhead_<device>)")
    ap.add_argument(
        "--overrides",
        default="",
        help="extra config overrides for both loops, space-separated, e.g. "
        "'channels_last=true compile=true' (the plain loop applies the same options)",
    )
    ap.add_argument(
        "--limit-train-batches",
        type=int,
        default=None,
        help="counted batches per epoch, every model",
    )
    args = ap.parse_args(argv)

    import torch

    threads = set_threads(args.threads)
    precision = args.precision or ("bf16-mixed" if args.device == "cuda" else "32-true")
    plan_all = copy.deepcopy(GPU_PLAN if args.device == "cuda" else CPU_PLAN)
    if args.limit_train_batches:
        for plan in plan_all.values():
            plan["limit_train_batches"] = args.limit_train_batches
            plan["limit_val_batches"] = plan["limit_val_batches"] or 2
    name = args.name or f"overhead_{'gpu' if args.device == 'cuda' else 'cpu'}"
    bench = Bench(
        name,
        f"Overhead: medpipe training path vs a plain PyTorch loop ({args.device}, {precision})",
        (__doc__ or "").split("\n\n    python")[0],
    )
    batches = [int(b) for b in args.batch_sizes.split(",") if b] or [None]
    extra = args.overrides.split()
    root = Path(tempfile.mkdtemp(prefix="medpipe-bench-overhead-"))
    results = []
    try:
        for model in [m for m in args.models.split(",") if m]:
            plan = plan_all[model]
            rounds = args.rounds or plan["rounds"]
            for batch in batches:
                print(
                    f"{model} (batch {batch or 'from config'}): {rounds} interleaved rounds",
                    flush=True,
                )
                results.append(
                    measure(model, plan, rounds, args.device, precision, root, batch, extra)
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert torch.get_num_threads() == threads

    def rng(sp: dict[str, Any], bold: bool = False) -> str:
        med = f"**{sp['median']:.3f}**" if bold else f"{sp['median']:.3f}"
        return f"{med} ({sp['min']:.3f}-{sp['max']:.3f})"

    rows, goals = [], []
    for res in results:
        plan = res["plan"]
        rows.append(
            [
                res["model"],
                res["batch_size"],
                len(res["rounds"]),
                f"{plan['warmup_epochs']} + {plan['epochs']} x {plan['limit_train_batches'] or 'all'}",
                f"{res['plain_train_sps']['median']:,.0f}",
                f"{res['medpipe_train_sps']['median']:,.0f}",
                rng(res["ratio_train"], bold=True),
                rng(res["ratio_cpu"]),
                rng(res["ratio_step"]),
                f"{res['ratio_step_pooled']:.3f}",
                rng(res["ratio_full"]),
            ]
        )
    by_model: dict[str, list[dict[str, Any]]] = {}
    for res in results:
        by_model.setdefault(res["model"], []).append(res)
    for model, rs in by_model.items():
        worst = min(rs, key=lambda r: r["ratio_train"]["median"])
        rt = worst["ratio_train"]
        goals.append(
            Goal(
                f"medpipe / plain throughput, {model} ({args.device})",
                ">= 0.97",
                f"{rt['median']:.3f} (median of {rt['n']} rounds, {rt['min']:.3f}-{rt['max']:.3f}; "
                f"CPU-time ratio {worst['ratio_cpu']['median']:.3f}, median-step ratio "
                f"{worst['ratio_step']['median']:.3f})",
                rt["median"] >= 0.97,
            )
        )
    if args.device == "cuda":
        rs = by_model.get("resnet18", [])
        if rs:
            best = max(rs, key=lambda r: r["medpipe_train_sps"]["median"])
            gpu = bench.machine.get("gpu") or {}
            goals.append(
                Goal(
                    f"medpipe ResNet-18 28x28 images/s ({gpu.get('name', 'GPU')})",
                    ">= 80,000",
                    f"{best['medpipe_train_sps']['median']:,.0f} (batch {best['batch_size']}, {precision})",
                    best["medpipe_train_sps"]["median"] >= 80_000
                    if "H200" in gpu.get("name", "")
                    else None,
                )
            )
    per_round = []
    for res in results:
        for r in res["rounds"]:
            per_round.append(
                [
                    res["model"],
                    res["batch_size"],
                    r["round"] + 1,
                    " then ".join(r["order"]),
                    r["samples"],
                    f"{r['plain_train_sps']:,.1f}",
                    f"{r['medpipe_train_sps']:,.1f}",
                    f"{r['ratio_train']:.3f}",
                    f"{r['plain_step_ms']:.2f}",
                    f"{r['medpipe_step_ms']:.2f}",
                    f"{r['ratio_step']:.3f}",
                    f"{r['ratio_cpu']:.3f}",
                    f"{r['plain_full_s']:.2f}",
                    f"{r['medpipe_full_s']:.2f}",
                    f"{r['ratio_full']:.3f}",
                ]
            )
    same_init = all(
        math.isclose(
            r["plain"]["init_checksum"], r["medpipe"]["init_checksum"], rel_tol=0, abs_tol=1e-9
        )
        for res in results
        for r in res["rounds"]
    )
    sections = [
        (
            "Results",
            md_table(
                [
                    "model",
                    "batch",
                    "rounds",
                    "epochs (warm-up + counted x batches)",
                    "plain samples/s",
                    "medpipe samples/s",
                    "**throughput ratio**, training phase: median (min-max)",
                    "CPU-time ratio: median (min-max)",
                    "median-step ratio: median (min-max)",
                    "median-step ratio, all rounds pooled",
                    "full-epoch ratio (incl. validation)",
                ],
                rows,
            )
            + "\n\nRatios are medpipe / plain (higher is better, 1.0 = no overhead). Throughput "
            "ratio: counted samples / training-phase time, per round. Median-step ratio: the "
            "plain loop's median step time / medpipe's, per round (robust to bursts of load from "
            "other jobs). CPU-time ratio: the plain loop's process CPU time over its training "
            "phase / medpipe's (all threads, MLflow's background thread included): the work each "
            "does, which other jobs do not change; with 1 torch thread it estimates the throughput "
            "ratio on a quiet machine. Data: the default synthetic lesions (4000 training, 1000 validation images, "
            f"1x28x28 uint8); {threads} torch thread(s); precision {precision}.",
        ),
        (
            "Per round",
            md_table(
                [
                    "model",
                    "batch",
                    "round",
                    "order",
                    "samples",
                    "plain samples/s",
                    "medpipe samples/s",
                    "ratio",
                    "plain median step ms",
                    "medpipe median step ms",
                    "step ratio",
                    "CPU-time ratio",
                    "plain full epoch s",
                    "medpipe full epoch s",
                    "full ratio",
                ],
                per_round,
            ),
        ),
    ]
    notes = [
        SEQUENCE_NOTE,
        "The machine is shared: other jobs ran during the measurement (load average in the machine "
        "table). Absolute samples/s move with the load; the ratios compare runs of the same round.",
        f"Same initial weights in both loops: {same_init} (parameter checksums at fit start).",
    ]
    for res in results:
        if res["plan"]["limit_train_batches"]:
            notes.append(
                f"{res['model']}: {res['plan']['limit_train_batches']} batches per epoch "
                "(trainer.limit_train_batches; the same in the plain loop) so that `make bench` stays "
                f"short; validation: {res['plan']['limit_val_batches'] or 'all'} batch(es)."
            )
    headline: dict[str, Any] = {}
    for r in results:
        key = f"{r['model']}_{r['batch_size']}"
        headline[f"ratio_{key}"] = r["ratio_train"]["median"]
        headline[f"step_ratio_{key}"] = r["ratio_step"]["median"]
        headline[f"medpipe_sps_{key}"] = r["medpipe_train_sps"]["median"]
    bench.write(
        settings={
            "device": args.device,
            "precision": precision,
            "threads": threads,
            "plans": {r["model"]: r["plan"] for r in results},
            "overrides": extra,
            "data": "synthetic_lesions (default)",
        },
        results={"models": results, "same_initial_weights": same_init},
        sections=sections,
        goals=goals,
        notes=notes,
        headline=headline,
    )
    for res in results:
        print(
            f"{res['model']} batch {res['batch_size']}: ratio {fmt(res['ratio_train']['median'])} "
            f"({fmt(res['ratio_train']['min'])}-{fmt(res['ratio_train']['max'])}), median step "
            f"{fmt(res['ratio_step']['median'])}"
        )


if __name__ == "__main__":
    main()
