"""Every config file composes and validates; the entry points answer --help and --cfg job."""

from __future__ import annotations

import pytest
import yaml

from medpipe.config import validate
from medpipe.errors import ConfigError
from medpipe.paths import conf_dir

from conftest import compose_config, run_cli

GROUPS = [
    "data",
    "augmentation",
    "model",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
    "paths",
    "hydra",
]
EXTRA = {
    "data/medmnist": ["data.flag=bloodmnist"],
    "data/synthetic_cine": ["model=resnet3d"],
    "data/synthetic_ecg": ["model=crnn1d", "model.loss=mse", "monitor=val/mae", "monitor_mode=min"],
    "data/physionet2017": ["model=crnn1d", "data.path=conf"],
    "data/mitdb_beats": ["model=crnn1d", "data.path=conf"],
    "data/mitdb_hr": ["model=crnn1d", "data.path=conf"],
    "data/ecg_table": ["model=crnn1d", "data.path=pyproject.toml"],
    "model/rnn": ["data=synthetic_ecg", "model.loss=mse", "monitor=val/mae", "monitor_mode=min"],
    "model/gru": ["data=synthetic_ecg", "model.loss=mse", "monitor=val/mae", "monitor_mode=min"],
    "model/crnn1d": ["data=synthetic_ecg", "model.loss=mse", "monitor=val/mae", "monitor_mode=min"],
    "model/crnn2d": ["data=synthetic_cine"],
    "model/cnn2p5d": ["data=synthetic_cine"],
    "model/resnet3d": ["data=synthetic_cine"],
    "experiment/ecg_af_rnn": ["data.path=conf"],
    "experiment/ecg_af_crnn": ["data.path=conf"],
    "augmentation/volume_light": ["data=medmnist", "data.flag=adrenalmnist3d", "model=crnn2d"],
    "augmentation/frames_light": ["data=synthetic_cine", "model=crnn2d"],
    "augmentation/signal_light": [
        "data=synthetic_ecg",
        "model=crnn1d",
        "model.loss=mse",
        "monitor=val/mae",
        "monitor_mode=min",
    ],
}


def _options():
    for group in GROUPS:
        for f in sorted((conf_dir() / group).glob("*.yaml")):
            yield f"{group}/{f.stem}"


@pytest.mark.parametrize("choice", list(_options()))
def test_every_config_file_composes_and_validates(choice, tmp_path):
    group, option = choice.split("/")
    overrides = [] if group in ("paths", "hydra") else [f"{group}={option}", *EXTRA.get(choice, [])]
    cfg = compose_config(tmp_path, overrides)
    validate(cfg, "train")


@pytest.mark.parametrize("name", ["evaluate", "prepare"])
def test_other_primary_configs_compose(name, tmp_path):
    overrides = ["ckpt_path=x.ckpt"] if name == "evaluate" else []
    cfg = compose_config(tmp_path, overrides, config_name=name)
    assert cfg.task_name == name


def test_pneumonia_experiments_use_the_medmnist_recipe(tmp_path):
    for name, model in [("pneumonia_resnet18", "resnet18"), ("pneumonia_cnn", "cnn")]:
        cfg = compose_config(tmp_path, [f"experiment={name}"])
        assert cfg.model.name == model
        assert cfg.data.flag == "pneumoniamnist"
        assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3
        assert cfg.scheduler.name == "multistep" and list(cfg.scheduler.milestones) == [0.5, 0.75]
        assert cfg.scheduler.gamma == 0.1
        assert cfg.trainer.max_epochs == 100 and cfg.data.batch_size == 128
        assert cfg.monitor == "val/auroc" and cfg.augmentation.name == "none"


def test_medmnist_flag_selects_volume_kind(tmp_path):
    cfg = compose_config(tmp_path, ["data=medmnist", "data.flag=adrenalmnist3d", "model=resnet18"])
    assert cfg.data.kind == "volume"
    validate(cfg, "train")


def test_validation_reports_every_problem_with_its_key(tmp_path):
    cfg = compose_config(
        tmp_path,
        [
            "optimizer.lr=-1",
            "trainer.max_epochs=0",
            "data.batch_size=0",
            "data.normalize=minmax",
            "monitor=val/dice",
        ],
    )
    with pytest.raises(ConfigError) as err:
        validate(cfg, "train")
    text = "\n".join(err.value.lines())
    for key in [
        "optimizer.lr",
        "trainer.max_epochs",
        "data.batch_size",
        "data.normalize",
        "monitor",
    ]:
        assert any(line.startswith(key) for line in err.value.lines()), (key, text)
    assert "'unit', 'zscore' or 'none'" in text


def test_help_lists_the_config_groups():
    out = run_cli("train", "--help", timeout=120)
    assert out.returncode == 0, out.stderr
    for group in [
        "model: cnn, cnn2p5d, crnn1d, crnn2d, gru, linear, resnet18, resnet3d, rnn",
        "trainer: cpu, ddp, ddp_spawn, default, gpu",
        "hparams_search: synthetic_tpe",
        "logger: csv, mlflow, none",
    ]:
        assert group in out.stdout


def test_cfg_job_prints_the_composed_config():
    out = run_cli("train", "model=resnet18", "optimizer=sgd", "--cfg", "job", timeout=120)
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["model"]["name"] == "resnet18"
    assert cfg["optimizer"]["_target_"] == "torch.optim.SGD"
