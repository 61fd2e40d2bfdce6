"""Every config file composes and validates; the entry points answer --help and --cfg job."""

from __future__ import annotations

import pytest
import yaml

from medpipe.config import validate
from medpipe.errors import ConfigError
from medpipe.paths import conf_dir

from conftest import SMALL_SYNTHETIC as SMALL
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
    "data/gan_samples": ["data.generator=pyproject.toml"],
    "data/image_folder": ["data.path=conf"],  # any folder: read when prepared
    "data/volume_folder": ["data.path=conf", "model=resnet3d"],  # any file: read when prepared
    "experiment/pneumonia_tstr": ["data.generator=pyproject.toml"],
    "model/rnn": ["data=synthetic_ecg", "model.loss=mse", "monitor=val/mae", "monitor_mode=min"],
    "model/gru": ["data=synthetic_ecg", "model.loss=mse", "monitor=val/mae", "monitor_mode=min"],
    "model/crnn1d": ["data=synthetic_ecg", "model.loss=mse", "monitor=val/mae", "monitor_mode=min"],
    "model/inception1d": [
        "data=synthetic_ecg",
        "model.loss=mse",
        "monitor=val/mae",
        "monitor_mode=min",
    ],
    "model/resnet1d": [
        "data=synthetic_ecg",
        "model.loss=mse",
        "monitor=val/mae",
        "monitor_mode=min",
    ],
    "model/crnn2d": ["data=synthetic_cine"],
    "model/cnn2p5d": ["data=synthetic_cine"],
    "model/resnet3d": ["data=synthetic_cine"],
    "experiment/ecg_af_rnn": ["data.path=conf"],
    "experiment/ecg_af_crnn": ["data.path=conf"],
    "experiment/ecg_af_inception": ["data.path=conf"],
    "experiment/ecg_af_resnet1d": ["data.path=conf"],
    "experiment/signal_small": ["data.path=pyproject.toml"],
    "experiment/ecg_af_minirocket": ["data.path=conf"],
    "model/minirocket": [
        "data=synthetic_ecg",
        "model.loss=mse",
        "monitor=val/mae",
        "monitor_mode=min",
    ],
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


def _set_values(node, prefix=""):
    """(dotted key, value) of every plain value a YAML file sets (interpolations and the
    defaults list left out)."""
    for key, value in node.items():
        if key == "defaults" or (not prefix and key == "hydra"):
            continue
        if isinstance(value, dict):
            yield from _set_values(value, f"{prefix}{key}.")
        elif not (isinstance(value, str) and "${" in value):
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("choice", list(_options()))
def test_every_config_file_composes_and_validates(choice, tmp_path):
    from omegaconf import OmegaConf

    group, option = choice.split("/")
    overrides = [] if group in ("paths", "hydra") else [f"{group}={option}", *EXTRA.get(choice, [])]
    cfg = compose_config(tmp_path, overrides)
    validate(cfg, "train")
    if group in ("paths", "hydra"):
        return
    # every value the file sets is what the composed config holds (unless a test override set it)
    path = conf_dir() / group / f"{option}.yaml"
    text = path.read_text()
    own = yaml.safe_load(text) or {}
    composed = OmegaConf.to_container(cfg, resolve=False)
    root = composed if "@package _global_" in text else composed[group]
    overridden = {o.split("=", 1)[0] for o in EXTRA.get(choice, [])}
    for key, value in _set_values(own):
        if f"{'' if root is composed else group + '.'}{key}" in overridden:
            continue
        node = root
        for part in key.split("."):
            node = node[part]
        assert node == value, (choice, key)


@pytest.mark.parametrize("name", ["evaluate", "prepare", "export"])
def test_other_primary_configs_compose(name, tmp_path):
    overrides = ["ckpt_path=x.ckpt"] if name in ("evaluate", "export") else []
    cfg = compose_config(tmp_path, overrides, config_name=name)
    assert cfg.task_name == name
    if name == "export":
        assert cfg.ckpt_path == "x.ckpt" and cfg.format == "onnx" and cfg.out is None
        assert cfg.tolerance == 1e-5 and cfg.data.path is None
    elif name == "evaluate":
        assert cfg.ckpt_path == "x.ckpt" and cfg.trainer.accelerator == "cpu"
        assert cfg.data.path is None  # null: the checkpoint's own data
    else:
        assert cfg.data.name == "synthetic_lesions" and cfg.force is False and cfg.out is None


def test_defaults_compose_to_the_documented_run(tmp_path):
    """The default experiment as the README describes it: synthetic lesions, the seeds' CNN."""
    cfg = compose_config(tmp_path, [])
    assert (cfg.data.source, cfg.data.image_size, cfg.data.n_train) == (
        "synthetic_lesions",
        28,
        4000,
    )
    assert cfg.model.net._target_ == "medpipe.models.nets.SimpleCNN"
    assert list(cfg.model.net.channels) == [32, 64, 128] and cfg.model.loss == "cross_entropy"
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.trainer.accelerator == "cpu"
    assert cfg.task_kind == "auto" and cfg.monitor == "auto"
    assert cfg.callbacks.model_checkpoint.monitor == "auto"  # follows `monitor`
    assert cfg.augmentation.name == "none" and cfg.seed == 42


@pytest.mark.parametrize(
    "override, line",
    [
        ("+foo=1", "foo: unknown key"),
        ("++model.lossy=bce", "model.lossy: unknown key (did you mean 'loss'?)"),
        ("+data.n_trian=5", "data.n_trian: unknown key (did you mean 'n_train'?)"),
        ("+trainer.max_epoch=3", "trainer.max_epoch: unknown key: lightning.pytorch.Trainer"),
        ("+optimizer.beta=[0.9,0.99]", "optimizer.beta: unknown key: torch.optim.Adam takes no"),
        ("data.n_trian=5", "data.n_trian: unknown key (did you mean 'n_train'?)"),
        ("model.net.chanels=[8]", "model.net.chanels: unknown key (did you mean 'channels'?)"),
        ("+model.net.chanels=[8]", "model.net.chanels: unknown key (did you mean 'channels'?)"),
        ("+cv.fols=3", "cv.fols: unknown key (did you mean 'folds'?)"),
        ("+logger.mlflow.tracking_url=x", "logger.mlflow.tracking_url: unknown key (did you mean"),
        ("+callbacks.model_checkpoint.monitr=x", "callbacks.model_checkpoint.monitr: unknown key"),
    ],
)
def test_every_unknown_key_is_one_line_exit_2_and_no_run(tmp_path, override, line):
    out = run_cli("train", override, f"paths.root_dir={tmp_path}", *SMALL)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"medpipe: error: {line}"), out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "logs" / "mlflow").exists()


def test_a_yaml_of_your_own_is_closed_too(tmp_path):
    conf = tmp_path / "myconf" / "model"
    conf.mkdir(parents=True)
    mine = yaml.safe_load((conf_dir() / "model" / "cnn.yaml").read_text())
    mine.update(name="mycnn", dropuot=0.1)
    (conf / "mycnn.yaml").write_text(yaml.safe_dump(mine))
    out = run_cli(
        "train", f"hydra.searchpath=[file://{tmp_path / 'myconf'}]", "model=mycnn",
        f"paths.root_dir={tmp_path}", *SMALL,
    )  # fmt: skip
    assert out.returncode == 2
    assert "medpipe: error: model.dropuot: unknown key" in out.stderr


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
            "+data.n_trian=5",
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
        "data.n_trian: unknown key (did you mean 'n_train'?)",
    ]:
        assert any(line.startswith(key) for line in err.value.lines()), (key, text)
    assert "'unit', 'zscore' or 'none'" in text


def test_help_lists_the_config_groups():
    out = run_cli("train", "--help", timeout=120)
    assert out.returncode == 0, out.stderr
    # the model group grows with every net: the built-in ones, listed in order
    (line,) = [line for line in out.stdout.splitlines() if line.lstrip().startswith("model: ")]
    models = line.split(":", 1)[1].replace(" ", "").split(",")
    assert models == sorted(models)
    assert {"cnn", "cnn2p5d", "crnn1d", "crnn2d", "gan", "gru", "inception1d", "linear"} <= set(
        models
    )
    assert {"resnet18", "resnet1d", "resnet3d", "rnn"} <= set(models)
    for group in [
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
