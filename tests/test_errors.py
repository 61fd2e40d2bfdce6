"""Bad input exits non-zero with one clear line naming the file or key, no traceback, and never
leaves an MLflow run RUNNING."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SMALL_SYNTHETIC, run_cli, write_medmnist_npz


def _statuses(root: Path) -> list[str]:
    db = root / "logs" / "mlflow" / "mlflow.db"
    if not db.exists():
        return []
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exps = [e.experiment_id for e in client.search_experiments()]
    return [r.info.status for r in client.search_runs(exps)] if exps else []


def _bad_files(tmp: Path) -> dict[str, Path]:
    good = write_medmnist_npz(tmp / "good.npz")
    arrays = dict(np.load(good))
    np.savez(tmp / "nokeys.npz", **{k: v for k, v in arrays.items() if not k.startswith("test")})
    np.savez(tmp / "mismatch.npz", **{**arrays, "train_labels": arrays["train_labels"][:-2]})
    (tmp / "corrupt.npz").write_bytes(good.read_bytes()[:500])
    return {
        "nokeys": tmp / "nokeys.npz",
        "mismatch": tmp / "mismatch.npz",
        "corrupt": tmp / "corrupt.npz",
    }


CASES = {
    "missing file": (
        ["data=pneumoniamnist", "data.path=/no/such/file.npz"],
        "data.path: file not found: /no/such/file.npz",
    ),
    "npz without keys": (
        ["data=pneumoniamnist", "data.path={nokeys}"],
        "nokeys.npz: missing key(s) test_images, test_labels",
    ),
    "count mismatch": (
        ["data=pneumoniamnist", "data.path={mismatch}"],
        "mismatch.npz: train_images has 40 images but train_labels has 38 labels",
    ),
    "truncated npz": (
        ["data=pneumoniamnist", "data.path={corrupt}"],
        "corrupt.npz: not an .npz archive",
    ),
    "unknown choice": (["model=transformer"], "model=transformer: no such option in"),
    "negative lr": (
        ["optimizer.lr=-0.001"],
        "optimizer.lr: Input should be greater than 0 (got -0.001)",
    ),
    "wrong type": (
        ["trainer.max_epochs=ten"],
        "trainer.max_epochs: Input should be a valid integer",
    ),
    "unknown metric": (
        ["monitor=val/dice"],
        "monitor: 'val/dice' is not a metric of task kind classification",
    ),
    "argument without an on-device version": (
        ["augmentation=light", "data.loader=memory", "+augmentation.train.1.fit_output=true"],
        "data.loader: 'memory' runs augmentation on the device, which has no "
        "Affine.fit_output=True; use data.loader=workers",
    ),
    "class weights": (
        [*SMALL_SYNTHETIC, "model.class_weights=[1,2,3]"],
        "model.class_weights: 3 weights for the 2 classes of synthetic_lesions",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_line_and_no_running_run(case, tmp_path):
    files = _bad_files(tmp_path)
    args, expected = CASES[case]
    args = [a.format(**files) for a in args]
    out = run_cli("train", *args, f"paths.root_dir={tmp_path}", timeout=180)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("medpipe: error:")]
    assert len(errors) == 1, out.stderr
    assert expected in errors[0], errors[0]
    assert "RUNNING" not in _statuses(tmp_path)
    assert not (tmp_path / "data" / "processed").exists() or not any(
        p.name.startswith("pneumoniamnist") for p in (tmp_path / "data" / "processed").iterdir()
    )


def test_config_error_arrives_before_torch_is_imported(tmp_path):
    probe = (
        "import sys, runpy; sys.argv=['medpipe.train','optimizer.lr=-1','paths.root_dir="
        + str(tmp_path)
        + "'];\n"
        "try:\n    runpy.run_module('medpipe.train', run_name='__main__')\n"
        "except SystemExit as e:\n    print('torch' in sys.modules, 'mlflow' in sys.modules, e.code)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "False False 2", out.stdout + out.stderr


def test_evaluate_with_a_missing_checkpoint_names_it(tmp_path):
    out = run_cli("evaluate", "ckpt_path=/no/such.ckpt", f"paths.root_dir={tmp_path}", timeout=120)
    assert out.returncode == 2 and "ckpt_path: file not found: /no/such.ckpt" in out.stderr


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_failure_during_training_marks_the_run_failed(tmp_path):
    out = run_cli(
        "train",
        *SMALL_SYNTHETIC,
        f"paths.root_dir={tmp_path}",
        "trainer.max_epochs=2",
        "callbacks.model_checkpoint.dirpath=/proc/medpipe-cannot-write-here",
        timeout=300,
    )
    assert out.returncode != 0
    assert _statuses(tmp_path) == ["FAILED"]


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_ctrl_c_during_training_leaves_no_running_run(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "medpipe.train",
        *SMALL_SYNTHETIC,
        "data.n_train=2000",
        f"paths.root_dir={tmp_path}",
        "trainer.max_epochs=50",
        "callbacks.progress_bar=plain",
    ]
    # A shell starting a job in the background (`cmd &`, nohup) hands it SIGINT ignored, and
    # Python then keeps ignoring it; the user's terminal Ctrl-C reaches a foreground process.
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in proc.stdout:
            if line.startswith("epoch 1/50"):
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    tail = (proc.stdout.read() if proc.stdout else "")[-2000:]
    assert proc.returncode != 0, tail
    statuses = _statuses(tmp_path)
    assert len(statuses) == 1 and statuses[0] in ("KILLED", "FAILED")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ctrl_c_lost_in_a_finaliser_still_stops_training():
    """A KeyboardInterrupt raised inside `__del__` is printed as 'Exception ignored' and lost;
    medpipe's CtrlC callback remembers the signal and stops at the next batch boundary."""
    import os

    import lightning.pytorch as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from medpipe.callbacks import CtrlC

    class SignalInFinaliser:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, inside __del__

    class PressOnce(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 3:
                SignalInFinaliser()  # dropped at once: __del__ runs

    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    guard = CtrlC()
    trainer = L.Trainer(
        max_epochs=3,
        limit_train_batches=20,
        limit_val_batches=2,
        callbacks=[guard, PressOnce()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    try:
        with pytest.raises(SystemExit) as stop:  # Lightning's graceful shutdown on Ctrl-C
            trainer.fit(BoringModel())
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stop.value.code == 1 and guard.pressed
    assert trainer.interrupted and trainer.global_step == 4  # the very next batch boundary
