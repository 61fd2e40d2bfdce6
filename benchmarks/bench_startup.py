"""Start-up: seconds from launching `python -m medpipe.train` until a config error is printed, and
until the first training step.

Config error: `python -m medpipe.train optimizer.lr=-1 paths.root_dir=<tmp>` (a value error, found
by validation after Hydra composes the config) and `python -m medpipe.train model=transformer`
(an unknown option, found before composing). Measured from just before the process is started to
the moment its first `medpipe: error:` line arrives on the pipe, and to its exit (status 2).
First step: the default experiment (`make train`: synthetic lesions, seeds' CNN, MLflow in a
temporary sqlite store) with `+callbacks.bench_probe._target_=benchmarks.probes.Probe`, which
writes the wall-clock time of the first `on_train_batch_start` and `on_train_batch_end`. "cold":
the first run in a fresh root, which also generates the synthetic data; "warm": later runs, with the
processed data already there. The training is cut short (1 epoch of 2 batches) after the step.
Reference: `python -c pass` is the interpreter's own start.

    python -m benchmarks.bench_startup
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, Bench, Goal, cli_env, md_table, python, spread


def launch_until_error(args: list[str], cwd: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [python(), *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    first, lines = None, []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line.rstrip())
        if first is None and line.startswith("medpipe: error:"):
            first = time.perf_counter() - t0
    rc = proc.wait()
    return {"error_s": first, "exit_s": time.perf_counter() - t0, "rc": rc, "stderr": lines[:5]}


def launch_until_first_step(root: Path, probe: Path) -> dict:
    args = [
        "-m",
        "medpipe.train",
        f"paths.root_dir={root}",
        "callbacks.progress_bar=plain",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "test_after_fit=false",
        "log_model=false",
        "+callbacks.bench_probe._target_=benchmarks.probes.Probe",
        "allowed_targets=[benchmarks]",  # the probe's module (README: Hostile input)
    ]
    probe.unlink(missing_ok=True)
    t_wall = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [python(), *args],
        cwd=REPO,
        env=cli_env({"BENCH_PROBE_FILE": str(probe)}),
        capture_output=True,
        text=True,
    )
    exit_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(probe.read_text())
    return {
        "fit_start_s": data["fit_start"] - t_wall,
        "first_step_start_s": data["first_step_start"] - t_wall,
        "first_step_end_s": data["first_step_end"] - t_wall,
        "exit_s": exit_s,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="config-error launches per case")
    ap.add_argument("--warm", type=int, default=2, help="warm first-step launches (after 1 cold)")
    args = ap.parse_args(argv)
    bench = Bench(
        "startup",
        "Start-up: time to a config error and to the first training step",
        (__doc__ or "").split("\n\n    python")[0],
    )
    root = Path(tempfile.mkdtemp(prefix="medpipe-bench-startup-"))
    try:
        baseline = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([python(), "-c", "pass"], check=True)
            baseline.append(time.perf_counter() - t0)
        imports = {}
        for mods in ("torch", "torch, lightning.pytorch", "torch, lightning.pytorch, mlflow"):
            t0 = time.perf_counter()
            subprocess.run([python(), "-c", f"import {mods}"], check=True, env=cli_env())
            imports[mods] = time.perf_counter() - t0
            print(f"  import {mods}: {imports[mods]:.2f} s", flush=True)
        cases = {
            "optimizer.lr=-1": ["-m", "medpipe.train", "optimizer.lr=-1", f"paths.root_dir={root}"],
            "model=transformer": [
                "-m",
                "medpipe.train",
                "model=transformer",
                f"paths.root_dir={root}",
            ],
        }
        errors: dict[str, list[dict]] = {k: [] for k in cases}
        for i in range(args.repeats):  # interleaved
            for name, cmd in cases.items():
                r = launch_until_error(cmd, REPO)
                if r["rc"] != 2 or r["error_s"] is None:
                    raise SystemExit(f"{name}: expected a one-line error and status 2, got {r}")
                errors[name].append(r)
                print(
                    f"  {name} run {i + 1}: error after {r['error_s']:.2f} s, exit {r['exit_s']:.2f} s",
                    flush=True,
                )
        probe = root / "probe.json"
        steps = []
        for i in range(1 + args.warm):
            r = launch_until_first_step(root / "train-root", probe)
            r["kind"] = "cold" if i == 0 else "warm"
            steps.append(r)
            print(
                f"  first step ({r['kind']}): starts {r['first_step_start_s']:.2f} s, ends "
                f"{r['first_step_end_s']:.2f} s, exit {r['exit_s']:.2f} s",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    err_summary = {
        name: {
            "error_s": spread([r["error_s"] for r in rs]),
            "exit_s": spread([r["exit_s"] for r in rs]),
            "stderr_example": rs[0]["stderr"],
        }
        for name, rs in errors.items()
    }
    step_summary = {
        kind: {
            k: spread([s[k] for s in steps if s["kind"] == kind])
            for k in ("fit_start_s", "first_step_start_s", "first_step_end_s", "exit_s")
        }
        for kind in ("cold", "warm")
        if any(s["kind"] == kind for s in steps)
    }
    rows = [["`python -c pass` (interpreter start)", f"{spread(baseline)['median']:.2f}", "", "3"]]
    rows += [[f"`python -c 'import {m}'`", f"{s:.2f}", "", "1"] for m, s in imports.items()]
    for name, s in err_summary.items():
        rows.append(
            [
                f"`python -m medpipe.train {name}`: error printed",
                f"{s['error_s']['median']:.2f}",
                f"{s['error_s']['min']:.2f}-{s['error_s']['max']:.2f}",
                s["error_s"]["n"],
            ]
        )
        rows.append(
            [
                f"`python -m medpipe.train {name}`: process exited",
                f"{s['exit_s']['median']:.2f}",
                f"{s['exit_s']['min']:.2f}-{s['exit_s']['max']:.2f}",
                s["exit_s"]["n"],
            ]
        )
    for kind, s in step_summary.items():
        for key, label in (
            ("fit_start_s", "Trainer.fit starts"),
            ("first_step_start_s", "first training step starts"),
            ("first_step_end_s", "first training step done"),
        ):
            rows.append(
                [
                    f"default training ({kind}{', data generated' if kind == 'cold' else ''}): {label}",
                    f"{s[key]['median']:.2f}",
                    f"{s[key]['min']:.2f}-{s[key]['max']:.2f}",
                    s[key]["n"],
                ]
            )
    lr_err = err_summary["optimizer.lr=-1"]["error_s"]["median"]
    goals = [
        Goal(
            "config error printed (`optimizer.lr=-1`)",
            "<= 1.5 s",
            f"{lr_err:.2f} s (median of {args.repeats})",
            lr_err <= 1.5,
        )
    ]
    example = "\n".join(err_summary["optimizer.lr=-1"]["stderr_example"])
    bench.write(
        settings={"repeats": args.repeats, "warm_first_step_runs": args.warm},
        results={
            "python_c_pass_s": spread(baseline),
            "import_s": imports,
            "config_errors": err_summary,
            "first_step": step_summary,
            "first_step_runs": steps,
        },
        sections=[
            (
                "Results",
                md_table(["what", "seconds after launch (median)", "min-max", "n"], rows)
                + f"\n\nThe error as printed:\n\n```\n{example}\n```",
            )
        ],
        goals=goals,
        notes=[
            "The machine is shared with other jobs (load average in the machine table); the "
            "subprocesses run with OMP_NUM_THREADS as set for the benchmarks."
        ],
        headline={
            "config_error_s": lr_err,
            "first_step_warm_s": step_summary.get("warm", step_summary.get("cold"))[
                "first_step_start_s"
            ]["median"],
            "first_step_cold_s": step_summary["cold"]["first_step_start_s"]["median"],
        },
    )


if __name__ == "__main__":
    main()
