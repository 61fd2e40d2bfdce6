"""A trained GAN's generator as a sampler: `load_generator(ref)` reads a medpipe GAN checkpoint
(a `.ckpt` path or `runs:/<run_id>`) and returns a `GeneratorBundle` whose `sample(n_per_class,
seed)` gives labelled images on the data's stored scale and dtype. The data sources that generate
or mix in synthetic samples read it; so does the GAN task kind, which exports `GeneratorModel`.
Nothing here trains (medpipe.tasks.gan does)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medpipe.checkpoints import load_checkpoint
from medpipe.data.processed import DatasetMeta, file_digest
from medpipe.errors import DataError
from medpipe.models.nets.registry import net_class


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Batch norm with its running statistics, no autograd; the module's mode restored after."""
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was)


def is_integer_dtype(dtype: str) -> bool:
    return np.issubdtype(np.dtype(dtype), np.integer)


class GeneratorModel(nn.Module):
    """(noise, class) -> images (N, C, H, W) on the stored scale, float32 (whole values for
    integer data). What is exported to MLflow and what `GeneratorBundle.sample` runs.

    `model(noise, classes)`, or one float32 tensor (N, 1 + z_dim): column 0 the class index,
    the rest the noise. The exported MLflow model takes only the latter (MLflow passes one
    array, and saves the module as a torch.export program traced with one input)."""

    def __init__(self, generator: nn.Module, low: float, high: float, integer: bool, z_dim: int):
        super().__init__()
        self.generator, self.integer, self.z_dim = generator, bool(integer), int(z_dim)
        self.register_buffer("low", torch.tensor(float(low)))
        self.register_buffer("high", torch.tensor(float(high)))

    def forward(self, z: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        if classes is None:
            classes, z = z[:, 0].round(), z[:, 1:]
        t = self.generator(z.float(), classes.long())
        x = self.low + (t + 1) * 0.5 * (self.high - self.low)
        return x.round().clamp(self.low, self.high) if self.integer else x

    def generate(
        self, counts: list[int], seed: int, batch_size: int = 512
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x float32 (N, C, H, W) on the CPU, y int64 (N,)): counts[c] samples of class c,
        class-major, in eval mode; the noise is drawn on the CPU from `seed` up front, so the
        same seed and counts give the same samples on any device."""
        y = torch.cat(
            [torch.full((int(n),), c, dtype=torch.long) for c, n in enumerate(counts)]
            or [torch.zeros(0, dtype=torch.long)]
        )
        z = torch.randn(len(y), self.z_dim, generator=torch.Generator().manual_seed(int(seed)))
        device = self.low.device
        parts = []
        with eval_mode(self):
            for i in range(0, len(y), batch_size):
                batch = slice(i, i + batch_size)
                parts.append(self(z[batch].to(device), y[batch].to(device)).float().cpu())
        return (torch.cat(parts) if parts else torch.zeros(0)), y


# -- the sampling API ------------------------------------------------------------------------------
@dataclass
class GeneratorBundle:
    """A trained generator and what its samples are: `classes` (index -> name), `sample_shape`
    (C, H, W), `dtype` and `stored_range` of the data it learnt (its samples come back in that
    scale and dtype), `z_dim`, the checkpoint's `sha256` and where it came from (`ref`); `meta`:
    the processed data's metadata it was trained on."""

    model: GeneratorModel
    classes: list[str]
    sample_shape: tuple[int, ...]
    dtype: np.dtype
    stored_range: tuple[float, float]
    z_dim: int
    sha256: str
    ref: str
    meta: DatasetMeta

    def sample(
        self, n_per_class: Mapping[int, int] | int, seed: int, batch_size: int = 512
    ) -> tuple[np.ndarray, np.ndarray]:
        """(x (N, C, H, W) in the data's stored scale and dtype, y int64 (N,)), class-major in
        ascending class index. `n_per_class`: {class index: count} or one count for every class.
        The same seed and counts give the same samples (noise drawn on the CPU up front)."""
        k = len(self.classes)
        if isinstance(n_per_class, Mapping):
            bad = [c for c in n_per_class if not 0 <= int(c) < k]
            if bad:
                raise ValueError(f"class indices {bad} out of range: the generator has {k} classes")
            counts = {int(c): int(n) for c, n in n_per_class.items()}
        else:
            counts = dict.fromkeys(range(k), int(n_per_class))
        if any(n < 0 for n in counts.values()):
            raise ValueError(f"negative sample counts: {counts}")
        x_t, y = self.model.generate([counts.get(c, 0) for c in range(k)], seed, batch_size)
        x = x_t.numpy() if len(y) else np.zeros((0, *self.sample_shape), np.float32)
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            x = np.clip(np.rint(x), info.min, info.max)
        return x.astype(self.dtype), y.numpy()


def checkpoint_path(ref: str, tracking_uri: str | None, folder: Path) -> Path:
    """A local checkpoint for `ref`: a path, or `runs:/<run_id>[/<artifact path>]` (default
    artifact checkpoints/best.ckpt) downloaded into `folder`."""
    if not ref.startswith("runs:/"):
        return Path(ref).expanduser()
    run_id, _, artifact = ref.removeprefix("runs:/").strip("/").partition("/")
    import mlflow
    from mlflow.exceptions import MlflowException

    from medpipe.paths import project_root
    from medpipe.tracking.store import tracking_uri as default_uri

    uri = default_uri(tracking_uri, str(project_root() / "logs" / "mlflow"))
    artifact = artifact or "checkpoints/best.ckpt"
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact, dst_path=str(folder), tracking_uri=uri
        )
    except (MlflowException, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{ref}: cannot fetch {artifact} from {uri} ({first})") from None
    return Path(local)


def load_generator(
    ref: str, tracking_uri: str | None = None, device: str = "cpu"
) -> GeneratorBundle:
    """The generator of a medpipe GAN checkpoint (`.ckpt` path) or of a run (`runs:/<run_id>`:
    its logged checkpoints/best.ckpt; `tracking_uri`: null = $MLFLOW_TRACKING_URI, else the
    project's store under logs/mlflow). The moving average when the run kept one.

    Raises DataError (one line naming the file) when the checkpoint is not a GAN's."""
    with tempfile.TemporaryDirectory(prefix="medpipe-gan-") as tmp:
        path = checkpoint_path(str(ref), tracking_uri, Path(tmp))
        ckpt = load_checkpoint(path)
        sha256 = file_digest(path)
    med = ckpt["medpipe"]
    if med.get("gan") is None:
        cfg, task = med.get("config") or {}, (med.get("meta") or {}).get("task", "?")
        raise DataError(
            f"{ref}: not a GAN checkpoint but a model={(cfg.get('model') or {}).get('name', '?')} "
            f"one (task_kind {cfg.get('task_kind', 'auto')}, {task} data); give the best.ckpt of "
            "a task_kind=gan run"
        )
    meta = DatasetMeta.from_dict(med["meta"])
    net_cfg = med["config"]["model"]["net"]
    cls, problem = net_class(net_cfg["_target_"])
    if cls is None:
        raise DataError(f"{ref}: {problem}")
    net = cls(
        in_channels=meta.channels,
        num_outputs=len(meta.classes),  # as GANTask.num_outputs
        spatial_shape=meta.sample_shape[1:],
        **{k: v for k, v in net_cfg.items() if k != "_target_"},
    )
    state = ckpt["state_dict"]
    prefix = (
        "generator_ema." if any(k.startswith("generator_ema.") for k in state) else "net.generator."
    )
    net.generator.load_state_dict(
        {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    )
    dtype = str(med["gan"]["stored_dtype"])
    low, high = float(state["stored_low"]), float(state["stored_high"])
    model = (
        GeneratorModel(net.generator, low, high, is_integer_dtype(dtype), net.z_dim)
        .to(device)
        .eval()
    )
    return GeneratorBundle(
        model=model,
        classes=[str(c) for c in meta.classes],
        sample_shape=tuple(int(d) for d in meta.sample_shape),
        dtype=np.dtype(dtype),
        stored_range=(low, high),
        z_dim=int(net.z_dim),
        sha256=sha256,
        ref=str(ref),
        meta=meta,
    )
