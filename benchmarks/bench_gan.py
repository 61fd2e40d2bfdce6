"""GAN overhead: medpipe's conditional-GAN training path (task_kind=gan) vs a plain PyTorch GAN
loop on the same nets, the same batches, the same losses and updates.

medpipe: `medpipe.pipeline.train` on `experiment=pneumonia_gan` (PneumoniaMNIST from ../shared/data;
the default synthetic lesions with `task_kind=gan model=gan` if that file is absent): the
Lightning Trainer under manual optimisation with the real callbacks (best checkpoint on val/fid,
epoch line, history file), an MLflow run (asynchronous logging, sqlite store in a temporary
folder), the per-epoch sample grid and val/fid. `test_after_fit` and `log_model` are off (after
the counted epochs); the feature classifier of val/fid trains for 1 epoch before fit (not counted).

plain: the `ConditionalGAN` that `build_task` makes after the same seeding (the same initial
weights; the result file checks the parameter checksums), the same in-memory uint8 training
tensors sliced by the same seeded per-epoch permutation, the normalisation written out, the
config's Adam for each net with the same learning rates and betas, and per batch what the task
does: one discriminator step on the real batch and as many generated images of the same classes
(one forward pass, hinge loss, DiffAugment translation + cutout on both), one generator step
through the updated discriminator with its weights frozen, the EMA update of the generator. No
Lightning, no logging (one host sync per epoch for the mean losses, as a user prints them).

Counted (after 1 uncounted warm-up epoch, in both): the training phase of each epoch, from its
start to the end of its last step (validation excluded): images/s and the headline ratio
medpipe/plain. Rounds alternate which loop runs first, in one process; median and min-max of the
per-round ratios are reported, with the median-step and CPU-time ratios.

    python -m benchmarks.bench_gan                 # 5 rounds, 24 batches of 64 per epoch
"""

from __future__ import annotations

import argparse
import copy
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PNEUMONIA_NPZ,
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


def _overrides(batches: int, warmup: int, epochs: int) -> list[str]:
    data = (
        ["experiment=pneumonia_gan", f"data.path={PNEUMONIA_NPZ}"]
        if PNEUMONIA_NPZ.exists()
        else ["task_kind=gan", "model=gan", "data.batch_size=64", "data.loader=memory"]
    )
    return [
        *data,
        "callbacks.progress_bar=plain",
        "test_after_fit=false",  # after fit: not part of the measured epochs
        "log_model=false",
        "model.eval.feature_epochs=1",  # before fit: not counted either
        f"trainer.max_epochs={warmup + epochs}",
        f"trainer.limit_train_batches={batches}",
        "+callbacks.bench_timer._target_=benchmarks.probes.TrainTimer",
        f"+callbacks.bench_timer.warmup_epochs={warmup}",
    ]


def run_plain(cfg, batches: int, warmup: int, epochs: int) -> dict[str, Any]:
    """The hand-written GAN loop, built exactly as medpipe.pipeline.train builds its net (same
    seeding, same order of construction), so both start from the same weights."""
    import lightning.pytorch as L
    import torch
    import torch.nn.functional as F
    from omegaconf import OmegaConf

    from medpipe.data.diff_augment import DiffAugment
    from medpipe.pipeline import build_datamodule, build_task

    c = OmegaConf.to_container(cfg, resolve=True)
    seed = int(c["seed"])
    L.seed_everything(seed, workers=True, verbose=False)  # as medpipe.pipeline.train does
    dm = build_datamodule(c, seed)
    task = build_task(c, dm.meta)
    net = task.net
    init = checksum(net)
    G, D = net.generator, net.discriminator
    ema = copy.deepcopy(G).requires_grad_(False)  # as the task keeps it
    torch.use_deterministic_algorithms(bool(c["trainer"].get("deterministic", False)))
    dm.setup("fit")
    x, y = dm._device_splits["train"]
    meta, model = dm.meta, c["model"]
    mean = torch.tensor(meta.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(meta.std, dtype=torch.float32).view(1, -1, 1, 1)
    scale = float(meta.scale)

    def norm(v):  # the data's zscore normalisation of stored intensities
        return (v.float() / scale - mean) / std

    augment = DiffAugment(model["diffaugment"], model["diffaugment_p"])
    opt = c["optimizer"]
    betas = tuple(opt.get("betas", (0.9, 0.999)))
    opt_g = torch.optim.Adam(G.parameters(), lr=model["lr_g"] or opt["lr"], betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=model["lr_d"] or opt["lr"], betas=betas)
    d_params = list(D.parameters())
    decay_max, k_ema = float(model["ema_decay"]), 0
    bs, n, z_dim = int(c["data"]["batch_size"]), len(x), net.z_dim
    n_batches = min(math.ceil(n / bs), batches)

    train_s = train_cpu_s = 0.0
    samples = 0
    steps: list[float] = []
    last = (math.nan, math.nan)
    for epoch in range(warmup + epochs):
        counted = epoch >= warmup
        sync()
        t0 = t_last = time.perf_counter()
        cpu0 = time.process_time()
        G.train()
        D.train()
        g = torch.Generator().manual_seed(seed + 1_000_003 * epoch)  # the datamodule's order
        idx = torch.randperm(n, generator=g)
        d_sum, g_sum = torch.zeros(()), torch.zeros(())
        for b in range(n_batches):
            j = idx[b * bs : (b + 1) * bs]
            xb, yb = x.index_select(0, j), y.index_select(0, j)
            m = len(xb)
            real = norm(xb)
            fake = norm(scale * (G(torch.randn(m, z_dim), yb) + 1) * 0.5)
            scores = D(augment(torch.cat([real, fake.detach()])), torch.cat([yb, yb]))
            d_loss = F.relu(1 - scores[:m]).mean() + F.relu(1 + scores[m:]).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            for p in d_params:
                p.requires_grad_(False)
            g_loss = -D(augment(fake), yb).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            for p in d_params:
                p.requires_grad_(True)
            with torch.no_grad():
                decay = min(decay_max, (1 + k_ema) / (10 + k_ema))
                torch._foreach_lerp_(list(ema.parameters()), list(G.parameters()), 1 - decay)
                for b_ema, b_live in zip(ema.buffers(), G.buffers(), strict=True):
                    b_ema.copy_(b_live)
                k_ema += 1
            d_sum += d_loss.detach()
            g_sum += g_loss.detach()
            if counted:
                samples += m
                t = time.perf_counter()
                steps.append(t - t_last)
                t_last = t
        last = (float(d_sum) / n_batches, float(g_sum) / n_batches)  # one sync per epoch
        sync()
        if counted:
            train_s += time.perf_counter() - t0
            train_cpu_s += time.process_time() - cpu0
    return {
        "train_s": train_s,
        "train_cpu_s": train_cpu_s,
        "samples": samples,
        "epochs": epochs,
        "init_checksum": init,
        "last_d_loss": last[0],
        "last_g_loss": last[1],
        "step_s": steps,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=24, help="training batches per epoch")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: $BENCH_THREADS or 1)"
    )
    args = ap.parse_args(argv)

    import torch

    threads = set_threads(args.threads)
    warmup, epochs = 1, 1
    bench = Bench(
        "gan_cpu",
        "GAN overhead: medpipe task_kind=gan vs a plain PyTorch GAN loop (CPU)",
        (__doc__ or "").split("\n\n    python")[0],
    )
    root = Path(tempfile.mkdtemp(prefix="medpipe-bench-gan-"))
    rows = []
    try:
        for r in range(args.rounds):
            cfg = compose(root, _overrides(args.batches, warmup, epochs))
            cfg.paths.output_dir = str(root / f"out-{r}")
            order = ["plain", "medpipe"] if r % 2 == 0 else ["medpipe", "plain"]
            res: dict[str, dict[str, Any]] = {}
            for which in order:
                if which == "plain":
                    res["plain"] = run_plain(copy.deepcopy(cfg), args.batches, warmup, epochs)
                else:
                    res["medpipe"] = run_medpipe(copy.deepcopy(cfg))
                torch.use_deterministic_algorithms(False)
            p, m = res["plain"], res["medpipe"]
            assert p["samples"] == m["samples"], (p["samples"], m["samples"])
            row = {
                "round": r,
                "order": order,
                "samples": m["samples"],
                "batch_size": int(cfg.data.batch_size),
                "plain_sps": p["samples"] / p["train_s"],
                "medpipe_sps": m["samples"] / m["train_s"],
                "plain_step_ms": statistics.median(p["step_s"]) * 1e3,
                "medpipe_step_ms": statistics.median(m["step_s"]) * 1e3,
                "ratio_cpu": p["train_cpu_s"] / m["train_cpu_s"],
                "same_init": math.isclose(p["init_checksum"], m["init_checksum"], abs_tol=1e-9),
                "plain": p,
                "medpipe": m,
            }
            row["ratio"] = row["medpipe_sps"] / row["plain_sps"]
            row["ratio_step"] = row["plain_step_ms"] / row["medpipe_step_ms"]
            rows.append(row)
            print(
                f"  round {r + 1}/{args.rounds} ({' then '.join(order)}): plain "
                f"{row['plain_sps']:,.0f} images/s, medpipe {row['medpipe_sps']:,.0f} images/s, "
                f"ratio {row['ratio']:.3f} (median step {row['ratio_step']:.3f}, CPU time "
                f"{row['ratio_cpu']:.3f})",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    ratio = spread([r["ratio"] for r in rows])
    step = spread([r["ratio_step"] for r in rows])
    cpu = spread([r["ratio_cpu"] for r in rows])
    plain_sps = spread([r["plain_sps"] for r in rows])
    medpipe_sps = spread([r["medpipe_sps"] for r in rows])
    same_init = all(r["same_init"] for r in rows)
    data = (
        "PneumoniaMNIST (experiment=pneumonia_gan)"
        if PNEUMONIA_NPZ.exists()
        else ("synthetic lesions (task_kind=gan model=gan)")
    )

    def rng(sp: dict[str, Any]) -> str:
        return f"{sp['median']:.3f} ({sp['min']:.3f}-{sp['max']:.3f})"

    sections = [
        (
            "Results",
            md_table(
                [
                    "data",
                    "batch",
                    "rounds",
                    "epochs (warm-up + counted x batches)",
                    "plain images/s",
                    "medpipe images/s",
                    "**throughput ratio**: median (min-max)",
                    "median-step ratio",
                    "CPU-time ratio",
                ],
                [
                    [
                        data,
                        rows[0]["batch_size"],
                        len(rows),
                        f"{warmup} + {epochs} x {args.batches}",
                        f"{plain_sps['median']:,.0f}",
                        f"{medpipe_sps['median']:,.0f}",
                        f"**{rng(ratio)}**",
                        rng(step),
                        rng(cpu),
                    ]
                ],
            )
            + "\n\nRatios are medpipe / plain (higher is better, 1.0 = no overhead). An image is "
            "one real image of the batch (each step also generates as many). Median-step ratio: "
            "the plain loop's median step time / medpipe's (robust to bursts of load from other "
            "jobs). CPU-time ratio: process CPU time over the training phase, plain / medpipe "
            f"(the work done). {threads} torch thread(s).",
        ),
        (
            "Per round",
            md_table(
                [
                    "round",
                    "order",
                    "images",
                    "plain images/s",
                    "medpipe images/s",
                    "ratio",
                    "plain median step ms",
                    "medpipe median step ms",
                    "step ratio",
                    "CPU-time ratio",
                ],
                [
                    [
                        r["round"] + 1,
                        " then ".join(r["order"]),
                        r["samples"],
                        f"{r['plain_sps']:,.1f}",
                        f"{r['medpipe_sps']:,.1f}",
                        f"{r['ratio']:.3f}",
                        f"{r['plain_step_ms']:.1f}",
                        f"{r['medpipe_step_ms']:.1f}",
                        f"{r['ratio_step']:.3f}",
                        f"{r['ratio_cpu']:.3f}",
                    ]
                    for r in rows
                ],
            ),
        ),
    ]
    goals = [
        Goal(
            "medpipe / plain GAN training throughput (cpu)",
            ">= 0.97",
            f"{ratio['median']:.3f} (median of {ratio['n']} rounds, {ratio['min']:.3f}-"
            f"{ratio['max']:.3f}; median-step ratio {step['median']:.3f}, CPU-time ratio "
            f"{cpu['median']:.3f})",
            ratio["median"] >= 0.97,
        )
    ]
    notes = [
        "The machine is shared: other jobs ran during the measurement (load average in the machine "
        "table). Absolute images/s move with the load; the ratios compare runs of the same round.",
        f"Same initial weights in both loops: {same_init} (parameter checksums at fit start).",
        f"{args.batches} batches per epoch (trainer.limit_train_batches; the same in the plain "
        "loop), so that `make bench` stays short.",
    ]
    bench.write(
        settings={
            "threads": threads,
            "rounds": args.rounds,
            "batches_per_epoch": args.batches,
            "warmup_epochs": warmup,
            "epochs": epochs,
            "data": data,
        },
        results={"rounds": rows, "same_initial_weights": same_init},
        sections=sections,
        goals=goals,
        notes=notes,
        headline={
            "ratio": ratio["median"],
            "step_ratio": step["median"],
            "medpipe_images_per_s": medpipe_sps["median"],
        },
    )
    print(
        f"GAN: ratio {fmt(ratio['median'])} ({fmt(ratio['min'])}-{fmt(ratio['max'])}), median "
        f"step {fmt(step['median'])}"
    )


if __name__ == "__main__":
    main()
