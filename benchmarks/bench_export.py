"""Exported models: ONNX Runtime (CPUExecutionProvider) vs PyTorch eager on the CPU, the same
model and the same inputs, at batch 1 and batch 256.

Models: the seeds' CNN on the default synthetic lesions (`python -m medpipe.train` defaults) and,
when ../shared/data has PneumoniaMNIST, the same CNN trained by `experiment=pneumonia_cnn`; each
trained for one epoch (the weights do not change the work of a forward pass), then exported with
`medpipe.exporting.export` (format=onnx, its self-check on the whole test split included).
`--models ...,ecg_rnn` adds the heart-rate LSTM (`experiment=ecg_hr_rnn`, 10 s records with their
lengths). Inputs are the first samples of the test split, float32 in the stored scale, as the
exported model takes them.

PyTorch: the checkpoint's `task.inference_model()` in eval mode under `torch.inference_mode()`.
ONNX Runtime: an `InferenceSession` on the exported file, graph optimisations at their default
(all), `intra_op_num_threads` = the benchmarks' thread count, sequential execution. Both run in
one process; each round times one engine then the other (the order alternates by round), each
measurement a loop of calls lasting about `--seconds` after warm-up calls. Reported: the median
over rounds of ms per batch and samples/s, and the median (min-max) of the per-round ratio
eager ms / ONNX Runtime ms (above 1: ONNX Runtime is faster).

    python -m benchmarks.bench_export [--rounds 7] [--seconds 0.3] [--models lesions_cnn,pneumonia_cnn]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import PNEUMONIA_NPZ, Bench, Goal, compose, md_table, spread
from benchmarks.common import threads as set_threads

BATCHES = (1, 256)
MODELS: dict[str, tuple[str, list[str]]] = {
    # name: (what, training overrides)
    "lesions_cnn": ("seeds' CNN, synthetic lesions 1x28x28 (the default run)", []),
    "pneumonia_cnn": (
        "seeds' CNN, PneumoniaMNIST 1x28x28 (experiment=pneumonia_cnn)",
        ["experiment=pneumonia_cnn", f"data.path={PNEUMONIA_NPZ}"],
    ),
    "ecg_rnn": (
        "LSTM (2x64, bidirectional, frame 5), synthetic ECG 1x1000 with lengths "
        "(experiment=ecg_hr_rnn)",
        ["experiment=ecg_hr_rnn"],
    ),
}
TRAIN = [
    "trainer.max_epochs=1",
    "logger=none",
    "log_model=false",
    "test_after_fit=false",
    "callbacks.progress_bar=none",
    "evaluation.explain.enabled=false",
]


def train_and_export(root: Path, overrides: list[str]) -> tuple[Path, dict[str, Any]]:
    """One epoch of training, then `medpipe.export format=onnx`: (checkpoint, metadata)."""
    import json

    from medpipe.config import validate
    from medpipe.exporting import export
    from medpipe.pipeline import train

    cfg = compose(root, [*overrides, *TRAIN])
    train(cfg)
    ckpt = root / "out" / "checkpoints" / "best.ckpt"
    out = root / "model.onnx"
    c = validate(compose(root, [f"ckpt_path={ckpt}", f"out={out}"], "export"), "export")
    export(c)
    return ckpt, json.loads((root / "model.onnx.json").read_text())


def per_call_s(fn, seconds: float) -> float:
    """Seconds per call of `fn`, over a loop of about `seconds` (calibrated on a few calls)."""
    t0 = time.perf_counter()
    fn()
    fn()
    once = max((time.perf_counter() - t0) / 2, 1e-6)
    n = max(3, int(seconds / once))
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def measure(
    name: str, root: Path, overrides: list[str], rounds: int, seconds: float, n_threads: int
) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from medpipe.data.processed import read_split
    from medpipe.evaluating import restore

    ckpt, meta = train_and_export(root, overrides)
    c = {
        "ckpt_path": str(ckpt),
        "paths": {"processed_dir": str(root / "data/processed"), "raw_dir": str(root / "data/raw")},
        "data": {},
    }
    _, folder, _, task = restore(c)
    model = task.inference_model().eval()
    test = read_split(folder, "test")
    options = ort.SessionOptions()
    options.intra_op_num_threads = n_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(
        str(root / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    out: dict[str, Any] = {"export": meta, "batches": {}}
    for batch in BATCHES:
        n = min(batch, len(test))
        x = np.array(test.x[:n], dtype=np.float32)
        lengths = None if test.lengths is None else np.array(test.lengths[:n], dtype=np.int64)
        feed = {"x": x} if lengths is None else {"x": x, "lengths": lengths}
        xt = torch.from_numpy(x)
        kw = {} if lengths is None else {"lengths": torch.from_numpy(lengths)}

        def eager(xt=xt, kw=kw):
            with torch.inference_mode():
                return model(xt, **kw)

        def onnx(feed=feed):
            return session.run(None, feed)[0]

        diff = float(np.abs(onnx() - eager().numpy()).max())
        times: dict[str, list[float]] = {"eager": [], "onnxruntime": []}
        for r in range(rounds):
            order = ["eager", "onnxruntime"] if r % 2 == 0 else ["onnxruntime", "eager"]
            for which in order:
                fn = eager if which == "eager" else onnx
                times[which].append(per_call_s(fn, seconds))
        ratios = [e / o for e, o in zip(times["eager"], times["onnxruntime"], strict=True)]
        row = {
            "batch": n,
            "max_abs_diff": diff,
            "eager_ms": spread([t * 1e3 for t in times["eager"]]),
            "onnxruntime_ms": spread([t * 1e3 for t in times["onnxruntime"]]),
            "ratio": spread(ratios),
        }
        row["eager_sps"] = n / (row["eager_ms"]["median"] / 1e3)
        row["onnxruntime_sps"] = n / (row["onnxruntime_ms"]["median"] / 1e3)
        out["batches"][str(batch)] = row
        print(
            f"  {name} batch {n}: eager {row['eager_ms']['median']:.3f} ms "
            f"({row['eager_sps']:,.0f} samples/s), ONNX Runtime "
            f"{row['onnxruntime_ms']['median']:.3f} ms ({row['onnxruntime_sps']:,.0f} samples/s), "
            f"eager/ORT {row['ratio']['median']:.2f} ({row['ratio']['min']:.2f}-"
            f"{row['ratio']['max']:.2f}); max abs diff {diff:.1e}",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.3, help="per measurement (one engine)")
    ap.add_argument("--models", default="lesions_cnn,pneumonia_cnn", help=f"of {', '.join(MODELS)}")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch and ORT threads ($BENCH_THREADS or 1)"
    )
    args = ap.parse_args(argv)
    n_threads = set_threads(args.threads)
    names = [m for m in args.models.split(",") if m]
    if "pneumonia_cnn" in names and not PNEUMONIA_NPZ.exists():
        print(f"  pneumonia_cnn skipped: {PNEUMONIA_NPZ} not present", flush=True)
        names.remove("pneumonia_cnn")
    bench = Bench(
        "export_cpu",
        "Exported models: ONNX Runtime vs PyTorch eager (CPU)",
        (__doc__ or "").split("\n\n    python")[0],
    )
    results: dict[str, Any] = {}
    for name in names:
        root = Path(tempfile.mkdtemp(prefix=f"medpipe-bench-export-{name}-"))
        try:
            results[name] = measure(
                name, root, MODELS[name][1], args.rounds, args.seconds, n_threads
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def rng(sp: dict[str, Any], digits: int = 2) -> str:
        return f"{sp['median']:.{digits}f} ({sp['min']:.{digits}f}-{sp['max']:.{digits}f})"

    rows = [
        [
            MODELS[name][0],
            b["batch"],
            f"{b['eager_ms']['median']:.3f}",
            f"{b['onnxruntime_ms']['median']:.3f}",
            f"{b['eager_sps']:,.0f}",
            f"{b['onnxruntime_sps']:,.0f}",
            f"**{rng(b['ratio'])}**",
            f"{b['max_abs_diff']:.1e}",
        ]
        for name, r in results.items()
        for b in r["batches"].values()
    ]
    checks = [
        [
            MODELS[name][0],
            r["export"]["opset"],
            r["export"]["n_checked"],
            f"{r['export']['max_abs_diff']:.1e}",
        ]
        for name, r in results.items()
    ]
    worst = max((r["export"]["check"]["max_diff"] for r in results.values()), default=None)
    goals = [
        Goal(
            "exported ONNX model vs PyTorch on the whole test split (max difference)",
            "<= 1e-5",
            "n/a" if worst is None else f"{worst:.1e}",
            None if worst is None else worst <= 1e-5,
        )
    ]
    sections = [
        (
            "Results",
            md_table(
                [
                    "model",
                    "batch",
                    "eager ms/batch",
                    "ONNX Runtime ms/batch",
                    "eager samples/s",
                    "ONNX Runtime samples/s",
                    "**eager / ORT**: median (min-max)",
                    "max abs diff",
                ],
                rows,
            )
            + f"\n\nMedians over {args.rounds} rounds, each engine timed for about "
            f"{args.seconds:g} s per round, the order alternating by round; {n_threads} "
            "thread(s) for both. eager / ORT above 1: ONNX Runtime is faster.",
        ),
        (
            "The export's self-check",
            md_table(["model", "opset", "test samples checked", "max abs diff"], checks),
        ),
    ]
    headline = {
        f"{name}_b{b}_eager_over_ort": r["batches"][str(b)]["ratio"]["median"]
        for name, r in results.items()
        for b in BATCHES
        if str(b) in r["batches"]
    }
    bench.write(
        settings={
            "rounds": args.rounds,
            "seconds": args.seconds,
            "models": names,
            "batches": list(BATCHES),
            "threads": n_threads,
        },
        results=results,
        sections=sections,
        goals=goals,
        notes=[
            "Both engines run the same exported model's work: normalisation, the net, the "
            "temperature and softmax (`task.inference_model()`), on float32 inputs in the stored "
            "scale.",
            "The machine is shared with other jobs (load average in the machine table); ratios "
            "come from rounds that alternate the engines in one process.",
        ],
        headline=headline,
    )


if __name__ == "__main__":
    main()
