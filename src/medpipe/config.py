"""Validate a composed config before anything expensive: no torch, no MLflow, no data loading.

Every problem becomes one line naming the key, what was wrong and what is allowed; all lines are
raised together as a ConfigError.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medpipe.data.augment_ops import (
    LIBRARY_KINDS,
    ON_DEVICE,
    device_misfit,
    on_device,
    op_library,
)
from medpipe.errors import ConfigError
from medpipe.evaluation.keys import CLASSIFICATION_METRICS, REGRESSION_METRICS, metric_direction

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Prob = Annotated[float, Field(ge=0, le=1)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=False)


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


# -- data ------------------------------------------------------------------------------------------
class DataCommon(_Open):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    source: Literal[
        "medmnist",
        "synthetic_lesions",
        "synthetic_cine",
        "physionet2017",
        "wfdb",
        "table",
        "synthetic_ecg",
    ]
    kind: Literal["image", "volume", "signal", "frames"]
    normalize: Literal["unit", "zscore", "none"] = "zscore"
    batch_size: PosInt
    loader: Literal["auto", "memory", "workers"] = "auto"
    num_workers: NonNegInt = 0
    pin_memory: bool = False


class SyntheticLesionsData(DataCommon):
    seed: int
    image_size: Annotated[int, Field(ge=16, le=512)]
    n_train: Annotated[int, Field(ge=2)]
    n_val: Annotated[int, Field(ge=2)]
    n_test: Annotated[int, Field(ge=2)]
    prevalence: Annotated[float, Field(gt=0, lt=1)]
    noise: Annotated[float, Field(ge=0)]


class SyntheticCineData(DataCommon):
    kind: Literal["frames"]
    seed: int
    frames: Annotated[int, Field(ge=2, le=256)]
    image_size: Annotated[int, Field(ge=16, le=256)]
    n_train: Annotated[int, Field(ge=2)]
    n_val: Annotated[int, Field(ge=2)]
    n_test: Annotated[int, Field(ge=2)]
    noise: Annotated[float, Field(ge=0)]


class MedMNISTData(DataCommon):
    flag: Annotated[str, Field(min_length=1)]
    size: Literal[28, 64, 128, 224] = 28
    path: str | None = None
    mirror: str | None = None
    download: bool = True
    verify_md5: bool = True
    url: str | None = None

    @model_validator(mode="after")
    def _check(self):
        from medpipe.data.catalog import CATALOG

        info = CATALOG.get(self.flag)
        if info is None and not self.path:
            raise ValueError(
                f"flag: unknown MedMNIST flag '{self.flag}'; known: {', '.join(sorted(CATALOG))} "
                "(or give data.path to a MedMNIST-format npz)"
            )
        if info is not None and self.size not in info.md5:
            raise ValueError(
                f"size: {self.flag} comes in sizes {sorted(info.md5)}, not {self.size}"
            )
        if info is not None and info.kind != self.kind:
            raise ValueError(f"kind: {self.flag} is {info.kind} data, not {self.kind}")
        return self


# ECG and other signal sources: preprocess block shared by all (medpipe.data.signal).
Fractions = Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=3, max_length=3)]
PosFloat = Annotated[float, Field(gt=0)]
PHYSIONET2017_URL = "https://physionet.org/content/challenge-2017/1.0.0/"


class SignalWindow(_Closed):
    mode: Literal["fixed", "sliding", "none"] = "none"
    length: PosInt | None = None  # samples at the final rate (a maximum for mode none)
    stride: PosInt | None = None


class SignalPreprocess(_Closed):
    resample_hz: PosFloat | None = None
    bandpass: Annotated[list[PosFloat], Field(min_length=2, max_length=2)] | None = None
    bandpass_order: Annotated[int, Field(ge=1, le=10)] = 3
    zscore: bool = False
    window: SignalWindow = SignalWindow()


class _SignalData(DataCommon):
    kind: Literal["signal"]
    preprocess: SignalPreprocess = SignalPreprocess()

    def _native_fs(self) -> float | None:
        return None

    def _split_problem(self, split: list[float] | None) -> None:
        if split is None:
            return
        if abs(sum(split) - 1) > 1e-6 or split[0] <= 0 or split[2] <= 0:
            raise ValueError(
                f"split: train/val/test fractions {split} must be positive (val may be 0 only "
                "with a test file) and sum to 1"
            )

    @model_validator(mode="after")
    def _check_preprocess(self):
        p, w = self.preprocess, self.preprocess.window
        if p.bandpass is not None:
            low, high = p.bandpass
            if not low < high:
                raise ValueError(f"preprocess.bandpass: low {low} Hz must be below high {high} Hz")
            fs = p.resample_hz or self._native_fs()
            if fs is not None and high >= fs / 2:
                raise ValueError(
                    f"preprocess.bandpass: high {high} Hz must be below fs/2 = {fs / 2:g} Hz "
                    f"(fs {fs:g} Hz after resampling)"
                )
        if w.mode in ("fixed", "sliding") and w.length is None:
            raise ValueError(f"preprocess.window.length: required by window.mode={w.mode}")
        if w.mode == "sliding" and w.stride is None:
            raise ValueError("preprocess.window.stride: required by window.mode=sliding")
        return self


class PhysioNet2017Data(_SignalData):
    path: str | None = None
    reference: Annotated[str, Field(min_length=1)] = "REFERENCE.csv"
    split: Fractions = [0.7, 0.1, 0.2]
    seed: int = 0

    def _native_fs(self) -> float | None:
        return 300.0

    @model_validator(mode="after")
    def _check(self):
        if not self.path:
            raise ValueError(
                "path: required: the folder holding the A*.mat records and REFERENCE.csv; set "
                f"data.path=FOLDER or PHYSIONET2017_DIR (download: {PHYSIONET2017_URL})"
            )
        self._split_problem(self.split)
        if self.split[1] <= 0:
            raise ValueError("split: the val fraction must be positive")
        return self


class WFDBData(_SignalData):
    path: str | None = None
    records: Annotated[list[str | int], Field(min_length=1)]
    channel: NonNegInt | str | Annotated[list[NonNegInt | str], Field(min_length=1)] = 0
    annotator: Annotated[str, Field(min_length=1)] = "atr"
    target: Literal["beats", "heart_rate"] = "beats"
    window_before: PosFloat = 0.25
    window_after: PosFloat = 0.45
    hr_window_s: PosFloat = 10.0
    hr_stride_s: PosFloat = 5.0
    split: Fractions = [0.7, 0.1, 0.2]
    seed: int = 0

    @model_validator(mode="after")
    def _check(self):
        if not self.path:
            raise ValueError("path: required: the folder holding the WFDB records (.hea/.dat/.atr)")
        self._split_problem(self.split)
        if self.split[1] <= 0:
            raise ValueError("split: the val fraction must be positive")
        w = self.preprocess.window
        if w.mode != "none" or w.length is not None:
            raise ValueError(
                "preprocess.window: not used by source wfdb (beat windows come from "
                "window_before/window_after, heart-rate windows from hr_window_s/hr_stride_s)"
            )
        return self


class TableData(_SignalData):
    path: str | None = None
    test_path: str | None = None
    delimiter: Literal["auto", ",", "\t", "tab", "comma", "whitespace"] = "auto"
    label_column: Literal["first", "last"] = "last"
    header: bool = False
    fs: PosFloat
    task: Literal["binary", "multiclass", "regression"] = "multiclass"
    classes: Annotated[list[str | int], Field(min_length=1)] | None = None
    split: Fractions = [0.7, 0.1, 0.2]
    seed: int = 0

    def _native_fs(self) -> float | None:
        return self.fs

    @model_validator(mode="after")
    def _check(self):
        if not self.path:
            raise ValueError("path: required: the delimited text file, one series per row")
        self._split_problem(self.split)
        if self.test_path is None and self.split[1] <= 0:
            raise ValueError("split: the val fraction must be positive")
        n = len(self.classes or [])
        if self.task == "regression" and n > 1:
            raise ValueError(f"classes: regression takes one name (the target's), not {n}")
        if self.task == "binary" and n not in (0, 2):
            raise ValueError(f"classes: task binary takes 2 class names, not {n}")
        return self


class SyntheticECGData(_SignalData):
    seed: int
    n_train: Annotated[int, Field(ge=2)]
    n_val: Annotated[int, Field(ge=2)]
    n_test: Annotated[int, Field(ge=2)]
    duration_s: Annotated[float, Field(gt=0, le=600)]
    fs: Annotated[float, Field(ge=50, le=2000)]
    heart_rate: Annotated[
        list[Annotated[float, Field(ge=20, le=250)]], Field(min_length=2, max_length=2)
    ]
    noise: Annotated[float, Field(ge=0)]
    baseline_wander: Annotated[float, Field(ge=0)] = 0.0

    def _native_fs(self) -> float | None:
        return self.fs

    @model_validator(mode="after")
    def _check(self):
        lo, hi = self.heart_rate
        if lo > hi:
            raise ValueError(f"heart_rate: [low, high] bpm, got low {lo} > high {hi}")
        return self


DATA_MODELS = {
    "synthetic_lesions": SyntheticLesionsData,
    "medmnist": MedMNISTData,
    "synthetic_cine": SyntheticCineData,
}
DATA_MODELS.update(
    {
        "physionet2017": PhysioNet2017Data,
        "wfdb": WFDBData,
        "table": TableData,
        "synthetic_ecg": SyntheticECGData,
    }
)
# Data keys naming files (False) or folders (True), checked before anything runs.
DATA_PATH_KEYS: dict[str, dict[str, bool]] = {
    "physionet2017": {"path": True},
    "wfdb": {"path": True},
    "table": {"path": False, "test_path": False},
    "synthetic_ecg": {},
}


# -- model, optimisation, training -----------------------------------------------------------------
class SimpleCNNNet(_Closed):
    target: str = Field(alias="_target_")
    channels: Annotated[list[PosInt], Field(min_length=1)]
    kernel_size: PosInt = 3
    hidden: NonNegInt = 512
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5
    batch_norm: bool = False


class ResNetNet(_Closed):
    target: str = Field(alias="_target_")
    depth: Literal[10, 18, 34, 50, 101, 152, 200] = 18
    stem: Literal["small", "imagenet"] = "small"
    widen_factor: Annotated[float, Field(gt=0)] = 1.0


class LinearNet(_Closed):
    target: str = Field(alias="_target_")


class RNNOptions(_Closed):
    """medpipe.models.nets.RNNHead: the recurrent part shared by RNN, CRNN1D and CRNN2D."""

    cell: Literal["lstm", "gru"] = "lstm"
    hidden_size: PosInt = 64
    num_layers: PosInt = 2
    bidirectional: bool = True
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    pooling: Literal["last", "mean", "attention"] = "attention"
    input_proj: NonNegInt = 0


class RNNNet(RNNOptions):
    target: str = Field(alias="_target_")
    frame: PosInt = 1


class CRNN1DNet(_Closed):
    target: str = Field(alias="_target_")
    channels: Annotated[list[PosInt], Field(min_length=1)] = [32, 64, 64]
    kernel_size: PosInt = 7
    pool: PosInt | Annotated[list[PosInt], Field(min_length=1)] = 2
    batch_norm: bool = True
    rnn: RNNOptions = RNNOptions()

    @model_validator(mode="after")
    def _check(self):
        if isinstance(self.pool, list) and len(self.pool) != len(self.channels):
            raise ValueError(
                f"pool: {len(self.pool)} strides for {len(self.channels)} conv blocks (channels)"
            )
        return self


class _SliceEncoderNet(_Closed):
    """The 2D CNN shared by every slice or frame (SliceCNN and CRNN2D)."""

    target: str = Field(alias="_target_")
    channels: Annotated[list[PosInt], Field(min_length=1)] = [32, 64, 128]
    kernel_size: PosInt = 3
    batch_norm: bool = True
    feature_dim: NonNegInt = 0
    axis: Literal[0, 1, 2] = 0
    context: Annotated[int, Field(ge=0, le=8)] = 0


class SliceCNNNet(_SliceEncoderNet):
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0


class CRNN2DNet(_SliceEncoderNet):
    rnn: RNNOptions = RNNOptions()


NET_MODELS = {
    "medpipe.models.nets.SimpleCNN": SimpleCNNNet,
    "medpipe.models.nets.ResNet": ResNetNet,
    "medpipe.models.nets.LinearClassifier": LinearNet,
    "medpipe.models.nets.RNN": RNNNet,
    "medpipe.models.nets.CRNN1D": CRNN1DNet,
    "medpipe.models.nets.CRNN2D": CRNN2DNet,
    "medpipe.models.nets.SliceCNN": SliceCNNNet,
}


class ModelCfg(_Open):
    name: str
    accepts: Annotated[list[Literal["image", "volume", "signal", "frames"]], Field(min_length=1)]
    net: dict[str, Any]
    loss: Literal["cross_entropy", "bce", "mse", "mae", "huber"] = "cross_entropy"
    huber_delta: Annotated[float, Field(gt=0)] = 1.0
    class_weights: (
        Literal["balanced"]
        | Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)]
        | None
    ) = None
    label_smoothing: Annotated[float, Field(ge=0, lt=1)] = 0.0


class OptimizerCfg(_Open):
    target: str = Field(alias="_target_")
    lr: Annotated[float, Field(gt=0)]
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    momentum: Annotated[float, Field(ge=0, lt=1)] | None = None


class SchedulerCfg(_Closed):
    name: Literal["none", "step", "multistep", "cosine"]
    step_size: PosInt | None = None
    gamma: Annotated[float, Field(gt=0, le=1)] | None = None
    milestones: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] | None = None
    warmup_epochs: NonNegInt | None = None
    eta_min: Annotated[float, Field(ge=0)] | None = None


Limit = Annotated[float, Field(ge=0)] | None


class TrainerCfg(_Open):
    accelerator: Literal["cpu", "gpu", "cuda", "mps", "tpu", "auto"]
    devices: PosInt | Literal["auto", -1] | list[NonNegInt] | str
    strategy: str = "auto"
    num_nodes: PosInt = 1
    precision: Literal[
        "64",
        "64-true",
        "32",
        "32-true",
        "16",
        "16-mixed",
        "bf16",
        "bf16-mixed",
        "16-true",
        "bf16-true",
        "transformer-engine",
        64,
        32,
        16,
    ]
    max_epochs: Annotated[int, Field(ge=1)]
    min_epochs: NonNegInt | None = None
    fast_dev_run: bool | NonNegInt = False
    limit_train_batches: Limit = None
    limit_val_batches: Limit = None
    limit_test_batches: Limit = None
    accumulate_grad_batches: PosInt = 1
    gradient_clip_val: Annotated[float, Field(ge=0)] | None = None
    check_val_every_n_epoch: PosInt | None = 1


class LoggerCfg(_Closed):
    mlflow: dict[str, Any] | None = None
    csv: dict[str, Any] | None = None


class CallbacksCfg(_Open):
    progress_bar: Literal["auto", "rich", "plain", "none"] = "auto"


class AugmentationCfg(_Closed):
    name: str
    train: list[dict[str, Any]] = []


class CVCfg(_Closed):
    folds: Annotated[int, Field(ge=0)] = 0
    val_fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.1
    seed: int | None = None

    @model_validator(mode="after")
    def _check(self):
        if self.folds == 1:
            raise ValueError("folds: 1 fold is no cross-validation; use 0 (off) or 2 or more")
        return self


def _cv_problems(c: dict[str, Any]) -> list[str]:
    cv = c.get("cv") or {}
    if not isinstance(cv, dict) or not isinstance(cv.get("folds"), int) or cv["folds"] < 2:
        return []
    trainer = c.get("trainer") or {}
    devices = trainer.get("devices", 1)
    problems = []
    if not c.get("test_after_fit", True):
        problems.append("test_after_fit: cross-validation tests every fold; set it to true")
    if trainer.get("fast_dev_run"):
        problems.append("trainer.fast_dev_run: not with cv.folds (no checkpoint to test)")
    if (isinstance(devices, int) and devices > 1) or (
        isinstance(devices, list) and len(devices) > 1
    ):
        problems.append(
            "trainer.devices: cross-validation trains its folds one after another in one "
            "process; use one device per run"
        )
    return problems


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class TrainCfg(_Open):
    seed: int
    experiment_name: Annotated[str, Field(min_length=1)]
    monitor: str
    monitor_mode: Literal["max", "min"]
    test_after_fit: bool = True
    log_model: bool = True
    cv: CVCfg = CVCfg()
    channels_last: bool = False
    compile: bool | str = False

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_mode(cls, v: Any) -> Any:
        if isinstance(v, bool) or v in COMPILE_MODES:
            return v
        raise ValueError(
            f"{v!r} is not a torch.compile mode; use false, true or one of {', '.join(COMPILE_MODES)}"
        )


class EvaluateCfg(_Open):
    ckpt_path: Annotated[str, Field(min_length=1)]


# -- driver ----------------------------------------------------------------------------------------
def _fmt_value(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _errors(prefix: str, model: type[BaseModel], data: Any) -> list[str]:
    try:
        model.model_validate(data)
    except ValidationError as err:
        out = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"] if p != "_target_") if e["loc"] else ""
            key = f"{prefix}.{loc}" if loc else prefix
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "value_error" and ":" in msg.split(" ")[0]:
                sub, msg = msg.split(":", 1)
                key, msg = f"{key}.{sub}", msg.strip()
            got = (
                ""
                if e["type"] in ("missing", "value_error", "extra_forbidden")
                else f" (got {_fmt_value(e.get('input'))})"
            )
            if e["type"] == "extra_forbidden":
                msg = "unknown key"
            out.append(f"{key}: {msg}{got}")
        return out
    return []


def _section(c: dict[str, Any], key: str) -> Any:
    v = c.get(key)
    return v if v is not None else {}


def _check_file(key: str, value: Any, is_dir: bool = False) -> list[str]:
    if value in (None, ""):
        return []
    p = Path(str(value)).expanduser()
    ok = p.is_dir() if is_dir else p.is_file()
    what = "folder" if is_dir else "file"
    return [] if ok else [f"{key}: {what} not found: {p.resolve()}"]


def _data_path_problems(data: dict[str, Any]) -> list[str]:
    """File and folder keys of the data config that name nothing (per source, DATA_PATH_KEYS)."""
    keys = DATA_PATH_KEYS.get(data.get("source"), {"path": False, "mirror": True})
    return [p for k, d in keys.items() for p in _check_file(f"data.{k}", data.get(k), is_dir=d)]


def _validate_train(c: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    problems += _errors("", TrainCfg, c)
    problems = [p.removeprefix(".") for p in problems]
    problems += _cv_problems(c)

    data = _section(c, "data")
    source = data.get("source")
    problems += _errors("data", DATA_MODELS.get(source, DataCommon), data)
    if source in DATA_MODELS:
        problems += _data_path_problems(data)
    if c.get("channels_last") is True and data.get("kind") not in ("image", "volume", None):
        problems.append(
            f"channels_last: a memory format for 2D images and 3D volumes; {data.get('name')} "
            f"holds {data.get('kind')} samples (set channels_last=false)"
        )

    model = _section(c, "model")
    problems += _errors("model", ModelCfg, model)
    net = model.get("net") or {}
    target = net.get("_target_")
    if target in NET_MODELS:
        problems += _errors("model.net", NET_MODELS[target], net)
    elif isinstance(target, str):
        module = target.rsplit(".", 1)[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            problems.append(f"model.net._target_: cannot find module '{module}' of '{target}'")
    else:
        problems.append("model.net._target_: missing; name the network class to build")
    kind = data.get("kind")
    accepts = model.get("accepts") or []
    if kind and accepts and kind not in accepts:
        problems.append(
            f"model: '{model.get('name')}' reads {', '.join(accepts)} data, but data "
            f"'{data.get('name')}' is {kind} data; choose a model that reads {kind}"
        )

    problems += _errors("optimizer", OptimizerCfg, _section(c, "optimizer"))
    opt_target = _section(c, "optimizer").get("_target_", "")
    if isinstance(opt_target, str) and not opt_target.startswith("torch.optim."):
        problems.append(f"optimizer._target_: '{opt_target}' is not a torch.optim optimizer")

    sched = _section(c, "scheduler")
    problems += _errors("scheduler", SchedulerCfg, sched)
    required = {"step": ("step_size", "gamma"), "multistep": ("milestones", "gamma"), "cosine": ()}
    for key in required.get(sched.get("name"), ()):
        if sched.get(key) is None:
            problems.append(f"scheduler.{key}: required by scheduler '{sched.get('name')}'")

    trainer = _section(c, "trainer")
    problems += _errors("trainer", TrainerCfg, trainer)
    problems += _errors("logger", LoggerCfg, _section(c, "logger"))
    problems += _errors("callbacks", CallbacksCfg, _section(c, "callbacks"))

    aug = _section(c, "augmentation")
    problems += _errors("augmentation", AugmentationCfg, aug)
    kind = data.get("kind")
    first_lib: tuple[int, str] | None = None
    for i, op in enumerate(aug.get("train") or []):
        t = op.get("_target_") if isinstance(op, dict) else None
        lib = op_library(op) if isinstance(op, dict) else None
        if lib is None:
            problems.append(
                f"augmentation.train[{i}]._target_: must name an albumentations transform "
                f"(albumentations.HorizontalFlip, ...) or a MONAI array transform "
                f"(monai.transforms.RandFlip, ...), got {_fmt_value(t)}"
            )
        elif kind in LIBRARY_KINDS["monai"] and kind not in LIBRARY_KINDS[lib]:
            problems.append(
                f"augmentation.train[{i}]._target_: {t}: {lib} transforms take only "
                f"{', '.join(LIBRARY_KINDS[lib])} data, but data '{data.get('name')}' is {kind} "
                f"data; use monai.transforms.* (e.g. augmentation={kind}_light)"
            )
        elif first_lib is None:
            first_lib = (i, lib)
        elif lib != first_lib[1]:
            problems.append(
                f"augmentation.train[{i}]._target_: {t} ({lib}) mixed with {first_lib[1]} "
                f"(augmentation.train[{first_lib[0]}]); one list uses one library"
            )
        for key in ("p", "prob") if lib == "monai" else ("p",):
            p = op.get(key, 0.5) if isinstance(op, dict) else 0.5
            if not isinstance(p, int | float) or not 0 <= p <= 1:
                problems.append(
                    f"augmentation.train[{i}].{key}: a probability in [0, 1] (got {_fmt_value(p)})"
                )
    ops = [op for op in aug.get("train") or [] if isinstance(op, dict)]
    if ops and data.get("loader") == "memory" and not on_device(ops):
        others = list(dict.fromkeys(m for m in map(device_misfit, ops) if m is not None))
        problems.append(
            f"data.loader: 'memory' runs augmentation on the device, which has no "
            f"{', '.join(others)}; use data.loader=workers (or auto), or only albumentations "
            f"{', '.join(sorted(ON_DEVICE))} with the arguments README's Augmentation lists"
        )
    metric_names = list(dict.fromkeys(CLASSIFICATION_METRICS + REGRESSION_METRICS))
    allowed = [f"{s}/{m}" for s in ("val", "train") for m in metric_names]
    monitors = {"monitor": c.get("monitor")}
    for name, cb in (c.get("callbacks") or {}).items():
        if isinstance(cb, dict) and "monitor" in cb and cb["monitor"] != c.get("monitor"):
            monitors[f"callbacks.{name}.monitor"] = cb["monitor"]
    for key, monitor in monitors.items():
        if (
            isinstance(monitor, str)
            and monitor not in allowed
            and not monitor.startswith("val/f1_")
        ):
            problems.append(
                f"{key}: unknown metric '{monitor}'; use val/<metric> (or train/<metric>) with "
                f"<metric> one of {', '.join(metric_names)} or f1_<class>"
            )
    monitor = c.get("monitor")
    if metric_direction(monitor) == "min" and c.get("monitor_mode") == "max":
        problems.append(
            f"monitor_mode: 'max' with monitor '{monitor}', which is minimised; use min"
        )
    return problems


def _multirun_problems(c: dict[str, Any]) -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return []
        launcher = str(OmegaConf.select(hc, "launcher._target_") or "")
    except Exception:  # noqa: BLE001 - not inside a Hydra app
        return []
    from medpipe.tracking.sweep import multirun_ddp_problem

    problem = multirun_ddp_problem(_section(c, "trainer"), launcher)
    return [problem] if problem else []


def validate(cfg: DictConfig | dict[str, Any], config_name: str = "train") -> None:
    """Raise ConfigError listing every problem of the composed config (nothing heavy imported)."""
    try:
        c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    except Exception as err:  # noqa: BLE001 - interpolation errors name the key themselves
        raise ConfigError(f"cannot resolve the config: {err}".splitlines()[0]) from None
    if config_name == "train":
        problems = _validate_train(c)
        problems += _multirun_problems(c)
    elif config_name == "evaluate":
        problems = _errors("", EvaluateCfg, c)
        problems = [p.removeprefix(".") for p in problems]
        problems += _check_file("ckpt_path", c.get("ckpt_path"))
        problems += _data_path_problems(c.get("data") or {})
    elif config_name == "prepare":
        data = _section(c, "data")
        problems = _errors("data", DATA_MODELS.get(data.get("source"), DataCommon), data)
        problems += _data_path_problems(data)
    else:
        problems = []
    if problems:
        raise ConfigError(problems)
