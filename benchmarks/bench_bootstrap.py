"""Bootstrap intervals: wall time of `classification_cis` and `regression_cis` (every metric of the
task, 2000 replicates) on a test set of 1,000 samples.

Cases: binary (the positive-class probability of a model with AUROC about 0.8), 4-class multiclass
(softmax probabilities, argmax decisions, one-vs-rest AUROC per class) and regression (mae, rmse,
r2), each with percentile and BCa intervals. BCa adds the jackknife for its acceleration: one
metric evaluation per left-out sample (1,000 rows here). Synthetic, seeded data; the replicates are
stratified by class for the classification cases. Each case runs once uncounted (warm-up), then
`--repeats` times; the median is reported. numpy's BLAS runs with the benchmarks' thread count
(threadpoolctl). Larger test sets (`--sizes`) are timed for information; the goal is at 1,000.

    python -m benchmarks.bench_bootstrap [--sizes 1000,10000] [--replicates 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.common import DEFAULT_THREADS, Bench, Goal, md_table, spread, threads
from medpipe.evaluation.bootstrap import BootstrapSettings, classification_cis, regression_cis

GOAL_S = 2.0  # seconds per call at 1,000 samples and 2000 replicates
GOAL_SIZE = 1000


def _data(n: int, seed: int = 0) -> dict[str, tuple]:
    rng = np.random.default_rng(seed)
    binary_target = (rng.random(n) < 0.35).astype(np.int64)
    binary = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * binary_target - 0.6)))
    multi_target = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), multi_target] += 1.0
    multi = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    reg_target = rng.normal(70, 12, n)
    return {
        "binary": (binary, binary_target, "binary", ["normal", "pneumonia"]),
        "multiclass": (multi, multi_target, "multiclass", ["N", "A", "O", "~"]),
        "regression": (reg_target + rng.normal(0, 5, n), reg_target),
    }


def _run(case: str, data: dict, settings: BootstrapSettings):
    if case == "regression":
        return regression_cis(*data[case], settings=settings)
    scores, target, task, classes = data[case]
    score_classes = classes[:3] if task == "multiclass" else ()
    return classification_cis(scores, target, task, classes, 0.5, score_classes, settings)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000", help="comma list of test-set sizes")
    ap.add_argument("--replicates", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per case (after 1 warm-up)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"BLAS (and torch) threads (default $BENCH_THREADS or {DEFAULT_THREADS})",
    )
    args = ap.parse_args(argv)
    n_threads = threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    bench = Bench(
        "bootstrap",
        "Bootstrap intervals: seconds per call, 2000 replicates",
        (__doc__ or "").split("\n\n    python")[0],
    )
    cases = [(c, m) for c in ("binary", "multiclass", "regression") for m in ("percentile", "bca")]
    results: dict[str, dict] = {}
    with threadpool_limits(n_threads):
        for n in sizes:
            data = _data(n)
            for case, method in cases:
                settings = BootstrapSettings(n=args.replicates, method=method)
                out = _run(case, data, settings)  # warm-up
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    _run(case, data, settings)
                    times.append(time.perf_counter() - t0)
                key = f"{case}_{method}_{n}"
                main_metric = "mae" if case == "regression" else "auroc"
                results[key] = {
                    "case": case,
                    "method": method,
                    "samples": n,
                    "seconds": spread(times),
                    "metrics": len(out),
                    "example": {
                        "metric": main_metric,
                        "point": out.point[main_metric],
                        "interval": list(out[main_metric]),
                    },
                }
                s = results[key]["seconds"]
                print(
                    f"  {case:10s} {method:10s} n={n:6d}: {s['median']:.3f} s "
                    f"(min {s['min']:.3f}, max {s['max']:.3f}); {main_metric} "
                    f"{out.point[main_metric]:.3f} [{out[main_metric][0]:.3f}, "
                    f"{out[main_metric][1]:.3f}]",
                    flush=True,
                )

    rows = [
        [
            r["case"],
            r["method"],
            f"{r['samples']:,}",
            r["metrics"],
            f"{r['seconds']['median']:.3f}",
            f"{r['seconds']['min']:.3f}-{r['seconds']['max']:.3f}",
            f"{r['example']['metric']} {r['example']['point']:.3f} "
            f"[{r['example']['interval'][0]:.3f}, {r['example']['interval'][1]:.3f}]",
        ]
        for r in results.values()
    ]
    at_goal = {k: r for k, r in results.items() if r["samples"] == GOAL_SIZE}
    goals = []
    if at_goal:
        worst_key = max(at_goal, key=lambda k: at_goal[k]["seconds"]["median"])
        worst = at_goal[worst_key]
        goals.append(
            Goal(
                f"bootstrap intervals, {args.replicates} replicates, {GOAL_SIZE:,} samples, "
                "slowest case",
                f"<= {GOAL_S:g} s",
                f"{worst['seconds']['median']:.2f} s ({worst['case']} {worst['method']}, "
                f"median of {args.repeats})",
                worst["seconds"]["median"] <= GOAL_S and args.replicates >= 2000,
            )
        )
    bench.write(
        settings={
            "sizes": sizes,
            "replicates": args.replicates,
            "repeats": args.repeats,
            "threads": n_threads,
            "level": 0.95,
        },
        results=results,
        sections=[
            (
                "Results",
                md_table(
                    [
                        "case",
                        "interval",
                        "samples",
                        "metrics",
                        "seconds (median)",
                        "min-max",
                        "example interval",
                    ],
                    rows,
                ),
            )
        ],
        goals=goals,
        notes=[
            f"numpy/BLAS limited to {n_threads} thread(s); the machine is shared with other jobs "
            "(load average in the machine table).",
            "Every metric of the task is bootstrapped in one call (binary 10, multiclass 13 with "
            "f1_score, regression 3), all replicates of a chunk of 250 evaluated at once.",
        ],
        headline={f"{r['case']}_{r['method']}_s": r["seconds"]["median"] for r in at_goal.values()},
    )


if __name__ == "__main__":
    main()
