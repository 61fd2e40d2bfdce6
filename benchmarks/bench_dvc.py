"""DVC: seconds for `dvc repro` when nothing has changed (every stage skipped).

workspace mode (when `.venv/bin/dvc` and the repository's `dvc.lock` exist): the working tree's
files that git does not ignore (sources, conf/, dvc.yaml, params.yaml, dvc.lock, the committed
metrics and plot tables, DVC's .gitignore files) and the stage outputs recorded in dvc.lock (data,
checkpoints, figures) and the DVC cache are copied into a temporary git repository; `dvc repro` runs there
`--repeats` times. The first run hashes every dependency and output (no DVC state database yet in
the copy: "cold"); the later ones use DVC's state ("warm"). If the lock does not match the working
tree (`dvc status`), `dvc commit --force` records the working tree's state in the copy first.
bootstrap mode (no dvc.lock yet): the pipeline's sources and conf/ only, shrunk as tests/test_dvc.py does it
(256/128/128 synthetic images, 2 epochs, no MLflow model); a first `dvc repro` runs every stage
(timed and reported), its results are committed, then the no-op `dvc repro` is timed the same way.
Each no-op run must report every stage as "didn't change, skipping" and run none.
Reference: `dvc --version` (DVC's own start-up); tests/test_dvc.py asks for under 3 s (best of 3).

    python -m benchmarks.bench_dvc [--mode auto|workspace|bootstrap]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import DEFAULT_THREADS, REPO, Bench, Goal, md_table, spread
from benchmarks.dvc_scratch import PROJECT_FILES, clean_env, copy_files, listed_files, set_value

DVC = Path(sys.executable).parent / "dvc"


def _env() -> dict[str, str]:
    n = str(int(os.environ.get("BENCH_THREADS") or DEFAULT_THREADS))
    return clean_env(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)


def run(repo: Path, *args: str, timeout: float = 900) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        list(args), cwd=repo, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    dt = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{out[-8000:]}")
    return dt, out


def copy_project(dest: Path, with_lock: bool) -> list[str]:
    listed = listed_files(REPO)
    # workspace: every file git does not ignore (the committed metrics, plot tables and the
    # .gitignore files DVC wrote next to its outputs too); bootstrap: the pipeline's sources only.
    wanted = listed if with_lock else list(filter(PROJECT_FILES.match, listed))
    copy_files(REPO, dest, [n for n in wanted if not n.startswith("benchmarks/results/")])
    outs: list[str] = []
    if with_lock:
        shutil.copy2(REPO / "dvc.lock", dest / "dvc.lock")
        lock = yaml.safe_load((REPO / "dvc.lock").read_text()) or {}
        for stage in (lock.get("stages") or {}).values():
            for out in stage.get("outs", []):
                src = REPO / out["path"]
                if src.is_dir():
                    shutil.copytree(src, dest / out["path"], dirs_exist_ok=True, symlinks=True)
                elif src.is_file():
                    (dest / out["path"]).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dest / out["path"])
                outs.append(out["path"])
        cache = REPO / ".dvc" / "cache"  # DVC checks that every output is in its cache
        if cache.is_dir():
            shutil.copytree(cache, dest / ".dvc" / "cache", dirs_exist_ok=True)
    return outs


def git_commit(repo: Path, message: str) -> None:
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", message)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", default="auto", choices=["auto", "workspace", "bootstrap"])
    ap.add_argument("--repeats", type=int, default=4, help="no-op repro runs (the first is cold)")
    args = ap.parse_args(argv)
    has_dvc, has_lock = DVC.exists(), (REPO / "dvc.lock").exists()
    mode = (
        args.mode if args.mode != "auto" else ("workspace" if has_dvc and has_lock else "bootstrap")
    )
    bench = Bench(
        "dvc", "DVC: `dvc repro` with nothing to do", (__doc__ or "").split("\n\n    python")[0]
    )
    notes = [
        f"`.venv/bin/dvc` present: {has_dvc}; repository dvc.lock present: {has_lock}; mode: {mode}.",
    ]
    if not has_dvc:
        bench.write(
            settings={"mode": mode},
            results={"skipped": "no .venv/bin/dvc"},
            sections=[
                ("Results", "Not measured: `.venv/bin/dvc` is not installed (`make install`).")
            ],
            notes=notes,
        )
        return
    if mode == "workspace" and not has_lock:
        raise SystemExit("workspace mode needs the repository's dvc.lock (run `make repro` first)")
    if mode == "bootstrap":
        notes.append(
            (
                "Bootstrap mode was asked for"
                if has_lock
                else "The repository has no dvc.lock yet (the DVC pipeline is being finished)"
            )
            + ": measured on a shrunk copy whose first `dvc repro` ran every stage. With a dvc.lock "
            "and its outputs (`make repro`), the default mode measures the real workspace's pipeline."
        )
    tmp = Path(tempfile.mkdtemp(prefix="medpipe-bench-dvc-"))
    repo = tmp / "repo"
    repo.mkdir()
    results: dict = {"mode": mode}
    try:
        outs = copy_project(repo, with_lock=mode == "workspace")
        results["outputs_copied"] = outs
        if mode == "bootstrap":
            data = repo / "conf" / "data" / "synthetic_lesions.yaml"
            for key, value in (
                ("n_train", 256),
                ("n_val", 128),
                ("n_test", 128),
                ("batch_size", 64),
            ):
                set_value(data, key, str(value))
            set_value(repo / "conf" / "trainer" / "default.yaml", "max_epochs", "2")
            set_value(repo / "conf" / "train.yaml", "log_model", "false")
        run(repo, "git", "init", "-q")
        run(repo, "git", "config", "user.email", "bench@medpipe.invalid")
        run(repo, "git", "config", "user.name", "medpipe bench")
        git_commit(repo, "pipeline")
        version_s = [run(repo, str(DVC), "--version")[0] for _ in range(2)]
        results["dvc_version_s"] = spread(version_s)
        if mode == "bootstrap":
            dt, out = run(repo, str(DVC), "repro")
            ran = sorted(set(re.findall(r"Running stage '([^']+)'", out)))
            results["first_repro"] = {"seconds": dt, "stages_run": ran}
            print(f"  first dvc repro (every stage): {dt:.1f} s, ran {', '.join(ran)}", flush=True)
            git_commit(repo, "results of dvc repro")
        if mode == "workspace":
            dt, out = run(repo, str(DVC), "status", "--json")
            results["status_before"] = out.strip()
            results["status_s"] = dt
            if out.strip() not in ("{}", ""):
                # Bring the copy's lock up to date without re-running the stages (that would
                # train again): record the working tree's state as DVC would after a repro.
                dt, _ = run(repo, str(DVC), "commit", "--force")
                results["commit_s"] = dt
                notes.append(
                    "The repository's dvc.lock does not match its working tree (`dvc status` in the "
                    f"copy: {out.strip()[:600]}). In the copy, `dvc commit --force` ({dt:.1f} s) "
                    "recorded the working tree's state instead of re-running those stages; the "
                    "first no-op run after it is labelled cold (DVC's state partly filled by the commit)."
                )
        noop = []
        for i in range(args.repeats):
            dt, out = run(repo, str(DVC), "repro")
            ran = set(re.findall(r"Running stage '([^']+)'", out))
            skipped = set(re.findall(r"Stage '([^']+)' didn't change, skipping", out))
            kind = "stale" if ran else ("cold" if i == 0 else "warm")
            noop.append(
                {"seconds": dt, "ran": sorted(ran), "skipped": sorted(skipped), "kind": kind}
            )
            print(
                f"  no-op dvc repro {i + 1} ({noop[-1]['kind']}): {dt:.2f} s, skipped {len(skipped)}, ran {len(ran)}",
                flush=True,
            )
        results["noop"] = noop
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")

    warm = [r["seconds"] for r in noop if r["kind"] == "warm"]
    rows = [["`dvc --version`", f"{results['dvc_version_s']['median']:.2f}", "2"]]
    if "first_repro" in results:
        fr = results["first_repro"]
        rows.append(
            [f"first `dvc repro` (runs {', '.join(fr['stages_run'])})", f"{fr['seconds']:.1f}", "1"]
        )
    for r in noop:
        if r["kind"] == "stale":
            rows.append(
                [
                    f"`dvc repro` re-running stale stages ({', '.join(r['ran'])})",
                    f"{r['seconds']:.1f}",
                    "1",
                ]
            )
        elif r["kind"] == "cold":
            label = (
                "first, after `dvc commit`" if "commit_s" in results else "cold (no DVC state yet)"
            )
            rows.append([f"no-op `dvc repro`, {label}", f"{r['seconds']:.2f}", "1"])
    if warm:
        s = spread(warm)
        rows.append(
            [
                f"**no-op `dvc repro`, warm** (min {s['min']:.2f}, max {s['max']:.2f})",
                f"**{s['median']:.2f}**",
                len(warm),
            ]
        )
    stages = noop[-1]["skipped"]
    print(f"dvc status before the first repro: {results.get('status_before', 'n/a')[:2000]}")
    best = min((r["seconds"] for r in noop if r["kind"] != "stale"), default=None)
    bench.write(
        settings={"mode": mode, "repeats": args.repeats},
        results=results,
        sections=[
            (
                "Results",
                md_table(["what", "seconds (median)", "n"], rows)
                + f"\n\nStages skipped in the no-op runs: {', '.join(stages) or 'none'}.",
            )
        ],
        goals=[
            Goal(
                "no-op `dvc repro` (tests/test_dvc.py's bound, best of runs)",
                "< 3 s",
                "n/a" if best is None else f"{best:.2f} s",
                None if best is None else best < 3.0,
            )
        ],
        notes=notes,
        headline={
            "mode": mode,
            "noop_warm_s": spread(warm)["median"] if warm else None,
            "lock_matched_worktree": "commit_s" not in results,
        },
    )


if __name__ == "__main__":
    main()
