"""Data path: augmented training batches per second, albumentations DataLoader vs on-device batches.

Data: the PneumoniaMNIST training split (4708 x 1 x 28 x 28 uint8) from
../shared/data/medmnist/pneumoniamnist/pneumoniamnist_reconstructed.npz, or synthetic data of that
shape when the file is absent; in memory in both paths. Augmentation: conf/augmentation/light.yaml
(horizontal flip, affine, brightness/contrast), batch size 128, shuffled every epoch.

albumentations: `medpipe.data.transforms.build_albumentations` applied per sample in
`medpipe.data.datamodule.ArrayDataset` inside a torch DataLoader with 0, 1 and 2 persistent
workers (medpipe's `data.loader=workers` path); batches are moved to the device.
on-device: `medpipe.data.datamodule.DeviceBatches` over the tensors on the device, each batch
augmented by `medpipe.data.batch_augment.BatchAugment` (medpipe's `data.loader=memory` path).

Every loader runs one uncounted warm-up epoch (which starts the workers), then the paths take
turns for `--rounds` rounds: one full epoch of each DataLoader, then `--device-epochs` epochs of
the on-device path. Counted: the whole epoch, from asking for the first batch to receiving the
last (the GPU synchronised at the end).

    python -m benchmarks.bench_datapath                 # CPU
    python -m benchmarks.bench_datapath --device cuda   # GPU set
"""

from __future__ import annotations

import argparse
import os

from benchmarks.common import PNEUMONIA_NPZ, REPO, Bench, Goal, md_table, now, spread, sync
from benchmarks.common import threads as set_threads

BATCH = 128


def load_data():
    import numpy as np

    if PNEUMONIA_NPZ.exists():
        with np.load(PNEUMONIA_NPZ) as d:
            x, y = d["train_images"], d["train_labels"].reshape(-1)
        source = str(PNEUMONIA_NPZ.relative_to(REPO.parent))
    else:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (4708, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 2, 4708).astype(np.uint8)
        source = "synthetic uint8 of PneumoniaMNIST's shape (the npz is absent)"
    return np.ascontiguousarray(x[:, None]), y, source


def light_ops() -> list[dict]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "augmentation" / "light.yaml"))[
        "train"
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device-epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--all-cores",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the on-device path with one torch thread per usable core (the cores the "
        "2-worker DataLoader uses)",
    )
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)

    import torch
    from torch.utils.data import DataLoader

    from medpipe.data.batch_augment import BatchAugment
    from medpipe.data.datamodule import ArrayDataset, DeviceBatches
    from medpipe.data.processed import Split
    from medpipe.data.transforms import build_albumentations

    threads = set_threads(args.threads)
    cores = len(os.sched_getaffinity(0))
    dev = torch.device(args.device)
    extra_threads = cores if args.all_cores and cores != threads and dev.type == "cpu" else None
    name = args.name or f"datapath_{'gpu' if args.device == 'cuda' else 'cpu'}"
    bench = Bench(
        name,
        f"Data path: albumentations DataLoader vs on-device batches ({args.device})",
        (__doc__ or "").split("\n\n    python")[0],
    )
    x, y, source = load_data()
    ops = light_ops()
    seed = 42
    workers = [int(w) for w in args.workers.split(",") if w != ""]

    loaders = {}
    for w in workers:
        ds = ArrayDataset(Split(x, y), build_albumentations(ops, seed))
        loaders[w] = DataLoader(
            ds,
            batch_size=BATCH,
            shuffle=True,
            num_workers=w,
            persistent_workers=w > 0,
            generator=torch.Generator().manual_seed(seed),
        )
    xd, yd = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
    epoch = {"n": 0}
    batches = DeviceBatches(xd, yd, BATCH, shuffle=True, seed=seed, epoch_fn=lambda: epoch["n"])
    augment = BatchAugment(ops, seed)

    def dl_epoch(w: int) -> tuple[float, int]:
        t0, n = now(), 0
        for xb, yb in loaders[w]:
            xb, yb = xb.to(dev), yb.to(dev)
            n += len(xb)
        sync(dev)
        return now() - t0, n

    def device_epochs(k: int, n_threads: int = threads) -> tuple[float, int]:
        torch.set_num_threads(n_threads)
        sync(dev)
        t0, n = now(), 0
        for _ in range(k):
            for xb, _yb in batches:
                xb = augment(xb)
                n += len(xb)
            epoch["n"] += 1
        sync(dev)
        torch.set_num_threads(threads)
        return now() - t0, n

    print(f"warm-up: one epoch per loader ({len(x)} images from {source})", flush=True)
    for w in workers:
        dl_epoch(w)
    device_epochs(1)
    sps: dict[str, list[float]] = {f"albumentations_{w}w": [] for w in workers}
    sps["on_device"] = []
    if extra_threads:
        sps["on_device_all_cores"] = []
        ratios_all: dict[int, list[float]] = {w: [] for w in workers}
    ratios: dict[int, list[float]] = {w: [] for w in workers}
    for r in range(args.rounds):
        this = {}
        for w in workers:
            s, n = dl_epoch(w)
            this[w] = n / s
            sps[f"albumentations_{w}w"].append(n / s)
        s, n = device_epochs(args.device_epochs)
        dev_sps = n / s
        sps["on_device"].append(dev_sps)
        for w in workers:
            ratios[w].append(dev_sps / this[w])
        if extra_threads:
            s, n = device_epochs(args.device_epochs, extra_threads)
            sps["on_device_all_cores"].append(n / s)
            for w in workers:
                ratios_all[w].append(n / s / this[w])
        print(
            f"  round {r + 1}/{args.rounds}: "
            + ", ".join(f"{w} workers {this[w]:,.0f}" for w in workers)
            + f", on-device {dev_sps:,.0f} samples/s"
            + (
                f" ({sps['on_device_all_cores'][-1]:,.0f} with {extra_threads} threads)"
                if extra_threads
                else ""
            ),
            flush=True,
        )
    for dl in loaders.values():  # stop the persistent workers
        del dl
    summary = {k: spread(v) for k, v in sps.items()}
    ratio_summary = {w: spread(v) for w, v in ratios.items()}
    all_summary = {w: spread(v) for w, v in ratios_all.items()} if extra_threads else {}
    rows = []
    for w in workers:
        s = summary[f"albumentations_{w}w"]
        rt = ratio_summary[w]
        rows.append(
            [
                f"albumentations DataLoader, {w} worker{'s' if w != 1 else ''}",
                f"{s['median']:,.0f}",
                f"{s['min']:,.0f}-{s['max']:,.0f}",
                f"{1e6 / s['median']:.0f}",
                f"{rt['median']:.1f} ({rt['min']:.1f}-{rt['max']:.1f})",
            ]
            + (
                [
                    f"{all_summary[w]['median']:.1f} ({all_summary[w]['min']:.1f}-{all_summary[w]['max']:.1f})"
                ]
                if extra_threads
                else []
            )
        )
    for key, n_threads in [("on_device", threads), ("on_device_all_cores", extra_threads)]:
        if key not in summary:
            continue
        s = summary[key]
        rows.append(
            [
                f"on-device BatchAugment ({args.device}, {n_threads} torch thread"
                f"{'s' if n_threads != 1 else ''})",
                f"{s['median']:,.0f}",
                f"{s['min']:,.0f}-{s['max']:,.0f}",
                f"{1e6 / s['median']:.1f}",
                "",
            ]
            + ([""] if extra_threads else [])
        )
    s = summary["on_device"]
    goals = []
    ref = 2 if 2 in ratio_summary else max(workers)
    if args.device == "cpu":
        goals.append(
            Goal(
                f"on-device / albumentations DataLoader with {ref} workers (28x28, CPU)",
                ">= 10x",
                f"{ratio_summary[ref]['median']:.1f}x with {threads} torch thread"
                f"{'s' if threads != 1 else ''}"
                + (
                    f" ({all_summary[ref]['median']:.1f}x with {extra_threads})"
                    if extra_threads
                    else ""
                ),
                ratio_summary[ref]["median"] >= 10,
            )
        )
    bench.write(
        settings={
            "device": args.device,
            "threads": threads,
            "batch_size": BATCH,
            "rounds": args.rounds,
            "device_epochs_per_round": args.device_epochs,
            "data": source,
            "images": int(len(x)),
            "augmentation": ops,
            "workers": workers,
        },
        results={
            "samples_per_s": summary,
            "on_device_over_dataloader": {str(w): v for w, v in ratio_summary.items()},
            "on_device_all_cores_over_dataloader": {str(w): v for w, v in all_summary.items()},
            "all_cores_threads": extra_threads,
        },
        sections=[
            (
                "Results",
                md_table(
                    [
                        "path",
                        "samples/s (median)",
                        "min-max",
                        "µs per image",
                        f"on-device speed-up, {threads} thread{'s' if threads != 1 else ''}: "
                        "median (min-max)",
                    ]
                    + ([f"on-device speed-up, {extra_threads} threads"] if extra_threads else []),
                    rows,
                )
                + f"\n\n{len(x)} images of 1x28x28 uint8 ({source}), conf/augmentation/light.yaml, batch "
                f"{BATCH}, {threads} torch threads in the main process, {args.rounds} interleaved rounds.",
            )
        ],
        goals=goals,
        notes=[
            "The machine is shared: DataLoader workers compete with other jobs for the 2 cores "
            "(load average in the machine table); the on-device path uses torch's intra-op threads.",
            "The goal's verdict uses the on-device figure with the benchmark's thread count (1 by "
            "default), although the 2-worker DataLoader keeps every usable core busy; the "
            "all-cores column gives the on-device path the same cores.",
        ],
        headline={
            "on_device_sps": s["median"],
            **{
                f"albumentations_{w}w_sps": summary[f"albumentations_{w}w"]["median"]
                for w in workers
            },
            f"ratio_vs_{ref}w": ratio_summary[ref]["median"],
            **(
                {
                    "on_device_all_cores_sps": summary["on_device_all_cores"]["median"],
                    f"all_cores_ratio_vs_{ref}w": all_summary[ref]["median"],
                }
                if extra_threads
                else {}
            ),
        },
    )


if __name__ == "__main__":
    main()
