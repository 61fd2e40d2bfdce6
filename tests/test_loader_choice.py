"""`data.loader=auto` keeps the data on the training device only when its arrays fit in
`data.memory_share` of the device's free memory, else reads them memory-mapped through a DataLoader;
`data.loader=memory` on data that does not fit is one clear error before anything is read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from medpipe.data.loader_choice import (
    DeviceMemory,
    array_bytes,
    choose_loader,
    format_bytes,
    pool_problem,
    training_memory,
)
from medpipe.errors import ConfigError

from conftest import TINY, run_cli

GB = 10**9
HOST = DeviceMemory(20 * GB)  # 20 GB of free host RAM


# -- the decision ----------------------------------------------------------------------------------
def test_auto_keeps_data_in_memory_when_it_fits_in_the_share():
    choice = choose_loader("auto", int(1.2 * GB), HOST, share=0.5)
    assert choice.loader == "memory"
    assert (
        choice.line()
        == "data loader: memory (1.2 GB of arrays fit in 50% of 20.0 GB free host RAM)"
    )


def test_auto_memory_maps_data_that_exceeds_the_share():
    choice = choose_loader("auto", int(10.5 * GB), HOST, share=0.5)  # 10.5 > 50% of 20
    assert choice.loader == "workers"
    assert choice.line() == (
        "data loader: workers, memory-mapped (10.5 GB of arrays exceed 50% of 20.0 GB free host RAM)"
    )
    assert choose_loader("auto", int(10.5 * GB), HOST, share=0.6).loader == "memory"


def test_per_sample_augmentation_still_forces_workers_whatever_fits():
    choice = choose_loader(
        "auto", 1000, HOST, share=1.0, per_sample_ops=["GaussNoise", "GaussNoise"]
    )
    assert (choice.loader, choice.reason) == (
        "workers",
        "augmentation has per-sample ops: GaussNoise",
    )


def test_workers_is_taken_as_asked():
    assert choose_loader("workers", 1000, DeviceMemory(None), 0.5).loader == "workers"


def test_memory_that_does_not_fit_is_one_line_naming_the_key_the_sizes_and_the_ways_out():
    assert choose_loader("memory", GB, HOST, 0.5).reason.startswith("data.loader=memory; 1.0 GB")
    with pytest.raises(ConfigError) as err:
        choose_loader("memory", int(30.5 * GB), HOST, 0.5)
    (line,) = err.value.lines()
    assert line == (
        "data.loader: 'memory' needs 30.5 GB of arrays on the training device, more than 50% of "
        "20.0 GB free host RAM (data.memory_share=0.5); use data.loader=auto or workers "
        "(memory-mapped), or raise data.memory_share"
    )


def test_every_process_of_a_cpu_ddp_run_holds_its_own_copy():
    two = DeviceMemory(20 * GB, copies=2)
    choice = choose_loader("auto", 6 * GB, two, 0.5)
    assert (
        choice.loader == "workers" and "12.0 GB of arrays (2 processes x 6.0 GB)" in choice.reason
    )
    assert choose_loader("auto", 6 * GB, DeviceMemory(20 * GB), 0.5).loader == "memory"


def test_a_gpu_is_judged_by_its_own_free_memory():
    gpu = DeviceMemory(8 * GB, "free memory of cuda:0")
    choice = choose_loader("auto", 5 * GB, gpu, 0.5)
    assert choice.line().endswith("(5.0 GB of arrays exceed 50% of 8.0 GB free memory of cuda:0)")
    unknown = choose_loader("auto", 5 * GB, DeviceMemory(None, "free memory of cuda:0"), 0.5)
    assert unknown.loader == "memory" and "unknown" in unknown.reason


def test_cross_validation_needs_the_pool_and_a_folds_copy_in_host_ram():
    assert pool_problem(4 * GB, HOST, 0.5) is None  # 2 x 4 <= 10
    problem = pool_problem(6 * GB, HOST, 0.5)
    assert problem is not None and problem.startswith("cv.folds: ")
    assert "(2 x 6.0 GB)" in problem and "data.memory_share" in problem and "cv.folds=0" in problem


def test_sizes_read_well():
    assert [format_bytes(n) for n in (512, 2048, 3.5e6, 1.23e9, 2e12)] == [
        "512 B",
        "2.0 kB",
        "3.5 MB",
        "1.2 GB",
        "2.0 TB",
    ]


# -- the inputs: array sizes from .npy headers, free memory of the training device -----------------
def test_array_sizes_come_from_the_headers_without_reading_the_arrays(tmp_path):
    arrays = {
        "train_x": np.zeros((10, 1, 8, 8), np.uint8),
        "train_y": np.zeros(10, np.int64),
        "val_x": np.zeros((4, 1, 8, 8), np.uint8),
        "val_y": np.zeros(4, np.int64),
        "test_x": np.zeros((4, 1, 8, 8), np.uint8),
        "test_y": np.zeros(4, np.int64),
        "test_lengths": np.zeros(4, np.int64),
        "test_mask": np.zeros((4, 8, 8), np.uint8),  # not for the device
    }
    for name, a in arrays.items():
        np.save(tmp_path / f"{name}.npy", a)
    device = sum(a.nbytes for k, a in arrays.items() if not k.endswith("mask"))
    assert array_bytes(tmp_path) == device
    assert array_bytes(tmp_path, ["test"]) == 4 * 64 + 32 + 32
    # a 64 GB array (a sparse file: a header and a hole) is measured, not read
    path = tmp_path / "train_x.npy"
    with open(path, "wb") as f:
        header = {"descr": "|u1", "fortran_order": False, "shape": (64 * GB,)}
        np.lib.format.write_array_header_1_0(f, header)
        os.ftruncate(f.fileno(), f.tell() + 64 * GB)
    assert array_bytes(tmp_path, ["train"], ["x"]) == 64 * GB
    assert os.stat(path).st_blocks * 512 < 10**8  # nothing of it was written or read


def test_training_memory_is_host_ram_for_cpus_shared_by_ddp_processes():
    import psutil

    cpu = training_memory({"accelerator": "cpu", "devices": 1})
    assert cpu.where == "free host RAM" and cpu.copies == 1
    assert 0 < cpu.free <= psutil.virtual_memory().total
    assert training_memory({"accelerator": "cpu", "strategy": "ddp", "devices": 2}).copies == 2


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the fallback without CUDA"
)
def test_a_gpu_config_without_cuda_falls_back_to_host_ram():
    assert training_memory({"accelerator": "gpu", "devices": 1}).where == "free host RAM"


def test_a_multi_gpu_run_is_judged_by_its_least_free_gpu_without_opening_cuda_contexts(
    monkeypatch,
):
    import torch

    import medpipe.data.loader_choice as loader_choice

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(loader_choice, "_smi_free", lambda i: [9, 5, 7, 1][i] * GB)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: pytest.fail("a CUDA context"))
    mem = training_memory({"accelerator": "gpu", "devices": [0, 1, 2], "strategy": "ddp"})
    assert (mem.free, mem.where) == (5 * GB, "free memory of cuda:1 (the least free of 3 GPUs)")
    assert training_memory({"accelerator": "gpu", "devices": -1}).free == 1 * GB
    assert training_memory({"accelerator": "gpu", "devices": "0,2"}).free == 7 * GB
    # one GPU: torch asks it (the context it opens is the run's own)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (3 * GB, 80 * GB))
    one = training_memory({"accelerator": "gpu", "devices": 1})
    assert (one.free, one.where, one.copies) == (3 * GB, "free memory of cuda:0", 1)


def test_data_memory_share_is_checked(make_cfg):
    from medpipe.config import validate

    for bad in ("0", "1.5"):
        with pytest.raises(ConfigError, match=r"data.memory_share: Input should be"):
            validate(make_cfg(f"data.memory_share={bad}"))
    assert validate(make_cfg("data.memory_share=1e-9"))["data"]["memory_share"] == 1e-9


def test_memory_that_does_not_fit_fails_before_any_array_is_read(tmp_path, monkeypatch):
    import medpipe.data.datamodule as datamodule
    from medpipe.building import build_datamodule

    for split in ("train", "val", "test"):
        np.save(tmp_path / f"{split}_x.npy", np.zeros((8, 1, 4, 4), np.uint8))
        np.save(tmp_path / f"{split}_y.npy", np.zeros(8, np.int64))

    def no_reading(*args, **kwargs):
        raise AssertionError("an array was read")

    monkeypatch.setattr(datamodule, "read_split", no_reading)
    monkeypatch.setattr(datamodule, "pooled_split", no_reading)
    monkeypatch.setattr(datamodule, "read_meta", no_reading)
    c = {
        "data": {"kind": "image", "batch_size": 4, "loader": "memory", "memory_share": 1e-9},
        "augmentation": {"train": []},
        "trainer": {"accelerator": "cpu", "devices": 1},
    }
    with pytest.raises(ConfigError, match=r"^data.loader: 'memory' needs 576 B of arrays"):
        build_datamodule(c, 0, tmp_path)
    c["data"]["loader"] = "auto"
    with pytest.raises(ConfigError, match=r"^cv.folds: cross-validation holds every split"):
        build_datamodule(c, 0, tmp_path, folds={s: np.arange(8) for s in ("train", "val", "test")})


# -- through the CLI -------------------------------------------------------------------------------
def _runs(root: Path):
    db = root / "logs" / "mlflow" / "mlflow.db"
    if not db.exists():
        return []
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps) if exps else []


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_auto_trains_memory_mapped_when_the_data_exceeds_the_share_and_says_so(tmp_path):
    out = run_cli("train", *TINY, f"paths.root_dir={tmp_path}", "data.memory_share=1e-9")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("data loader:")]
    assert len(lines) == 1, out.stdout
    assert lines[0].startswith("data loader: workers, memory-mapped (")
    assert "of arrays exceed 1e-07% of " in lines[0] and lines[0].endswith("free host RAM)")
    assert "test metrics" in out.stdout
    (run,) = _runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.tags["data.loader"] == "workers"
    assert run.data.params["data.memory_share"] == "1e-09"


def test_memory_on_data_that_does_not_fit_is_one_line_exit_2_and_no_run(tmp_path):
    out = run_cli(
        "train", *TINY, f"paths.root_dir={tmp_path}", "data.loader=memory", "data.memory_share=1e-9"
    )
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr + out.stdout
    errors = [line for line in out.stderr.splitlines() if line.startswith("medpipe: error:")]
    assert len(errors) == 1, out.stderr
    assert errors[0].startswith("medpipe: error: data.loader: 'memory' needs ")
    assert "use data.loader=auto or workers" in errors[0] and "data.memory_share" in errors[0]
    assert "data loader:" not in out.stdout  # nothing chosen, nothing trained
    assert not any(r.info.status == "RUNNING" for r in _runs(tmp_path))
    assert _runs(tmp_path) == []
