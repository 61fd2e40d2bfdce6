"""Shared fixtures: compose configs like the entry points do, run the CLI, find the real data."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import medpipe  # noqa: F401  (registers the config resolvers)
from medpipe.paths import conf_dir

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PNEUMONIA_NPZ = SHARED_DATA / "medmnist" / "pneumoniamnist" / "pneumoniamnist_reconstructed.npz"
needs_shared_data = pytest.mark.skipif(
    not PNEUMONIA_NPZ.exists(), reason=f"{SHARED_DATA} not present"
)

# Small synthetic data: the real generator, sized for fast tests.
# one epoch on a few hundred synthetic images, nothing but the run itself: sweeps and tracking
CHROMIUM = Path("/usr/bin/chromium")  # Debian's, installed by .ci/run; Playwright drives it
# As root on a closed network: no sandbox, no GPU, no background connections to Google.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TINY = [
    "trainer.max_epochs=1",
    "data.n_train=256",
    "data.n_val=128",
    "data.n_test=128",
    "callbacks.progress_bar=none",
    "log_model=false",
    "evaluation.explain.enabled=false",  # explanations: tests/test_explain.py, test_trust.py
]
SMALL_SYNTHETIC = ["data.n_train=256", "data.n_val=128", "data.n_test=128", "data.batch_size=64"]


@pytest.fixture(autouse=True)
def _isolated_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")


def compose_config(root: Path, overrides: list[str], config_name: str = "train") -> DictConfig:
    """Compose as `python -m medpipe.<config_name>` would, with every path under `root`."""
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose(
            config_name, overrides=[f"paths.root_dir={root}", *overrides], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(root / "out")
        del cfg["hydra"]
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    def make(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_config(tmp_path, list(overrides), config_name)

    return make


def run_cli(
    module: str, *args: str, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m medpipe.<module> args` from the repository root, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env.update({"NO_ALBUMENTATIONS_UPDATE": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", f"medpipe.{module}", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def evaluate_cli(ckpt: Path, root: Path) -> dict:
    """`python -m medpipe.evaluate` on a checkpoint (store and data under `root`); its metrics."""
    import json

    out_dir = root / "eval"
    out = run_cli(
        "evaluate", f"ckpt_path={ckpt}", f"output_dir={out_dir}", f"paths.root_dir={root}"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads((out_dir / "metrics.json").read_text())


def write_medmnist_npz(
    path: Path, n: int = 40, shape=(28, 28), labels="n1", n_classes: int = 2, seed: int = 0
) -> Path:
    """A small MedMNIST-layout npz with learnable labels (class shifts the mean intensity)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "val", "test"):
        if labels == "multilabel":
            y = (rng.random((n, n_classes)) < 0.4).astype(np.uint8)
            level = y.sum(1)
        else:
            y = rng.integers(0, n_classes, n).astype(np.uint8)
            level = y
        mean = 60 + 40 * level.reshape(-1, *([1] * len(shape)))
        x = np.clip(rng.normal(mean, 20, (n, *shape)), 0, 255).astype(np.uint8)
        arrays[f"{split}_images"] = x
        arrays[f"{split}_labels"] = y[:, None] if labels == "n1" else y
    np.savez(path, **arrays)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for test servers)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(root: Path, port: int, artifacts: str = "artifacts") -> subprocess.Popen:
    """`mlflow server` on `port` with its sqlite store in `root` (restartable on the same port and
    store), its log appended to root/server.log; returns once it answers /health."""
    log = root / "server.log"
    with log.open("a") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{root / 'server.db'}",
                "--artifacts-destination",
                str(root / artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its uvicorn workers end with it
        )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", proc, 120, log, "mlflow server")
    except BaseException:
        stop(proc, 3)
        raise
    return proc


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on a free loopback port with a sqlite store in tmp_path; yields its URL."""
    port = free_port()
    proc = start_mlflow_server(tmp_path, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc, 3)


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float, log: Path, what: str) -> float:
    """Poll `url` until it answers 200 (seconds taken); fail with the server's log if the process
    ends or `timeout` passes first."""
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() - started > timeout:
            pytest.fail(f"{what} did not answer:\n" + log.read_text()[-3000:])
        time.sleep(0.2)


def stop(proc: subprocess.Popen, grace: float) -> None:
    """Ctrl-C to the server's process group (uvicorn shuts down its workers), then kill."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# -- your own files: images, DICOM and NIfTI written from arrays ---------------------------------
def write_png(path: Path, image: np.ndarray) -> Path:
    """(H, W) or (H, W, 3) uint8 as a PNG."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def write_dicom(
    path: Path, image: np.ndarray, patient_id: str = "anon", photometric: str = "MONOCHROME2"
) -> Path:
    """A (H, W) or (F, H, W) uint8 or int16 image as an uncompressed DICOM (Secondary Capture)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        SecondaryCaptureImageStorage,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.PatientID, ds.PatientName, ds.Modality = patient_id, "Test^Patient", "OT"
    bits = 8 if image.dtype == np.uint8 else 16
    ds.set_pixel_data(image, photometric, bits)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def pydicom_file(name: str) -> Path:
    """A DICOM file that ships inside pydicom (CT_small.dcm, MR_small.dcm, MR_truncated.dcm, ...)."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


def find_checkpoint(root: Path) -> Path:
    """The newest best.ckpt written under `root`."""
    return max(root.rglob("best.ckpt"), key=lambda p: p.stat().st_mtime)


# -- a model served over REST (mlflow models serve) --------------------------------------------
SERVER_START_S = 120  # a cold start on these machines takes about 5-10 s


@contextlib.contextmanager
def serving(model_uri: str, tracking_uri: str, folder: Path) -> Iterator[tuple[str, float]]:
    """`mlflow models serve -m model_uri --env-manager local` on a free loopback port; yields its
    address and the seconds it took to answer /ping. The server is stopped however the block
    ends."""
    port = free_port()
    bin_dir = Path(sys.executable).parent  # the server execs `uvicorn` from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log_path = folder / f"serve-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                str(bin_dir / "mlflow"),
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the uvicorn it starts ends with it
        )
        url = f"http://127.0.0.1:{port}"
        try:
            what = f"mlflow models serve -m {model_uri}"
            waited = wait_until_up(f"{url}/ping", proc, SERVER_START_S, log_path, what)
            yield url, waited
        finally:
            stop(proc, 10)


def invoke(url: str, x: np.ndarray) -> np.ndarray:
    """POST /invocations {"inputs": samples as nested lists}: the served model's answer."""
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps({"inputs": x.tolist()}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        assert r.status == 200
        answer = json.loads(r.read())
    return np.asarray(answer["predictions"], dtype=np.float64)


@pytest.fixture
def one_seeded_thread():
    """One torch thread (tiny nets run fastest so, and a busy machine slows them least) and a
    fixed seed; the thread count is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
