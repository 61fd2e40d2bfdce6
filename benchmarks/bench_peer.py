"""Medpipe against its peer on the same job: the default-sized PneumoniaMNIST run (the seeds' CNN,
10 epochs, experiment=pneumonia_cnn's settings) through medpipe and through a template-style
Lightning script (benchmarks/peer_template.py: what a user of lightning-hydra-template would write:
a DataLoader over TensorDatasets, torchmetrics accuracy and AUROC, ModelCheckpoint on val/auroc,
Lightning's MLFlowLogger, test on the best checkpoint), alternating which runs first, in one run.

    medpipe:  python -m medpipe.train experiment=pneumonia_cnn trainer.max_epochs=10 data.path=<npz>
    template: python benchmarks/peer_template.py --npz <npz> --out <folder>

Both in subprocesses with the same OMP_NUM_THREADS, each with a fresh MLflow sqlite store and
output folder; the data is prepared once beforehand (medpipe's processed folder is warm, the
template reads the npz). Wall time: from starting the process to its exit (its test metrics
printed). A timestamp probe (benchmarks.probes.Probe, the same callback in both) splits it into
launch to fit start, the fit (10 epochs with validation), and fit end to exit (testing the best
checkpoint; medpipe also: validation predictions, calibration, operating point, bootstrap CIs,
Grad-CAM, plots, HTML report, logging the model and artifacts). Test AUROC and ACC of each run
show the work is the same. `--defaults` adds one medpipe run per costly default turned off
(one variant per default), to say what each costs in seconds.

    python -m benchmarks.bench_peer [--rounds 3] [--defaults] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    PNEUMONIA_NPZ,
    REPO,
    Bench,
    Goal,
    cli_env,
    md_table,
    python,
    spread,
)
from benchmarks.common import threads as set_threads

EPOCHS = 10
GOAL = 1.0
# medpipe's defaults that cost time, each turned off in one variant (--defaults)
VARIANTS: dict[str, list[str]] = {
    "trainer.deterministic=false": ["trainer.deterministic=false"],
    "evaluation.bootstrap.n=0": ["evaluation.bootstrap.n=0"],
    "evaluation.explain.enabled=false": ["evaluation.explain.enabled=false"],
    "log_model=false": ["log_model=false"],
    "calibration=none": ["calibration=none"],
    "all five off": [
        "trainer.deterministic=false",
        "evaluation.bootstrap.n=0",
        "evaluation.explain.enabled=false",
        "log_model=false",
        "calibration=none",
    ],
}


def _medpipe_cmd(npz: Path, root: Path, out: Path, extra: list[str]) -> list[str]:
    return [
        python(),
        "-m",
        "medpipe.train",
        "experiment=pneumonia_cnn",
        f"trainer.max_epochs={EPOCHS}",
        f"data.path={npz}",
        f"paths.root_dir={root}",
        f"paths.output_dir={out}",
        f"paths.mlflow_dir={out}/mlflow",
        "+callbacks.bench_probe._target_=benchmarks.probes.Probe",
        "allowed_targets=[benchmarks]",  # the probe is outside medpipe's allowed packages
        *extra,
    ]


def _template_cmd(npz: Path, out: Path) -> list[str]:
    return [
        python(),
        str(REPO / "benchmarks" / "peer_template.py"),
        "--npz",
        str(npz),
        "--out",
        str(out),
        "--epochs",
        str(EPOCHS),
    ]


def _run(kind: str, cmd: list[str], out: Path, n_threads: int) -> dict[str, Any]:
    probe = out.parent / f"{out.name}.probe.json"
    env = cli_env(
        {
            "BENCH_PROBE_FILE": str(probe),
            "OMP_NUM_THREADS": str(n_threads),
            "MKL_NUM_THREADS": str(n_threads),
        }
    )
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t_wall = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(
            f"{kind} failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    p = json.loads(probe.read_text())
    rec: dict[str, Any] = {
        "kind": kind,
        "wall_s": wall,
        "cpu_s": cpu,  # the process's CPU time, all its threads: the work done, whatever the load
        "launch_to_fit_s": p["fit_start"] - t_wall,
        "fit_s": p["train_end"] - p["fit_start"],
        "after_fit_s": t_wall + wall - p["train_end"],
        "epoch_s_median": statistics.median(p["epoch_s"]) if p.get("epoch_s") else None,
        "epochs": p.get("epochs"),
    }
    if kind == "template":
        line = next(
            ln for ln in proc.stdout.splitlines()[::-1] if ln.startswith("PEER_TEST_METRICS ")
        )
        m = json.loads(line.split(" ", 1)[1])
        rec.update(
            {
                "test/auroc": m["test/auroc"],
                "test/acc": m["test/acc"],
                "test/acc_at_0.5": m["test/acc"],
                "param_shapes": m["param_shapes"],
            }
        )
    else:
        m = json.loads((out / "metrics.json").read_text())
        rec.update(
            {
                "test/auroc": m["test/auroc"],
                "test/acc": m["test/acc"],  # at the operating point chosen on validation
                "test/acc_at_0.5": m.get("test_at_0.5/acc", m["test/acc"]),
                "metrics_logged": len(m),
            }
        )
    return rec


def _line(r: dict[str, Any]) -> str:
    return (
        f"wall {r['wall_s']:.1f} s (launch {r['launch_to_fit_s']:.1f}, fit {r['fit_s']:.1f}, "
        f"after fit {r['after_fit_s']:.1f}); test AUROC {r['test/auroc']:.4f}, "
        f"ACC {r['test/acc']:.4f} (at 0.5: {r['test/acc_at_0.5']:.4f})"
    )


def _medpipe_settings(root: Path) -> dict[str, Any]:
    """The composed experiment's settings (what the template must match) and its net's shapes."""
    from benchmarks.common import compose

    cfg = compose(root, ["experiment=pneumonia_cnn", f"trainer.max_epochs={EPOCHS}"])
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    net_cfg = OmegaConf.to_container(cfg.model.net, resolve=True)
    net = instantiate(net_cfg, in_channels=1, num_outputs=2, spatial_shape=[28, 28])
    from medpipe.models.optim import milestone_epochs

    return {
        "model": cfg.model.name,
        "net": {k: v for k, v in net_cfg.items() if k != "_target_"},
        "optimizer": cfg.optimizer._target_,
        "lr": float(cfg.optimizer.lr),
        "weight_decay": float(cfg.optimizer.weight_decay),
        "scheduler": cfg.scheduler.name,
        "milestone_epochs": milestone_epochs(list(cfg.scheduler.milestones), EPOCHS),
        "batch_size": int(cfg.data.batch_size),
        "augmentation": cfg.augmentation.get("name", "none"),
        "epochs": int(cfg.trainer.max_epochs),
        "seed": int(cfg.seed),
        "deterministic": bool(cfg.trainer.deterministic),
        "num_sanity_val_steps": int(cfg.trainer.num_sanity_val_steps),
        "normalize": cfg.data.normalize,
        "bootstrap_n": int(cfg.evaluation.bootstrap.n),
        "explain": bool(cfg.evaluation.explain.enabled),
        "calibration": cfg.calibration,
        "log_model": bool(cfg.log_model),
        "param_shapes": {k: list(v.shape) for k, v in net.state_dict().items()},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--defaults",
        action="store_true",
        help="also one medpipe run per costly default turned off, per round",
    )
    ap.add_argument("--threads", type=int, default=None, help="default: $BENCH_THREADS or 1")
    ap.add_argument("--npz", default=str(PNEUMONIA_NPZ))
    ap.add_argument("--name", default="peer")
    args = ap.parse_args(argv)
    n_threads = set_threads(args.threads)
    os.environ["BENCH_THREADS"] = str(n_threads)
    bench = Bench(
        args.name,
        "medpipe vs a template-style Lightning script: PneumoniaMNIST, the seeds' CNN, 10 epochs",
        (__doc__ or "").split("\n\n    python -m")[0],
    )
    npz = Path(args.npz)
    goal_name = (
        "medpipe / template wall-time ratio (template_s / medpipe_s), PneumoniaMNIST CNN 10 epochs"
    )
    if not npz.exists():
        bench.write(
            settings={"npz": str(npz)},
            results={"skipped": "npz not found"},
            sections=[("Results", f"Not measured: {npz} does not exist.")],
            goals=[Goal(goal_name, f">= {GOAL:.1f}", "n/a (no PneumoniaMNIST npz)", None)],
        )
        return
    root = Path(tempfile.mkdtemp(prefix="medpipe-bench-peer-"))
    runs: list[dict[str, Any]] = []
    try:
        settings = _medpipe_settings(root)
        t0 = time.perf_counter()
        prep = subprocess.run(
            [
                python(),
                "-m",
                "medpipe.prepare",
                "data=pneumoniamnist",
                f"data.path={npz}",
                f"paths.root_dir={root}",
            ],
            cwd=REPO,
            env=cli_env({"OMP_NUM_THREADS": str(n_threads)}),
            capture_output=True,
            text=True,
        )
        prepare_s = time.perf_counter() - t0
        if prep.returncode != 0:
            raise SystemExit(f"prepare failed:\n{prep.stdout}\n{prep.stderr}")
        print(f"  prepare: {prepare_s:.1f} s (once, not counted)", flush=True)
        n = 0
        for rnd in range(args.rounds):
            pair = ["medpipe", "template"] if rnd % 2 == 0 else ["template", "medpipe"]
            jobs: list[tuple[str, list[str]]] = [(k, []) for k in pair]
            if args.defaults:
                names = list(VARIANTS)
                shift = rnd % len(names)
                jobs += [(f"medpipe {v}", VARIANTS[v]) for v in names[shift:] + names[:shift]]
            for kind, extra in jobs:
                n += 1
                out = root / f"run{n:02d}"
                cmd = (
                    _template_cmd(npz, out)
                    if kind == "template"
                    else _medpipe_cmd(npz, root, out, extra)
                )
                rec = _run("template" if kind == "template" else "medpipe", cmd, out, n_threads)
                rec.update({"round": rnd, "variant": kind})
                runs.append(rec)
                print(f"  round {rnd + 1} {kind}: {_line(rec)}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    same_arch = all(
        r["param_shapes"] == settings["param_shapes"] for r in runs if r["kind"] == "template"
    )
    for r in runs:
        r.pop("param_shapes", None)
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["variant"]] = r
    ratios = [
        rr["template"]["wall_s"] / rr["medpipe"]["wall_s"]
        for rr in by_round.values()
        if "template" in rr and "medpipe" in rr
    ]
    ratio = spread(ratios)
    cpu_ratio = spread(
        [
            rr["template"]["cpu_s"] / rr["medpipe"]["cpu_s"]
            for rr in by_round.values()
            if "template" in rr and "medpipe" in rr
        ]
    )
    keys = ("wall_s", "cpu_s", "launch_to_fit_s", "fit_s", "after_fit_s", "epoch_s_median")

    def med(variant: str) -> dict[str, float]:
        rs = [r for r in runs if r["variant"] == variant]
        return {
            k: statistics.median(r[k] for r in rs)
            for k in (*keys, "test/auroc", "test/acc", "test/acc_at_0.5")
            if rs and all(r.get(k) is not None for r in rs)
        }

    med_m, med_t = med("medpipe"), med("template")
    rows = [
        [
            r["round"] + 1,
            r["variant"],
            f"{r['wall_s']:.1f}",
            f"{r['cpu_s']:.1f}",
            f"{r['launch_to_fit_s']:.1f}",
            f"{r['fit_s']:.1f}",
            f"{r['epoch_s_median']:.2f}" if r["epoch_s_median"] else "",
            f"{r['after_fit_s']:.1f}",
            f"{r['test/auroc']:.4f}",
            f"{r['test/acc']:.4f}",
            f"{r['test/acc_at_0.5']:.4f}",
        ]
        for r in runs
    ]
    phase_rows = [
        [
            label,
            f"{med_t[k]:.2f}",
            f"{med_m[k]:.2f}",
            f"{med_m[k] - med_t[k]:+.2f}",
        ]
        for label, k in (
            ("launch to fit start (imports, config, data, MLflow run)", "launch_to_fit_s"),
            ("fit: 10 epochs with validation", "fit_s"),
            ("one training epoch (median, incl. its validation)", "epoch_s_median"),
            ("fit end to exit (test on the best checkpoint, evaluation, artifacts)", "after_fit_s"),
            ("**wall, command to exit**", "wall_s"),
            ("CPU time of the process (all threads)", "cpu_s"),
        )
        if k in med_t and k in med_m
    ]
    sections = [
        (
            "Result",
            f"Wall-time ratio template_s / medpipe_s: **{ratio['median']:.3f}** (median of "
            f"{ratio['n']} rounds, {ratio['min']:.3f}-{ratio['max']:.3f}); CPU-time ratio "
            f"{cpu_ratio['median']:.3f} (the work done, less sensitive to the neighbours' load); medpipe "
            f"{med_m['wall_s']:.1f} s, template {med_t['wall_s']:.1f} s (medians). Test AUROC "
            f"medpipe {med_m['test/auroc']:.4f}, template {med_t['test/auroc']:.4f}; test ACC at "
            f"0.5 medpipe {med_m['test/acc_at_0.5']:.4f}, template {med_t['test/acc_at_0.5']:.4f} "
            f"(medpipe's test/acc uses the operating point chosen on validation: "
            f"{med_m['test/acc']:.4f}). Same architecture (parameter shapes): {same_arch}.",
        ),
        (
            "Where the time goes (medians)",
            md_table(["phase", "template s", "medpipe s", "medpipe - template"], phase_rows),
        ),
        (
            "Every run",
            md_table(
                [
                    "round",
                    "run",
                    "wall s",
                    "CPU s",
                    "launch to fit s",
                    "fit s",
                    "epoch s",
                    "after fit s",
                    "test AUROC",
                    "test ACC",
                    "test ACC at 0.5",
                ],
                rows,
            ),
        ),
    ]
    defaults_cost: dict[str, dict[str, float]] = {}
    if args.defaults:
        drows = []
        for v in VARIANTS:
            mv = med(f"medpipe {v}")
            if not mv:
                continue
            # paired within rounds: the default run minus the variant run of the same round
            paired = {
                k: statistics.median(
                    rr["medpipe"][k] - rr[f"medpipe {v}"][k]
                    for rr in by_round.values()
                    if "medpipe" in rr and f"medpipe {v}" in rr
                )
                for k in ("wall_s", "cpu_s", "fit_s", "after_fit_s")
            }
            defaults_cost[v] = {**paired, "variant_wall_s": mv["wall_s"]}
            drows.append(
                [
                    f"`{v}`",
                    f"{mv['wall_s']:.1f}",
                    f"{paired['wall_s']:+.1f}",
                    f"{paired['cpu_s']:+.1f}",
                    f"{paired['fit_s']:+.1f}",
                    f"{paired['after_fit_s']:+.1f}",
                    f"{med_t['wall_s'] / mv['wall_s']:.3f}",
                    f"{mv['test/auroc']:.4f}",
                ]
            )
        sections.insert(
            2,
            (
                "What medpipe's defaults cost (--defaults)",
                md_table(
                    [
                        "medpipe with",
                        "wall s",
                        "default costs, wall s",
                        "CPU s",
                        "of it in the fit s",
                        "of it after the fit s",
                        "template_s / this",
                        "test AUROC",
                    ],
                    drows,
                )
                + "\n\nCost = the default run's time minus the variant's, paired within each round, "
                "median over rounds (positive: the default costs that much). `deterministic` acts "
                "on the fit only; bootstrap, explanations, log_model and calibration act only after "
                "the fit, so their after-fit column is the one to read (their fit column is the "
                "machine's noise). One run per variant per round: on a loaded shared machine the "
                "wall and fit columns swing by tens of seconds; the CPU column is steadier.",
            ),
        )
    goals = [
        Goal(
            goal_name,
            f">= {GOAL:.1f}",
            f"{ratio['median']:.3f} (median of {ratio['n']} rounds, {ratio['min']:.3f}-"
            f"{ratio['max']:.3f}; medpipe {med_m['wall_s']:.1f} s, template {med_t['wall_s']:.1f} s; "
            f"CPU-time ratio {cpu_ratio['median']:.3f})",
            ratio["median"] >= GOAL,
        )
    ]
    notes = [
        "The machine is shared with other jobs (load average in the machine table); the ratio "
        "compares the two runs of each round, alternating which one runs first.",
        f"Both processes run with OMP_NUM_THREADS={n_threads}; each gets a fresh MLflow sqlite "
        "store (both pay for creating its tables) and a fresh output folder.",
        "medpipe logs more than the template: parameters and tags of the whole config, per-epoch "
        "metrics, the best checkpoint's validation metrics, test metrics with bootstrap CIs, "
        "calibration, the operating point, Grad-CAM explanations, plots, predictions, the HTML "
        "report and the model; the template logs its hyperparameters, per-epoch metrics and the "
        "test metrics.",
        f"Data prepared once beforehand in {prepare_s:.1f} s (medpipe.prepare; not in the wall times).",
    ]
    if not same_arch:
        notes.append("WARNING: the template's net does not have medpipe's parameter shapes.")
    bench.write(
        settings={
            "rounds": args.rounds,
            "defaults": args.defaults,
            "threads": n_threads,
            "npz": str(npz),
            "epochs": EPOCHS,
            "medpipe": settings,
            "same_architecture": same_arch,
            "medpipe_command": "python -m medpipe.train experiment=pneumonia_cnn "
            f"trainer.max_epochs={EPOCHS} data.path=<npz> paths.root_dir=<tmp>",
            "template_command": "python benchmarks/peer_template.py --npz <npz> --out <tmp>",
            "prepare_s": prepare_s,
        },
        results={
            "runs": runs,
            "ratio": ratio,
            "cpu_ratio": cpu_ratio,
            "median": {"medpipe": med_m, "template": med_t},
            "defaults_cost": defaults_cost,
        },
        sections=sections,
        goals=goals,
        notes=notes,
        headline={
            "ratio": ratio["median"],
            "cpu_ratio": cpu_ratio["median"],
            "medpipe_s": med_m["wall_s"],
            "template_s": med_t["wall_s"],
            "medpipe_auroc": med_m["test/auroc"],
            "template_auroc": med_t["test/auroc"],
        },
    )
    print(
        f"template_s / medpipe_s = {ratio['median']:.3f} ({ratio['min']:.3f}-{ratio['max']:.3f}); "
        f"medpipe {med_m['wall_s']:.1f} s, template {med_t['wall_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
