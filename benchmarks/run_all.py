"""Run a set of benchmarks, each in its own process, and summarise their headline figures and goals
in benchmarks/results/summary_<set>.{md,json}.

    python -m benchmarks.run_all --set cpu            # `make bench`: about 10 minutes on 2 cores
    python -m benchmarks.run_all --set gpu            # `make bench-gpu`: needs CUDA
    python -m benchmarks.run_all --set cpu --only startup,datapath --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import (
    DEFAULT_THREADS,
    REPO,
    RESULTS_DIR,
    machine,
    machine_line,
    md_table,
    threads,
)


def _num(v: object) -> str:
    if isinstance(v, bool) or not isinstance(v, float):
        return str(v)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) >= 10 else f"{v:.3f}"


# (module, arguments, result files it writes)
SETS = {
    "cpu": [
        ("bench_startup", [], ["startup"]),
        ("bench_datapath", [], ["datapath_cpu"]),
        ("bench_overhead", [], ["overhead_cpu"]),
        ("bench_gan", [], ["gan_cpu"]),
        ("bench_tracking", [], ["tracking"]),
        ("bench_dvc", [], ["dvc"]),
        ("bench_bootstrap", [], ["bootstrap"]),
        ("bench_export", [], ["export_cpu"]),
        ("bench_files", [], ["files"]),
        ("bench_time_to_accuracy", [], ["time_to_accuracy_cpu"]),
    ],
    "gpu": [
        (
            "bench_overhead",
            ["--device", "cuda", "--batch-sizes", "128,512", "--overrides", "channels_last=true"],
            ["overhead_gpu"],
        ),
        ("bench_datapath", ["--device", "cuda"], ["datapath_gpu"]),
        ("bench_time_to_accuracy", ["--device", "cuda"], ["time_to_accuracy_gpu"]),
    ],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="cpu", choices=sorted(SETS))
    ap.add_argument(
        "--only", default="", help="comma list of benchmark names (startup, datapath, ...)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch threads for every benchmark (default $BENCH_THREADS or {DEFAULT_THREADS})",
    )
    args = ap.parse_args(argv)
    if args.set == "gpu":
        import torch

        if not torch.cuda.is_available():
            print(
                "benchmarks: the GPU set needs a CUDA device; none is available here",
                file=sys.stderr,
            )
            return 2
    env = dict(os.environ)
    if args.threads:
        env["BENCH_THREADS"] = str(args.threads)
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    only = {f"bench_{n}" if not n.startswith("bench_") else n for n in args.only.split(",") if n}
    plan = [b for b in SETS[args.set] if not only or b[0] in only]
    threads(args.threads)  # as the benchmarks will set it, for the machine line
    m = machine()
    print(
        f"benchmarks ({args.set} set) on {machine_line(m)}; load average {m['load_average_1_5_15_start']}",
        flush=True,
    )
    t_all = time.perf_counter()
    timings, failed = {}, []
    for module, extra, _ in plan:
        print(f"\n== {module} {' '.join(extra)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(
            [sys.executable, "-m", f"benchmarks.{module}", *extra], cwd=REPO, env=env
        )
        timings[module] = time.perf_counter() - t0
        print(
            f"== {module}: {timings[module]:.0f} s" + (f", FAILED (status {rc})" if rc else ""),
            flush=True,
        )
        if rc:
            failed.append(module)
    total = time.perf_counter() - t_all

    rows, goal_rows, payload = [], [], {}
    for module, _, names in plan:
        for name in names:
            path = RESULTS_DIR / f"{name}.json"
            if not path.exists() or module in failed:
                rows.append(
                    [
                        name,
                        "not written" if module not in failed else "FAILED",
                        f"{timings.get(module, 0):.0f}",
                    ]
                )
                continue
            data = json.loads(path.read_text())
            payload[name] = {"headline": data.get("headline"), "goals": data.get("goals")}
            head = ", ".join(f"{k} {_num(v)}" for k, v in (data.get("headline") or {}).items())
            rows.append([f"[{name}]({name}.md)", head, f"{timings.get(module, 0):.0f}"])
            for g in data.get("goals") or []:
                verdict = {True: "met", False: "**missed**", None: "not measured"}[g["met"]]
                goal_rows.append([g["name"], g["target"], g["measured"], verdict])
    summary_md = "\n".join(
        [
            f"# Benchmarks, {args.set} set",
            "",
            f"Machine: {machine_line(m)}. Load average (1/5/15 min) at the start: {m['load_average_1_5_15_start']}; "
            f"torch threads: {env.get('BENCH_THREADS', DEFAULT_THREADS)}. Date: {m['date']}.",
            f"Command: `python -m benchmarks.run_all {' '.join(argv if argv is not None else sys.argv[1:])}`; "
            f"total {total:.0f} s ({total / 60:.1f} min).",
            "",
            "## Goals",
            "",
            md_table(["goal", "target", "measured", "verdict"], goal_rows)
            if goal_rows
            else "(none)",
            "",
            "## Benchmarks",
            "",
            md_table(["result", "headline figures", "seconds"], rows),
            "",
        ]
    )
    if not only:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / f"summary_{args.set}.md").write_text(summary_md)
        (RESULTS_DIR / f"summary_{args.set}.json").write_text(
            json.dumps(
                {
                    "set": args.set,
                    "machine": m,
                    "total_s": total,
                    "timings_s": timings,
                    "failed": failed,
                    "threads": env.get("BENCH_THREADS", DEFAULT_THREADS),
                    "results": payload,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
    print("\n" + summary_md)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
