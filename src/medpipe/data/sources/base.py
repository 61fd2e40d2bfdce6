"""What a source provides: its options, a description to fingerprint, and the splits with their
labels; and the source registry (`@register_source("name")`), which the config check, the data
folder check and preparation read. No torch here: data errors come before torch is imported."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from medpipe.data.processed import SPLITS, Split
from medpipe.registry import Registry, locate
from medpipe.targets import RefusedTarget

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
DATA_KINDS = ("image", "volume", "signal", "frames")
# data keys that say how a file is read into a sample (folder sources: intensity rule and window;
# signal sources: preprocessing, channel choice, table layout); a source has those it reads
READING_KEYS = (
    "intensity",
    "window",
    "canonical",
    "preprocess",
    "channel",
    "label_column",
    "delimiter",
    "header",
)


def generator_ref_problem(ref: str) -> str | None:
    """Why `ref` names no generator checkpoint (a file, or `runs:/<run_id>[/<artifact path>]`),
    or None. What the checkpoint holds is checked when it is read (sources/gan_samples.py)."""
    if ref in ("", "???"):  # ???: a YAML's mandatory value left unset
        return "missing; give a GAN checkpoint (.ckpt) or runs:/<run_id>"
    if ref.startswith("runs:/"):
        return None if ref.removeprefix("runs:/").strip("/") else f"'{ref}' names no run"
    path = Path(ref).expanduser()
    return None if path.is_file() else f"file not found: {path.resolve()}"


class SyntheticMixOptions(BaseModel):
    """data.synthetic: samples of a trained class-conditional GAN appended to the real training
    split, never to val or test (medpipe.data.prepare). Off while `generator` is null."""

    model_config = ConfigDict(extra="forbid")

    generator: str | None = None  # a GAN's .ckpt or runs:/<run_id>[/<artifact path>]
    per_class: PosInt | None = None  # this many generated samples of every class
    balance: bool = False  # top every class up to the largest class's real count
    seed: int = 0  # noise of the generated samples

    @model_validator(mode="after")
    def _check_mix(self):
        if self.generator is None:
            if self.per_class is not None or self.balance:
                raise ValueError(
                    "generator: required with per_class or balance (a GAN checkpoint or "
                    "runs:/<run_id>)"
                )
            return self
        if problem := generator_ref_problem(self.generator):
            raise ValueError(f"generator: {problem}")
        if self.per_class is not None and self.balance:
            raise ValueError("balance: give either per_class=N or balance=true, not both")
        if self.per_class is None and not self.balance:
            raise ValueError("per_class: say how many to add: per_class=N or balance=true")
        return self


class DataOptions(BaseModel):
    """The keys every data config has (conf/data/*.yaml); a source's `Options` extends it with its
    own. Closed: a key no source reads is an error."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    source: str
    kind: Literal["image", "volume", "signal", "frames"]
    normalize: Literal["unit", "zscore", "none"] = "zscore"
    batch_size: PosInt
    loader: Literal["auto", "memory", "workers"] = "auto"
    # auto keeps the arrays on the training device only when they fit in this share of its free
    # memory (host RAM for a CPU, the GPU's own memory); memory fails up front when they do not
    memory_share: Annotated[float, Field(gt=0, le=1)] = 0.5
    num_workers: NonNegInt = 0
    pin_memory: bool = False
    # the training split only, applied by medpipe.data.prepare after the source has loaded it:
    # a seeded, stratified fraction of the real rows (null or 1: all), then generated samples
    train_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    train_fraction_seed: int = 0
    synthetic: SyntheticMixOptions | None = None

    @model_validator(mode="after")
    def _check_training_mix(self):
        if self.synthetic is not None and self.synthetic.generator and self.kind != "image":
            raise ValueError(
                f"synthetic: generated samples are mixed into image data only ({self.name} is "
                f"{self.kind} data)"
            )
        return self


@dataclass
class SourceData:
    splits: dict[str, Split]
    task: str
    kind: str
    classes: list[str]
    scale: float = 255.0
    info: dict[str, Any] = field(default_factory=dict)  # provenance: file, sha256, url, ...
    score_classes: list[str] = field(default_factory=list)  # classes a challenge F1 averages
    # per-channel (mean, std) of the training split, from a source that streams its samples to
    # files (processed.ChannelSums) and so never holds the split; None: computed from the arrays
    stats: tuple[list[float], list[float]] | None = None


class Source:
    """Base class; subclasses read their own keys of the data config, declared in `Options`.

    `path_keys`: the option keys naming input files (False) or folders (True), checked to exist
    before anything runs.
    """

    Options: ClassVar[type[DataOptions]] = DataOptions
    path_keys: ClassVar[dict[str, bool]] = {}
    name: ClassVar[str] = ""
    # set by medpipe.data.prepare, for sources that read other prepared data or MLflow runs
    processed_dir: str | None = None
    # set by medpipe.data.prepare: an empty folder a streaming source writes its `<split>_<key>.npy`
    # files into (processed.NpyWriter); they are moved into the processed folder, not copied
    staging_dir: str | None = None
    tracking_uri: str | None = None  # the store a runs:/ reference is read from
    # set by medpipe.data.prepare under privacy.hash_ids=true (medpipe.privacy.hashing.IdHasher):
    # prepare hashes the record ids itself; a source uses it for the names it logs
    hasher: Callable[[str], str] | None = None
    privacy: dict[str, Any] | None = None  # the config's privacy section (set by prepare)

    def shown(self, name: Any) -> str:
        """A file or record name as a log line may show it: hashed under privacy.hash_ids (error
        messages keep the real name: the user has to find the file)."""
        return str(name) if self.hasher is None else self.hasher(str(name))

    def __init__(self, cfg: dict[str, Any], raw_dir: str):
        self.cfg = cfg  # checked against Options by medpipe.config before any source is built
        self.raw_dir = raw_dir

    def describe(self) -> dict[str, Any]:
        """Everything that determines the processed output (options and input file hashes)."""
        raise NotImplementedError

    def reading(self) -> dict[str, Any]:
        """How one new input file must be read to match this data (medpipe.predicting): the
        source, the kind, the data keys of READING_KEYS this config has and, for signals, the
        sampling rate of its records (None where each record's header gives it)."""
        out: dict[str, Any] = {"source": self.name, "kind": self.cfg.get("kind")}
        out.update({k: self.cfg[k] for k in READING_KEYS if k in self.cfg})
        if self.cfg.get("kind") == "signal":
            native = getattr(self.Options.model_construct(**self.cfg), "_native_fs", None)
            out["fs"] = native() if native is not None else self.cfg.get("fs")
        return out

    def load(self) -> SourceData:
        raise NotImplementedError


def generated_splits(
    cfg: dict[str, Any], make: Callable[[int, np.random.Generator], tuple[np.ndarray, ...]]
) -> dict[str, Split]:
    """Splits of a seeded generator: `make(n, rng)` -> (x, y), or (x, y, mask) for a generator
    that knows where its positives' evidence lies (see processed.Split), for n_train, n_val and
    n_test samples. One independent random stream per split, so changing n_train leaves val and
    test unchanged."""
    splits = {}
    for i, split in enumerate(SPLITS):
        x, y, *mask = make(int(cfg[f"n_{split}"]), np.random.default_rng([int(cfg["seed"]), i]))
        splits[split] = Split(x, y, mask=mask[0] if mask else None)
    return splits


SOURCES: Registry[type[Source]] = Registry("data source", "medpipe.data.sources")


def register_source(name: str):
    """Class decorator: `data.source: <name>` selects the class."""

    def add(cls: type[Source]) -> type[Source]:
        if not (isinstance(cls, type) and issubclass(cls, Source)):
            raise TypeError(f"{cls!r}: a data source subclasses medpipe.data.sources.base.Source")
        cls.name = name
        return SOURCES.register(name, cls)

    return add


def source_class(name: Any) -> tuple[type[Source] | None, str | None]:
    """(class, None) for a registered source name, or an import path to a registered Source
    subclass in your own module (importing it registers it); else (None, the problem)."""
    if not isinstance(name, str) or not name:
        return None, "data.source: missing; name a data source"
    cls = SOURCES.get(name)
    if cls is None and "." in name:
        try:
            cls = locate(name)
        except RefusedTarget as err:
            return None, f"data.source: {err}"
        except (ImportError, AttributeError) as err:
            return None, f"data.source: cannot import '{name}' ({type(err).__name__}: {err})"
        if cls not in [c for _, c in SOURCES.items()]:
            return None, f"data.source: '{name}' is not a registered data source (@register_source)"
    if cls is None:
        return None, SOURCES.unknown("data.source", name)
    return cls, None
