"""Your own files: the peak memory of preparing an image folder, and `predict`'s throughput.

prepare: a folder of generated 512x512 gray PNGs (smooth blobs and noise, two classes) is prepared
with `python -m medpipe.prepare data=image_folder data.image_size=[512,512]` in a fresh process,
at two sizes: a small one and one whose uint8 arrays are several times the memory budget. The
process's peak resident memory (ru_maxrss from wait4) must stay under the budget at both sizes:
files stream one at a time into the array files, so the peak does not grow with the folder.

predict: the default model (the seeds' CNN on 28x28 synthetic lesions, trained for one epoch
first) applied to a folder of 28x28 PNGs by medpipe's predict path (medpipe.predicting: read,
batch, predict, write predictions.csv) against a plain loop a user would write over the same files
(Pillow `Image.open` -> numpy -> batches of 256 -> the same inference model -> a CSV), in one
process, alternating, `--repeats` times each; the medians give files per second and the ratio.

    python -m benchmarks.bench_files [--images 2000] [--small 250] [--large 5000] [--budget-mb 400]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    DEFAULT_THREADS,
    REPO,
    Bench,
    Goal,
    cli_env,
    md_table,
    python,
    spread,
    threads,
)

PREDICT_GOAL = 0.9  # medpipe predict's throughput / the plain loop's


def _images(n: int, size: int, seed: int) -> tuple[list[np.ndarray], list[int]]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out, labels = [], []
    for _ in range(n):
        label = int(rng.integers(0, 2))
        cy, cx, r = rng.uniform(0.2, 0.8, 2).tolist() + [0.08 + 0.1 * label]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img = 60 + 140 * blob + rng.normal(0, 8, (size, size))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
        labels.append(label)
    return out, labels


def write_folder(root: Path, n: int, size: int, seed: int = 0) -> Path:
    from PIL import Image

    for start in range(0, n, 500):  # in chunks: the generator never holds the folder
        images, labels = _images(min(500, n - start), size, seed + start)
        for i, (im, label) in enumerate(zip(images, labels, strict=True)):
            path = root / ["a", "b"][label] / f"{start + i:06d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im).save(path, compress_level=1)
    return root


# Linux's ru_maxrss of a child counts the memory of the process it was forked from, so the
# command is started from a small launcher process, not from this one (which holds images).
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_mb(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(peak resident MB, wall s, exit code) of one command in a fresh process."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [python(), "-c", LAUNCHER, *cmd], cwd=REPO, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if out.returncode:
        sys.stderr.write(out.stderr[-2000:])
    kib = int(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else 0
    return kib / 1024, wall, out.returncode


def bench_prepare(work: Path, sizes: list[int], budget_mb: float) -> dict:
    results = {}
    for n in sizes:
        folder = write_folder(work / f"folder_{n}", n, 512)
        root = work / f"root_{n}"
        cmd = [
            python(),
            "-m",
            "medpipe.prepare",
            "data=image_folder",
            f"data.path={folder}",
            "data.image_size=[512,512]",
            f"paths.root_dir={root}",
        ]
        rss, wall, code = peak_rss_mb(cmd, cli_env())
        arrays_mb = n * 512 * 512 / 2**20
        results[str(n)] = {
            "images": n,
            "arrays_mb": round(arrays_mb, 1),
            "peak_rss_mb": round(rss, 1),
            "wall_s": round(wall, 1),
            "exit_code": code,
            "arrays_over_budget": round(arrays_mb / budget_mb, 2),
        }
        print(
            f"  prepare {n} images ({arrays_mb:.0f} MB of arrays): peak RSS {rss:.0f} MB, {wall:.1f} s",
            flush=True,
        )
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    return results


def _plain_loop(model, files: list[Path], out: Path, batch: int = 256) -> None:
    """What a user would write: Pillow, numpy, batches, the model, a CSV."""
    import torch
    from PIL import Image

    rows = []
    with torch.no_grad():
        for i in range(0, len(files), batch):
            chunk = files[i : i + batch]
            x = np.stack([np.asarray(Image.open(f))[None] for f in chunk]).astype(np.float32)
            probs = model(torch.from_numpy(x)).numpy()
            rows += [(str(f), *p) for f, p in zip(chunk, probs, strict=True)]
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def bench_predict(work: Path, n: int, repeats: int) -> dict:
    from medpipe.predicting import from_checkpoint, predict_files, write_predictions

    root = work / "train"
    cmd = [
        python(),
        "-m",
        "medpipe.train",
        "trainer.max_epochs=1",
        "callbacks.progress_bar=none",
        "logger=none",
        "log_model=false",
        "evaluation.explain.enabled=false",
        f"paths.root_dir={root}",
        f"paths.output_dir={root / 'run'}",
    ]
    subprocess.run(cmd, cwd=REPO, env=cli_env(), check=True, capture_output=True)
    p = from_checkpoint(str(root / "run" / "checkpoints" / "best.ckpt"))
    folder = write_folder(work / "predict_png", n, 28, seed=7)
    files = sorted(folder.rglob("*.png"))
    threshold = (p.card.get("operating_point") or {}).get("threshold")

    def medpipe_path() -> None:
        rows = predict_files(p, files, 256, "mean", None)
        write_predictions(work / "medpipe.csv", p, rows, threshold)

    def plain() -> None:
        _plain_loop(p.model, files, work / "plain.csv")

    times: dict[str, list[float]] = {"medpipe": [], "plain": []}
    medpipe_path(), plain()  # warm-up (file cache, first batches)
    for _ in range(repeats):
        for name, fn in (("medpipe", medpipe_path), ("plain", plain)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    # both wrote the same probabilities
    with open(work / "medpipe.csv") as a, open(work / "plain.csv") as b:
        mine = {r[0]: float(r[3]) for r in csv.reader(a) if r[1] == "ok"}
        theirs = {r[0]: float(r[2]) for r in csv.reader(b)}
    diff = max(abs(mine[k] - theirs[k]) for k in theirs)
    return {
        "images": n,
        "seconds": {k: spread(v) for k, v in times.items()},
        "files_per_s": {k: n / v for k, v in med.items()},
        "ratio": med["plain"] / med["medpipe"],
        "max_abs_diff": diff,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000, help="PNG files predicted")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--small", type=int, default=250, help="512x512 images of the small folder")
    ap.add_argument("--large", type=int, default=5000, help="512x512 images of the large folder")
    ap.add_argument("--budget-mb", type=float, default=256.0, help="peak memory budget of prepare")
    ap.add_argument(
        "--threads", type=int, default=None, help=f"torch threads (default {DEFAULT_THREADS})"
    )
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(threads(args.threads))
    bench = Bench(
        "files",
        "Your own files: prepare's peak memory and predict's throughput",
        (__doc__ or "").split("\n\n    python")[0],
    )
    work = Path(tempfile.mkdtemp(prefix="bench_files_"))
    try:
        prep = bench_prepare(work, [args.small, args.large], args.budget_mb)
        pred = bench_predict(work, args.images, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"  predict {args.images} PNGs: medpipe {pred['files_per_s']['medpipe']:.0f} files/s, "
        f"plain loop {pred['files_per_s']['plain']:.0f} files/s, ratio {pred['ratio']:.3f}",
        flush=True,
    )
    large, small = prep[str(args.large)], prep[str(args.small)]
    goals = [
        Goal(
            f"prepare's peak memory with {large['arrays_mb']:.0f} MB of arrays "
            f"({large['arrays_over_budget']:.1f}x the budget)",
            f"<= {args.budget_mb:.0f} MB",
            f"{large['peak_rss_mb']:.0f} MB ({small['peak_rss_mb']:.0f} MB with "
            f"{small['arrays_mb']:.0f} MB of arrays)",
            large["peak_rss_mb"] <= args.budget_mb and large["exit_code"] == 0,
        ),
        Goal(
            "predict throughput / a plain Pillow + PyTorch loop (28x28 PNGs)",
            f">= {PREDICT_GOAL}",
            f"{pred['ratio']:.3f} ({pred['files_per_s']['medpipe']:.0f} vs "
            f"{pred['files_per_s']['plain']:.0f} files/s)",
            pred["ratio"] >= PREDICT_GOAL,
        ),
    ]
    prep_rows = [
        [r["images"], f"{r['arrays_mb']:.0f}", f"{r['peak_rss_mb']:.0f}", f"{r['wall_s']:.1f}"]
        for r in prep.values()
    ]
    s = pred["seconds"]
    pred_rows = [
        [k, f"{s[k]['median']:.3f}", f"{pred['files_per_s'][k]:.0f}"] for k in ("medpipe", "plain")
    ]
    bench.write(
        settings=vars(args),
        results={"prepare": prep, "predict": pred},
        sections=[
            (
                "Preparing a folder (fresh process each)",
                md_table(["images", "arrays MB", "peak RSS MB", "wall s"], prep_rows),
            ),
            (
                f"Predicting {args.images} PNG files (median of {args.repeats})",
                md_table(["path", "seconds", "files/s"], pred_rows)
                + f"\n\nratio {pred['ratio']:.3f}; max |medpipe - plain| probability "
                f"{pred['max_abs_diff']:.2e}",
            ),
        ],
        goals=goals,
        headline={"prepare_peak_rss_mb": large["peak_rss_mb"], "predict_ratio": pred["ratio"]},
    )


if __name__ == "__main__":
    main()
