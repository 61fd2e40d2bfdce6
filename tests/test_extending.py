"""README "Extending medpipe": a net, a data source and a task kind of your own, each one module
(tests/extending/my_*.py) plus its YAML, used through the real command line without touching src/
or conf/. The README shows these files verbatim; the tests check that too."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_cli

EXT = REPO / "tests" / "extending"
SEARCH = f"hydra.searchpath=[file://{EXT / 'conf'}]"
ALLOW = "allowed_targets=[my_nets,my_sources,my_tasks]"  # your modules (README: Hostile input)
SMALL = ["trainer.max_epochs=2", "data.n_train=256", "data.n_val=64", "data.n_test=64"]
ENV = {"PYTHONPATH": str(EXT)}


def _train(tmp_path: Path, *args: str):
    out = run_cli("train", SEARCH, ALLOW, f"paths.root_dir={tmp_path}", *SMALL, *args, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = Path(re.search(r"^outputs: (.+)$", out.stdout, re.M).group(1))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    return out, metrics, ckpt


def _run_tags(tmp_path: Path) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'logs' / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("medpipe").experiment_id])
    assert run.info.status == "FINISHED"
    return run.data.tags


@pytest.mark.parametrize(
    "example",
    [
        "my_nets.py",
        "my_sources.py",
        "my_tasks.py",
        "conf/model/tiny_cnn.yaml",
        "conf/data/rings.yaml",
    ],
)
def test_the_readme_shows_each_example_verbatim(example):
    readme = (REPO / "README.md").read_text()
    assert (EXT / example).read_text().strip() in readme, f"README lacks {example} as it is"


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_a_net_of_your_own_trains_from_its_yaml(tmp_path):
    _, metrics, ckpt = _train(tmp_path, "model=tiny_cnn", "model.net.width=6")
    state = ckpt["state_dict"]
    assert state["net.features.0.weight"].shape == (6, 1, 3, 3)  # the option reached the net
    assert state["net.head.3.weight"].shape == (2, 6)  # one output per class of the data
    assert 0.0 <= metrics["test/auroc"] <= 1.0


def test_a_net_of_your_own_has_its_options_checked(tmp_path):
    out = run_cli("train", SEARCH, ALLOW, f"paths.root_dir={tmp_path}", "model=tiny_cnn",
                  "model.net.widht=4", env=ENV)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "medpipe: error: model.net.widht: unknown key (did you mean 'width'?); known: "
        "_target_, width, dropout"
    ]
    out = run_cli("train", SEARCH, ALLOW, f"paths.root_dir={tmp_path}", "model=tiny_cnn",
                  "model.net.width=0", *SMALL, env=ENV)  # fmt: skip
    assert out.returncode == 2
    assert "medpipe: error: model.net.width: Input should be greater than 0 (got 0)" in out.stderr
    assert not (tmp_path / "logs" / "mlflow").exists()  # no MLflow run for a bad config


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_a_source_of_your_own_becomes_processed_data(tmp_path):
    out, metrics, ckpt = _train(tmp_path, "data=rings")
    assert ckpt["medpipe"]["meta"]["classes"] == ["disc", "ring"]
    assert ckpt["medpipe"]["meta"]["sizes"] == {"train": 256, "val": 64, "test": 64}
    assert _run_tags(tmp_path)["data.name"] == "rings"
    assert metrics["test/auroc"] > 0.8  # a ring is easy to tell from a disc


@pytest.mark.slow  # the default run stays under 10 minutes on 2 cores
def test_a_task_kind_of_your_own_is_chosen_by_name_and_tagged(tmp_path):
    _, metrics, ckpt = _train(tmp_path, "task_kind=my_tasks.FOCAL", "+model.focal_gamma=1.5")
    assert ckpt["medpipe"]["config"]["model"]["focal_gamma"] == 1.5
    tags = _run_tags(tmp_path)
    assert tags["medpipe.task_kind"] == "focal"
    assert tags["medpipe.main_metrics"].split(",")[:3] == ["val/auroc", "val/acc", "val/f1"]
    assert {"test/auroc", "test/acc"} <= set(metrics)


def test_the_focal_loss_is_cross_entropy_at_gamma_zero_and_smaller_above():
    import sys

    sys.path.insert(0, str(EXT))
    try:
        from my_tasks import FocalTask
    finally:
        sys.path.remove(str(EXT))
    logits = torch.tensor([[2.0, -1.0], [0.2, 0.1], [-1.0, 1.5]])
    y = torch.tensor([0, 1, 1])
    ce = torch.nn.functional.cross_entropy(logits, y)
    task = FocalTask.__new__(FocalTask)  # only the loss: no net or data needed
    torch.nn.Module.__init__(task)
    task.task = "binary"
    task.options = FocalTask.Options(focal_gamma=0.0)
    torch.testing.assert_close(task.loss(logits, y), ce)
    task.options = FocalTask.Options(focal_gamma=2.0)
    assert task.loss(logits, y) < ce
