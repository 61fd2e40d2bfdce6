"""A trained GAN as a source of labelled samples for the data side: the generator behind a data
config's `generator` (data=gan_samples) or `synthetic.generator` (mixing into a training split),
checked against the data it is meant for, and the seeds and counts of what it generates. Read by
medpipe.data.prepare and medpipe.data.sources.gan_samples."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medpipe.data.sources.base import generator_ref_problem
from medpipe.errors import DataError

if TYPE_CHECKING:
    from medpipe.models.generator import GeneratorBundle

# independent noise streams of one `seed`: the generated training and validation splits, and the
# samples mixed into real training data (medpipe.data.prepare)
TRAIN_STREAM, VAL_STREAM, MIX_STREAM = 0, 1, 2


def sample_seed(seed: int, stream: int) -> int:
    """The torch seed of one noise stream of `seed` (streams do not overlap)."""
    return int(np.random.SeedSequence([int(seed), int(stream)]).generate_state(1)[0])


def apportion(total: int, weights: list[float]) -> list[int]:
    """`total` split into whole counts in proportion to `weights` (largest remainders, ties to the
    lower class index), each class at least one when total allows."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum() if w.sum() > 0 else np.full(len(w), 1.0 / len(w))
    exact = total * w
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    for c in np.flatnonzero(counts == 0):  # a class with no sample would vanish from the split
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[c] += 1
    return [int(v) for v in counts]


@dataclass
class Generator:
    """A generator checkpoint read for sampling: the bundle (medpipe.tasks.gan), the data config
    its GAN was trained with, and how the user named it (`ref`) under which config key."""

    bundle: GeneratorBundle
    data_cfg: dict[str, Any]
    ref: str
    key: str

    @property
    def sha256(self) -> str:
        return self.bundle.sha256

    def sample(self, counts: list[int], seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        """counts[c] samples of class c, class-major, from noise stream `stream` of `seed`."""
        return self.bundle.sample(dict(enumerate(counts)), seed=sample_seed(seed, stream))

    def misfit(self, name: str, task: str, classes: list[str], x: np.ndarray) -> str | None:
        """Why this generator's samples cannot join data `name` (task, classes, samples `x`), or
        None: the same classes in the same order, sample shape and dtype."""
        b = self.bundle
        where = f"{self.key}: {self.ref}"
        if task not in ("binary", "multiclass"):
            return (
                f"{where}: {name} is {task} data; generated samples join class-labelled data only"
            )
        if list(b.classes) != [str(c) for c in classes]:
            return (
                f"{where} makes classes {list(b.classes)}, data '{name}' has {list(classes)}; "
                "use a generator trained on this data's classes"
            )
        if tuple(b.sample_shape) != tuple(x.shape[1:]):
            return (
                f"{where} makes samples of shape {tuple(b.sample_shape)}, data '{name}' has "
                f"{tuple(x.shape[1:])}; use a generator trained on images of this size"
            )
        if np.dtype(b.dtype) != x.dtype:
            return f"{where} makes {b.dtype} samples, data '{name}' stores {x.dtype}"
        return None


def open_generator(ref: str, key: str, tracking_uri: str | None = None) -> Generator:
    """Read the GAN checkpoint `ref` (a .ckpt file or `runs:/<run_id>[/<artifact path>]`, fetched
    from `tracking_uri`) for sampling. Every problem is one DataError line naming `key` and `ref`:
    no such file or run, not a checkpoint, not a GAN's."""
    from medpipe.checkpoints import load_checkpoint
    from medpipe.models.generator import checkpoint_path, load_generator

    if ref.startswith("runs:/"):  # one fetch of one file: its progress bar is noise
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        if problem := generator_ref_problem(ref):
            raise DataError(problem)
        with tempfile.TemporaryDirectory(prefix="medpipe-generator-") as tmp:
            path = checkpoint_path(ref, tracking_uri, Path(tmp))
            med = load_checkpoint(path)["medpipe"]
            if med.get("gan") is None:  # said here with the key; load_generator names the file
                cfg = med.get("config") or {}
                raise DataError(
                    f"{ref}: not a GAN checkpoint (task kind {cfg.get('task_kind', 'auto')}, "
                    f"model {(cfg.get('model') or {}).get('name', '?')}); give the best.ckpt or "
                    "runs:/<run_id> of a task_kind=gan run"
                )
            bundle = load_generator(str(path))
    except DataError as err:
        raise DataError(f"{key}: {err}") from None
    bundle.ref = ref
    data_cfg = (med.get("config") or {}).get("data") or {}
    return Generator(bundle, dict(data_cfg), ref, key)
