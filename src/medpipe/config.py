"""Check a composed config before anything expensive: no torch, no MLflow, no data loading.

Every problem becomes one line naming the key, what was wrong and what is allowed; all lines are
raised together as a ConfigError. The config is closed: a key that medpipe does not read is an
error naming the nearest known key, however it got there (an override, `+`/`++`, an experiment or
a user's YAML). What the registries hold is checked here where it needs no torch (data sources);
the net's and the task kind's options, which live next to their torch code, are checked by
medpipe.checks right after the data is prepared, still before training or MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from medpipe.data.augment_ops import LIBRARY_KINDS, ON_DEVICE, device_misfit, on_device, op_library
from medpipe.data.sources.base import DATA_KINDS, DataOptions, source_class
from medpipe.errors import ConfigError
from medpipe.registry import did_you_mean
from medpipe.targets import extension_problems, set_allowed, target_problems

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class _Open(BaseModel):
    """Sections whose further keys are arguments of a class they instantiate (the optimizer, the
    Trainer): medpipe.checks matches those keys against the class's signature."""

    model_config = ConfigDict(extra="allow", strict=False)


class PathsCfg(_Closed):
    root_dir: str
    data_dir: str
    raw_dir: str
    processed_dir: str
    log_dir: str
    mlflow_dir: str
    output_dir: str


class ModelCfg(_Open):
    """name, the data kinds it reads and the net; the task kind's options (loss, ...) and the net's
    options are checked by medpipe.checks against the task kind and the net."""

    name: str
    accepts: Annotated[list[Literal[DATA_KINDS]], Field(min_length=1)]  # type: ignore[valid-type]
    net: dict[str, Any]


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
    target: str = Field("lightning.pytorch.Trainer", alias="_target_")
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


class MlflowCfg(_Closed):
    tracking_uri: str | None = None
    artifact_location: str | None = None
    synchronous: bool = False


class LoggerCfg(_Closed):
    mlflow: MlflowCfg | None = None
    csv: dict[str, Any] | None = None  # lightning.pytorch.loggers.CSVLogger arguments


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


class BootstrapCfg(_Closed):
    n: NonNegInt = 2000  # replicates; 0: no intervals
    method: Literal["percentile", "bca"] = "percentile"
    level: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    seed: int | None = None  # null: the run's seed


class ExplainCfg(_Closed):
    enabled: bool = True
    n: PosInt = 16  # test samples in the figure
    method: Literal["auto", "gradcam", "gradcampp", "integrated_gradients", "occlusion"] = "auto"
    max_samples: PosInt = 256  # positives the pointing game reads


class EvaluationCfg(_Closed):
    bootstrap: BootstrapCfg = BootstrapCfg()
    ece_bins: Annotated[int, Field(ge=2, le=100)] = 15
    explain: ExplainCfg = ExplainCfg()


class PrivacyCfg(_Closed):
    """conf/privacy/<none|dp>.yaml: differentially private training and hashed ids."""

    dp: bool = False
    hash_ids: bool = False
    salt_file: str = ".medpipe_salt"
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    target_epsilon: Annotated[float, Field(gt=0)] | None = None
    delta: Annotated[float, Field(gt=0, lt=1)] | None = None
    noise_multiplier: Annotated[float, Field(gt=0)] | None = None  # 0 would be no privacy
    poisson_sampling: bool = True
    accountant: Literal["prv", "rdp", "gdp"] = "prv"
    fix_layers: bool = True

    @model_validator(mode="after")
    def _one_noise_source(self):
        if self.dp and (self.target_epsilon is None) == (self.noise_multiplier is None):
            got = "neither" if self.target_epsilon is None else "both"
            raise ValueError(
                "privacy.dp needs exactly one of privacy.target_epsilon (the epsilon to spend) "
                f"and privacy.noise_multiplier (got {got}); set the other to null"
            )
        return self


def _privacy_train_problems(c: dict[str, Any]) -> list[str]:
    """What DP-SGD (privacy.dp, medpipe.privacy.dp) cannot be combined with: one line each."""
    privacy = c.get("privacy")
    if not isinstance(privacy, dict) or privacy.get("dp") is not True:
        return []
    trainer, model = _section(c, "trainer"), _section(c, "model")
    devices, strategy = trainer.get("devices", 1), str(trainer.get("strategy", "auto"))
    problems = []
    if str(c.get("task_kind")) == "gan":
        problems.append("task_kind: privacy.dp trains classifiers and regressors, not GANs")
    if (
        (isinstance(devices, int) and devices > 1)
        or (isinstance(devices, list) and len(devices) > 1)
        or devices in (-1, "-1")
        or strategy.startswith(("ddp", "fsdp", "deepspeed"))
        or int(trainer.get("num_nodes") or 1) > 1
    ):
        problems.append(
            "trainer.devices: privacy.dp trains on one device (no DDP: each rank would add its "
            "own noise and sample its own batches); use trainer.devices=1 and strategy=auto"
        )
    if int(trainer.get("accumulate_grad_batches") or 1) > 1:
        problems.append(
            "trainer.accumulate_grad_batches: not with privacy.dp (a step's batch is one Poisson "
            "sample); use 1 and a larger data.batch_size"
        )
    if trainer.get("gradient_clip_val"):
        problems.append(
            "trainer.gradient_clip_val: not with privacy.dp, which clips each sample's gradient "
            "to privacy.max_grad_norm; set it to null"
        )
    if str(trainer.get("precision")) in ("16", "16-mixed"):
        problems.append(
            "trainer.precision: 16-mixed scales the loss, and so the per-sample gradients "
            "privacy.max_grad_norm clips; use 32 or bf16-mixed with privacy.dp"
        )
    if c.get("compile") not in (False, None):
        problems.append("compile: not with privacy.dp (Opacus' per-sample hooks); set false")
    if model.get("class_weights") is not None and model.get("loss", "cross_entropy") != "bce":
        problems.append(
            "model.class_weights: with privacy.dp a weighted cross-entropy divides by the batch's "
            "weight sum, which ties samples' gradients together; use class_weights=null or loss=bce"
        )
    return problems


class FederateCfg(_Closed):
    """conf/federate.yaml's `fl` section (python -m medpipe.federate; medpipe.federated)."""

    clients: PosInt = 4
    rounds: PosInt = 10
    local_epochs: PosInt = 1
    partition: Literal["iid", "dirichlet"] = "iid"
    alpha: Annotated[float, Field(gt=0)] = 0.5
    min_samples: PosInt = 1
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    proximal_mu: Annotated[float, Field(ge=0)] = 0.01
    fraction_fit: Annotated[float, Field(gt=0, le=1)] = 1.0
    min_fit_clients: PosInt | None = None
    min_available_clients: PosInt | None = None
    seed: int | None = None
    round_timeout: Annotated[float, Field(gt=0)] = 3600
    connect_timeout: Annotated[float, Field(gt=0)] = 300
    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None


def _federate_problems(c: dict[str, Any]) -> list[str]:
    """The `fl` section, and what federated training does not combine with."""
    fl = _section(c, "fl")
    problems = pydantic_problems("fl", FederateCfg, fl)
    clients = fl.get("clients")
    for key in ("min_fit_clients", "min_available_clients"):
        value = fl.get(key)
        if isinstance(clients, int) and isinstance(value, int) and value > clients:
            problems.append(f"fl.{key}: {value} is more than fl.clients={clients}")
    if int((_section(c, "cv")).get("folds") or 0) >= 2:
        problems.append("cv.folds: cross-validation is not run federated; set cv.folds=0")
    if (_section(c, "privacy")).get("dp"):
        problems.append("privacy.dp: differentially private federated training is not supported")
    if (_section(c, "trainer")).get("fast_dev_run"):
        problems.append("trainer.fast_dev_run: not with federated training (use fl.rounds=1)")
    return problems


class SweepCfg(_Closed):
    resume: str | None = None  # a sweep parent's run id (tracking/sweep.py)


class TrainCfg(_Closed):
    """The top level of conf/train.yaml (the groups are checked one by one below)."""

    task_name: str = "train"
    task_kind: str = "auto"
    seed: int
    experiment_name: Annotated[str, Field(min_length=1)]
    run_name: str | None = None
    monitor: str = "auto"
    monitor_mode: Literal["max", "min", "auto"] = "auto"
    test_after_fit: bool = True
    log_model: bool = True
    tags: dict[str, Any] = {}
    cv: CVCfg = CVCfg()
    channels_last: bool = False
    compile: bool | str = False
    optuna_trial: int | None = None  # set by the Optuna sweeper for each trial
    threshold: str | float = "youden"  # the operating point's rule (evaluation.operating_point)
    calibration: Literal["none", "temperature"] = "temperature"
    evaluation: EvaluationCfg = EvaluationCfg()
    privacy: PrivacyCfg = PrivacyCfg()
    # the groups (checked by their own models)
    paths: dict[str, Any]
    data: dict[str, Any]
    augmentation: dict[str, Any]
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    trainer: dict[str, Any]
    logger: dict[str, Any] = {}
    callbacks: dict[str, Any] = {}
    allowed_targets: list[str] = []  # your module prefixes a `_target_` may name (targets.py)
    resume: str | None = None  # a run id, an output folder or `last` (medpipe.resuming)
    sweep: SweepCfg = SweepCfg()  # -m sweep.resume=<parent run id>: only unfinished jobs
    hydra: Any = None  # Hydra's own settings, when composed with return_hydra_config

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold_rule(cls, v: Any) -> Any:
        from medpipe.evaluation.operating_point import parse_rule

        parse_rule(str(v))  # ValueError: what is allowed
        return str(v)

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_mode(cls, v: Any) -> Any:
        if isinstance(v, bool) or v in COMPILE_MODES:
            return v
        raise ValueError(
            f"{v!r} is not a torch.compile mode; use false, true or one of {', '.join(COMPILE_MODES)}"
        )


class EvaluateDataCfg(_Closed):
    path: str | None = None
    mirror: str | None = None
    batch_size: PosInt | None = None
    num_workers: NonNegInt | None = None


class EvaluateTrainerCfg(_Closed):
    accelerator: str = "cpu"
    devices: PosInt | Literal["auto", -1] | list[NonNegInt] | str = 1


class EvaluateCfg(_Closed):
    task_name: str = "evaluate"
    ckpt_path: Annotated[str, Field(min_length=1)]
    output_dir: str
    data: EvaluateDataCfg = EvaluateDataCfg()
    trainer: EvaluateTrainerCfg = EvaluateTrainerCfg()
    paths: PathsCfg
    allowed_targets: list[str] = []  # your module prefixes a `_target_` may name (targets.py)
    hydra: Any = None


ExplainMethod = ExplainCfg.model_fields["method"].annotation  # stated once, in ExplainCfg


class ExplainDataCfg(_Closed):
    path: str | None = None
    mirror: str | None = None


class ExplainCommandCfg(_Closed):
    """conf/explain.yaml (`python -m medpipe.explain`)."""

    task_name: str = "explain"
    ckpt_path: Annotated[str, Field(min_length=1)]
    output_dir: str
    inputs: str | None = None  # a .npy of samples in the stored format; null: the data split
    split: Literal["train", "val", "test"] = "test"
    n: PosInt = 16
    method: ExplainMethod = "auto"  # type: ignore[valid-type]
    max_samples: PosInt = 256
    threshold: Annotated[float, Field(gt=0, lt=1)] | None = None  # null: the checkpoint's
    seed: int = 0
    device: str = "cpu"
    data: ExplainDataCfg = ExplainDataCfg()
    paths: PathsCfg
    allowed_targets: list[str] = []  # your module prefixes a `_target_` may name (targets.py)
    hydra: Any = None


EXPORT_FORMATS = ("onnx", "torch_export")  # python -m medpipe.export format=...


def export_format_problems(fmt: Any) -> list[str]:
    """One line for a format medpipe does not export to; TorchScript is named (deprecated)."""
    if fmt in EXPORT_FORMATS:
        return []
    if str(fmt).lower() in ("torchscript", "jit", "script", "trace"):
        return [
            f"format: {fmt} is not offered: TorchScript is deprecated in current PyTorch; use "
            "format=torch_export (a torch.export program, .pt2) or format=onnx"
        ]
    return [
        f"format: unknown export format '{fmt}'{did_you_mean(str(fmt), EXPORT_FORMATS)}; "
        f"choose one of {', '.join(EXPORT_FORMATS)}"
    ]


class ExportCfg(_Closed):
    """conf/export.yaml (`python -m medpipe.export`)."""

    task_name: str = "export"
    ckpt_path: Annotated[str, Field(min_length=1)]
    format: str = "onnx"  # one of EXPORT_FORMATS (export_format_problems says why not another)
    out: str | None = None  # null: <output_dir>/model.onnx | model.pt2
    output_dir: str
    tolerance: Annotated[float, Field(ge=0)] = 1e-5  # to the eager model (relative above 1)
    batch_size: PosInt = 256  # test samples per batch of the self-check
    data: ExplainDataCfg = ExplainDataCfg()
    paths: PathsCfg
    allowed_targets: list[str] = []  # your module prefixes a `_target_` may name (targets.py)
    hydra: Any = None


class PrepareCfg(_Closed):
    task_name: str = "prepare"
    out: str | None = None
    force: bool = False
    data: dict[str, Any]
    privacy: PrivacyCfg = PrivacyCfg()  # hash_ids and salt_file are read (the record ids)
    paths: PathsCfg
    allowed_targets: list[str] = []  # your module prefixes a `_target_` may name (targets.py)
    hydra: Any = None


class PredictCfg(_Closed):
    """conf/predict.yaml (`python -m medpipe.predict`)."""

    task_name: str = "predict"
    ckpt_path: str | None = None
    model_uri: str | None = None
    tracking_uri: str | None = None
    inputs: Annotated[str, Field(min_length=1)]
    output: Annotated[str, Field(min_length=1)]
    batch_size: PosInt = 256
    threshold: Annotated[float, Field(gt=0, lt=1)] | None = None
    aggregate: Literal["mean", "max", "first"] = "mean"
    fs: Annotated[float, Field(gt=0)] | None = None
    privacy: PrivacyCfg = PrivacyCfg()  # hash_ids and salt_file are read (the input column)
    paths: PathsCfg
    allowed_targets: list[str] = []  # your module prefixes a `_target_` may name (targets.py)
    hydra: Any = None


def _predict_problems(c: dict[str, Any]) -> list[str]:
    problems = pydantic_problems("", PredictCfg, c)
    ckpt, uri = c.get("ckpt_path"), c.get("model_uri")
    if bool(ckpt) == bool(uri):
        problems.append(
            "ckpt_path / model_uri: give exactly one: a medpipe .ckpt, or runs:/<run_id>/model "
            "or models:/<name>@<alias>"
        )
    elif ckpt:
        problems += _check_file("ckpt_path", ckpt)
    elif not str(uri).startswith(("runs:/", "models:/")):
        problems.append(
            f"model_uri: '{uri}' is not an MLflow model URI (runs:/<run_id>/model or "
            "models:/<name>@<alias>)"
        )
    return problems


class PairedBootstrapCfg(_Closed):
    n: PosInt = 2000
    seed: int = 0


class CompareCfg(_Closed):
    """conf/compare.yaml (values are checked by medpipe.evaluation.compare_runs)."""

    task_name: str = "compare"
    experiment_name: str
    sweep: str | int | float | None = None
    cv: bool = False
    sort: str = "auto"
    order: str = "auto"
    top: int | None = 10
    format: str = "table"
    params: list[str] | str | None = None
    ignore_params: list[str] = []
    metrics: list[str] | str | None = None
    tracking_uri: str | None = None
    runs: list[str] | str | None = None  # two run ids: a paired comparison on their test set
    bootstrap: PairedBootstrapCfg = PairedBootstrapCfg()
    # register: a Model Registry name for the best run's model (the attribute is named otherwise:
    # `register` is a classmethod every pydantic model inherits from ABC)
    register_as: str | None = Field(None, alias="register")
    alias: str | None = "champion"  # set on that version (null: none); medpipe.tracking.registry
    paths: PathsCfg
    hydra: Any = None


class PrivacyScanCfg(_Closed):
    """conf/privacy.yaml (`python -m medpipe.privacy scan`)."""

    task_name: str = "privacy"
    target: Annotated[str, Field(min_length=1)]
    dicom: Annotated[str, Field(min_length=1)]
    output: str | None = None
    tracking_uri: str | None = None
    paths: PathsCfg
    hydra: Any = None


class DeidentifyCfg(_Closed):
    """conf/deidentify.yaml (`python -m medpipe.deidentify`); `in` is a Python keyword."""

    task_name: str = "deidentify"
    in_: Annotated[str, Field(min_length=1)] = Field(alias="in")
    out: Annotated[str, Field(min_length=1)]
    force: bool = False
    seed: str | int | None = None
    paths: PathsCfg
    hydra: Any = None


def _privacy_problems(c: dict[str, Any]) -> list[str]:
    problems = pydantic_problems("", PrivacyScanCfg, c)
    target = c.get("target")
    if target and not str(target).startswith("runs:/") and not Path(str(target)).exists():
        problems.append(
            f"target: not found: {Path(str(target)).resolve()} (a folder, a file or runs:/<run_id>)"
        )
    return problems + _check_file("dicom", c.get("dicom"), is_dir=True)


def _deidentify_problems(c: dict[str, Any]) -> list[str]:
    problems = pydantic_problems("", DeidentifyCfg, c)
    if problems or not c.get("in") or not c.get("out"):
        return problems
    from medpipe.privacy.deidentifying import folder_problems

    return folder_problems(
        Path(str(c["in"])).expanduser(), Path(str(c["out"])).expanduser(), bool(c.get("force"))
    )


class CallbacksCfg(_Open):
    """progress_bar, plus named callbacks: each a mapping with `_target_` (instantiated)."""

    progress_bar: Literal["auto", "rich", "plain", "none"] = "auto"


# -- driver ----------------------------------------------------------------------------------------
def _fmt_value(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (nested) model at `loc`, for "did you mean"."""
    for part in loc:
        field = model.model_fields.get(str(part)) if isinstance(part, str) else None
        if field is None:
            break
        ann = field.annotation
        nested = [a for a in (getattr(ann, "__args__", None) or (ann,)) if isinstance(a, type)]
        nested = [a for a in nested if issubclass(a, BaseModel)]
        if not nested:
            break
        model = nested[0]
    return [f.alias or name for name, f in model.model_fields.items()]


def pydantic_problems(prefix: str, model: type[BaseModel], data: Any) -> list[str]:
    """One line per problem of `data` against `model`, keys prefixed with `prefix`."""
    try:
        model.model_validate(data)
    except ValidationError as err:
        out = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"] if p != "_target_") if e["loc"] else ""
            key = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "value_error" and ":" in msg.split(" ")[0]:
                sub, msg = msg.split(":", 1)
                key, msg = (f"{key}.{sub}" if key else sub), msg.strip()
            got = (
                ""
                if e["type"] in ("missing", "value_error", "extra_forbidden")
                else f" (got {_fmt_value(e.get('input'))})"
            )
            if e["type"] == "extra_forbidden":
                name = str(e["loc"][-1])
                known = [k for k in _fields_at(model, e["loc"][:-1]) if k != "hydra"]
                msg = f"unknown key{did_you_mean(name, known)}; known: {', '.join(known)}"
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


def data_problems(data: dict[str, Any]) -> list[str]:
    """The data section against its source's options, and its file and folder keys."""
    cls, problem = source_class(data.get("source"))
    if cls is None:  # the common keys still get checked; the source's own are unknown
        return [problem] + [
            p for p in pydantic_problems("data", DataOptions, data) if "unknown key" not in p
        ]
    problems = pydantic_problems("data", cls.Options, data)
    for key, is_dir in cls.path_keys.items():
        problems += _check_file(f"data.{key}", data.get(key), is_dir=is_dir)
    return problems


def _model_problems(c: dict[str, Any]) -> list[str]:
    model, data = _section(c, "model"), _section(c, "data")
    problems = pydantic_problems("model", ModelCfg, model)
    kind, accepts = data.get("kind"), model.get("accepts") or []
    if kind and accepts and kind not in accepts:
        problems.append(
            f"model: '{model.get('name')}' reads {', '.join(accepts)} data, but data "
            f"'{data.get('name')}' is {kind} data; choose a model that reads {kind}"
        )
    return problems


def _augmentation_problems(c: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    data = _section(c, "data")
    aug = _section(c, "augmentation")
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
    return problems


def _validate_train(c: dict[str, Any]) -> list[str]:
    problems = pydantic_problems("", TrainCfg, c)
    problems += _cv_problems(c)
    problems += _privacy_train_problems(c)
    problems += pydantic_problems("paths", PathsCfg, _section(c, "paths"))
    problems += data_problems(_section(c, "data"))
    data = _section(c, "data")
    if c.get("channels_last") is True and data.get("kind") not in ("image", "volume", None):
        problems.append(
            f"channels_last: a memory format for 2D images and 3D volumes; {data.get('name')} "
            f"holds {data.get('kind')} samples (set channels_last=false)"
        )
    problems += _model_problems(c)
    problems += pydantic_problems("optimizer", OptimizerCfg, _section(c, "optimizer"))
    opt_target = _section(c, "optimizer").get("_target_", "")
    if isinstance(opt_target, str) and not opt_target.startswith("torch.optim."):
        problems.append(f"optimizer._target_: '{opt_target}' is not a torch.optim optimizer")
    sched = _section(c, "scheduler")
    problems += pydantic_problems("scheduler", SchedulerCfg, sched)
    required = {"step": ("step_size", "gamma"), "multistep": ("milestones", "gamma"), "cosine": ()}
    for key in required.get(sched.get("name"), ()):
        if sched.get(key) is None:
            problems.append(f"scheduler.{key}: required by scheduler '{sched.get('name')}'")
    problems += pydantic_problems("trainer", TrainerCfg, _section(c, "trainer"))
    problems += pydantic_problems("logger", LoggerCfg, _section(c, "logger"))
    callbacks = _section(c, "callbacks")
    problems += pydantic_problems("callbacks", CallbacksCfg, callbacks)
    for name, cb in callbacks.items():
        if name not in CallbacksCfg.model_fields and not (
            isinstance(cb, dict) and "_target_" in cb
        ):
            known = list(CallbacksCfg.model_fields) + [
                k for k, v in callbacks.items() if isinstance(v, dict)
            ]
            problems.append(
                f"callbacks.{name}: unknown key{did_you_mean(name, known)}; a callback is a "
                "mapping with _target_ (e.g. +callbacks.NAME._target_=package.Class)"
            )
    problems += pydantic_problems("augmentation", AugmentationCfg, _section(c, "augmentation"))
    problems += _augmentation_problems(c)
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


def resolve(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The composed config as plain containers, interpolations resolved: once per run."""
    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception as err:  # noqa: BLE001 - interpolation errors name the key themselves
        raise ConfigError(f"cannot resolve the config: {err}".splitlines()[0]) from None


def validate(cfg: DictConfig | dict[str, Any], config_name: str = "train") -> dict[str, Any]:
    """The resolved config; raise ConfigError listing every problem (nothing heavy imported)."""
    c = resolve(cfg)
    # First, before any check that imports a module a config names: the allow-list of import paths
    # (medpipe.targets); a refused `_target_` is never imported, located or instantiated.
    extra = c.get("allowed_targets")
    refused = extension_problems(extra)
    set_allowed([] if refused else extra)
    if config_name in ("train", "prepare"):
        refused += target_problems(c if config_name == "train" else {"data": _section(c, "data")})
    if config_name == "train":
        problems = _validate_train(c) + _multirun_problems(c)
    elif config_name == "evaluate":
        problems = pydantic_problems("", EvaluateCfg, c)
        problems += _check_file("ckpt_path", c.get("ckpt_path"))
        data = _section(c, "data")
        problems += [
            p
            for k in ("path", "mirror")
            for p in _check_file(f"data.{k}", data.get(k), k == "mirror")
        ]
    elif config_name == "explain":
        problems = pydantic_problems("", ExplainCommandCfg, c)
        problems += _check_file("ckpt_path", c.get("ckpt_path"))
        problems += _check_file("inputs", c.get("inputs"))
        data = _section(c, "data")
        problems += [
            p
            for k in ("path", "mirror")
            for p in _check_file(f"data.{k}", data.get(k), k == "mirror")
        ]
    elif config_name == "export":
        problems = pydantic_problems("", ExportCfg, c)
        problems += export_format_problems(c.get("format"))
        problems += _check_file("ckpt_path", c.get("ckpt_path"))
        data = _section(c, "data")
        problems += [
            p
            for k in ("path", "mirror")
            for p in _check_file(f"data.{k}", data.get(k), k == "mirror")
        ]
    elif config_name == "prepare":
        problems = pydantic_problems("", PrepareCfg, c) + data_problems(_section(c, "data"))
    elif config_name == "predict":
        problems = _predict_problems(c)
    elif config_name == "compare":
        problems = pydantic_problems("", CompareCfg, c)
    elif config_name == "privacy":
        problems = _privacy_problems(c)
    elif config_name == "deidentify":
        problems = _deidentify_problems(c)
    elif config_name == "federate":  # the training config plus its `fl` section
        refused += target_problems(c)
        train = {k: v for k, v in c.items() if k != "fl"}
        problems = _validate_train(train) + _multirun_problems(train) + _federate_problems(c)
    else:
        raise ValueError(f"no checks for config '{config_name}'")
    said = {line.split(":", 1)[0] for line in refused}  # a refused key: that one line only
    problems = list(
        dict.fromkeys(refused + [p for p in problems if p.split(":", 1)[0] not in said])
    )
    if problems:
        raise ConfigError(problems)
    return c
