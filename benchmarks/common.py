"""Shared by the benchmarks: the machine description, result files, timing and config helpers.

Every benchmark writes `benchmarks/results/<name>.json` (machine, settings, raw timings, summary,
goals) and `benchmarks/results/<name>.md` (the same as tables).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
PNEUMONIA_NPZ = (
    REPO.parent
    / "shared"
    / "data"
    / "medmnist"
    / "pneumoniamnist"
    / "pneumoniamnist_reconstructed.npz"
)
# The MedMNIST v2 paper (Yang et al., 2023, Table 3): ResNet-18 (28) on PneumoniaMNIST.
PAPER_RESNET18_28 = {"test/auroc": 0.944, "test/acc": 0.854}

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
for _name in ("lightning.pytorch", "pytorch_lightning", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)  # in-process runs: no INFO banners

# torch threads for every measurement (in-process: torch.set_num_threads; subprocesses:
# OMP_NUM_THREADS). 1 by default: the 2 cores of the project machine are shared with other jobs,
# and 2 OpenMP threads that wait on a descheduled sibling made timings swing 5-10x there (the
# seeds' CNN trained at 100-190 samples/s with 2 threads and at ~900 with 1 under the same load).
# On a quiet machine: `make bench ARGS='--threads 2'` or BENCH_THREADS=2.
DEFAULT_THREADS = 1


def threads(requested: int | None = None) -> int:
    """The thread count to use (argument > $BENCH_THREADS > DEFAULT_THREADS); sets torch's."""
    import torch

    n = int(requested or os.environ.get("BENCH_THREADS") or DEFAULT_THREADS)
    torch.set_num_threads(n)
    return n


# -- the machine -----------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in (
        "torch",
        "lightning",
        "torchmetrics",
        "mlflow",
        "albumentations",
        "hydra-core",
        "dvc",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """CPU model and cores, torch (threads, CUDA, GPU), package versions, load and git state."""
    import torch

    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {
            "name": torch.cuda.get_device_name(0),
            "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
        }
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "versions": _versions(),
        "load_average_1_5_15_start": load_average(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
    }


def machine_line(m: dict[str, Any]) -> str:
    gpu = m.get("gpu")
    gpu_text = f"{gpu['name']} (CUDA {gpu['cuda']})" if gpu else "no GPU"
    return (
        f"{m['cpu_model']}, {m['cpus_usable']} cores usable, torch {m['versions']['torch']} "
        f"({m['torch_threads']} threads), {gpu_text}"
    )


# -- statistics and timing -------------------------------------------------------------------------
def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and the values themselves (rounded for the result files)."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": [round(v, 6) for v in vals],
    }


def now() -> float:
    return time.perf_counter()


def sync(device: Any = None) -> None:
    """Wait for queued GPU work (a no-op on CPU) so that a timestamp means what it says."""
    import torch

    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


# -- configs and subprocesses ----------------------------------------------------------------------
def compose(root: Path, overrides: Sequence[str], config_name: str = "train"):
    """Compose conf/<config_name>.yaml as `python -m medpipe.<config_name>` would, every path
    under `root` (the same as tests/conftest.py `compose_config`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    import medpipe  # noqa: F401  (registers the config resolvers)
    from medpipe.paths import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(
            config_name,
            overrides=[f"paths.root_dir={root}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "out")
        del cfg["hydra"]
        if "allowed_targets" in cfg:  # the benchmarks' own probes (benchmarks.probes.TrainTimer)
            cfg.allowed_targets = [*cfg.allowed_targets, "benchmarks"]
    from medpipe.targets import set_allowed

    set_allowed(list(cfg.get("allowed_targets") or []))
    return cfg


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a `python -m medpipe.*` subprocess: the repository root importable
    (for the probe callbacks in benchmarks/), no inherited tracking server or DVC/medpipe roots."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "MLFLOW_TRACKING_URI" and not k.startswith(("MEDPIPE_", "DVC_"))
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    n = str(int(os.environ.get("BENCH_THREADS") or DEFAULT_THREADS))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = n  # torch's intra-op threads
    env.update(extra or {})
    return env


def python() -> str:
    return sys.executable


# -- results ---------------------------------------------------------------------------------------
def _portable(text: str) -> str:
    """Results name files relative to the project (no machine-specific absolute paths)."""
    return text.replace(f"{REPO}/", "").replace(f"{REPO.parent}/", "../")


def command_line() -> str:
    """How this benchmark was started, as `python -m benchmarks.<name> args`."""
    script = Path(sys.argv[0])
    if script.parent == REPO / "benchmarks":
        return " ".join(["python -m", f"benchmarks.{script.stem}", *sys.argv[1:]])
    return " ".join([Path(sys.executable).name, *sys.argv])


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


@dataclass
class Goal:
    name: str
    target: str
    measured: str
    met: bool | None  # None: not measured here (no GPU, missing file, ...)

    def row(self) -> list[str]:
        verdict = {True: "met", False: "**missed**", None: "not measured"}[self.met]
        return [self.name, self.target, self.measured, verdict]


@dataclass
class Bench:
    """One benchmark's result files. Create it first (it records the machine and the load)."""

    name: str
    title: str
    description: str
    machine: dict[str, Any] = field(default_factory=machine)
    started: float = field(default_factory=time.perf_counter)

    def write(
        self,
        settings: dict[str, Any],
        results: dict[str, Any],
        sections: Sequence[tuple[str, str]],
        goals: Sequence[Goal] = (),
        notes: Sequence[str] = (),
        headline: dict[str, Any] | None = None,
    ) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        self.machine["load_average_1_5_15_end"] = load_average()
        elapsed = time.perf_counter() - self.started
        payload = {
            "benchmark": self.name,
            "title": self.title,
            "description": self.description,
            "command": command_line(),
            "elapsed_s": round(elapsed, 1),
            "machine": self.machine,
            "settings": settings,
            "results": results,
            "headline": headline or {},
            "goals": [g.__dict__ for g in goals],
            "notes": list(notes),
        }
        json_path = RESULTS_DIR / f"{self.name}.json"
        json_path.write_text(_portable(json.dumps(payload, indent=2, default=str) + "\n"))
        m = self.machine
        gpu = m.get("gpu")
        md = [
            f"# {self.title}",
            "",
            self.description,
            "",
            "## Machine",
            "",
            md_table(
                ["", ""],
                [
                    ["CPU", m["cpu_model"]],
                    ["cores (usable / total)", f"{m['cpus_usable']} / {m['cpu_count']}"],
                    ["torch", f"{m['versions']['torch']} ({m['torch_threads']} threads)"],
                    [
                        "GPU",
                        f"{gpu['name']}, {gpu['memory_gib']} GiB, CUDA {gpu['cuda']}"
                        if gpu
                        else "none",
                    ],
                    [
                        "load average (1/5/15 min) at start / end",
                        f"{m['load_average_1_5_15_start']} / {m['load_average_1_5_15_end']}",
                    ],
                    [
                        "lightning / torchmetrics / mlflow",
                        f"{m['versions']['lightning']} / {m['versions']['torchmetrics']} / {m['versions']['mlflow']}",
                    ],
                    [
                        "albumentations / dvc",
                        f"{m['versions']['albumentations']} / {m['versions']['dvc']}",
                    ],
                    [
                        "git",
                        f"{(m['git_commit'] or 'unknown')[:10]}{' (dirty)' if m['git_dirty'] else ''}",
                    ],
                    ["date", m["date"]],
                    ["command", f"`{payload['command']}` ({elapsed:.0f} s)"],
                ],
            ),
            "",
        ]
        for heading, body in sections:
            md += [f"## {heading}", "", body.rstrip(), ""]
        if goals:
            md += [
                "## Goals",
                "",
                md_table(["goal", "target", "measured", "verdict"], [g.row() for g in goals]),
                "",
            ]
        if notes:
            md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
        (RESULTS_DIR / f"{self.name}.md").write_text(_portable("\n".join(md)))
        print(f"wrote {json_path.relative_to(REPO)} and {self.name}.md")
        return json_path


def checksum(module) -> float:
    """The sum of a module's parameters: the same initial weights in both loops of a comparison."""
    return float(sum(p.detach().double().sum() for p in module.parameters()))


def run_medpipe(cfg) -> dict[str, Any]:
    """Train `cfg` through medpipe's own path; the TrainTimer probe's record of that training."""
    from benchmarks.probes import TrainTimer
    from medpipe.pipeline import train

    TrainTimer.records.clear()
    train(cfg)
    (rec,) = TrainTimer.records
    return rec
