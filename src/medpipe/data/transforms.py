"""Per-sample augmentation (training split only) and on-device normalisation.

`augmentation.train` lists transforms of one library: albumentations (2D images, channels last
internally) or MONAI array transforms (`monai.transforms.*`: any channels-first sample, image
(C, H, W), volume (C, D, H, W), frames (C, T, H, W), signal (C, T)). `build_transforms` turns the
list into one function on one sample array.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from medpipe.data.augment_ops import LIBRARY_KINDS, op_library
from medpipe.errors import ConfigError
from medpipe.targets import ensure_allowed

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations contacts PyPI otherwise


Transform = Callable[[np.ndarray], np.ndarray]


def build_transforms(
    ops: Sequence[dict[str, Any]],
    seed: int,
    kind: str = "image",
    sample_shape: Sequence[int] | None = None,
) -> Transform | None:
    """Compose the `augmentation.train` list into a function on one channels-first sample.

    albumentations entries (kind image only) or `monai.transforms` entries, not both in one list.
    The result keeps the sample's shape and dtype. `sample_shape` (channels first), when given, runs
    a MONAI list once on a blank sample so that an argument that does not fit the data (a spatial
    axis a signal lacks, ...) is reported now, naming the entry, instead of inside a worker.
    """
    if not ops:
        return None
    libs = []
    for i, op in enumerate(ops):
        lib = op_library(op)
        if lib is None:
            raise ConfigError(
                f"augmentation.train[{i}]._target_: must name an albumentations or "
                f"monai.transforms transform, got {op.get('_target_')!r}"
            )
        if libs and lib != libs[0]:
            raise ConfigError(
                f"augmentation.train[{i}] ({op.get('_target_')}): {lib} mixed with {libs[0]} "
                f"(augmentation.train[0]); one augmentation list uses one library"
            )
        libs.append(lib)
        if kind not in LIBRARY_KINDS[lib]:
            raise ConfigError(
                f"augmentation.train[{i}] ({op.get('_target_')}): {lib} transforms do not take "
                f"{kind} data; use monai.transforms.* for {kind} samples"
            )
    if libs[0] == "albumentations":
        return build_albumentations(ops, seed)
    return build_monai(ops, seed, sample_shape)


class SignalChannelsOnly:
    """A per-sample transform applied to every channel but the last, the observation mask of
    `data.preprocess.missing=zero_and_mask`: noise, scaling or wander added to the mask would make
    observed samples look filled and gaps look observed."""

    def __init__(self, transform: Callable[[np.ndarray], np.ndarray]):
        self.transform = transform

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([self.transform(x[:-1]), x[-1:]]).astype(x.dtype, copy=False)


def has_mask_channel(source: dict[str, Any] | None) -> bool:
    """Whether processed signal data carries an observation mask as its last channel."""
    return ((source or {}).get("preprocess") or {}).get("missing") == "zero_and_mask"


def build_albumentations(
    ops: Sequence[dict[str, Any]], seed: int
) -> Callable[[np.ndarray], np.ndarray] | None:
    """Compose the `augmentation.train` list into a function on one (C, H, W) uint8 image."""
    if not ops:
        return None
    import albumentations as A

    compose = A.Compose(instantiate_albumentations(ops), seed=seed)

    def apply(image_chw: np.ndarray) -> np.ndarray:
        out = compose(image=np.ascontiguousarray(image_chw.transpose(1, 2, 0)))["image"]
        if out.ndim == 2:
            out = out[:, :, None]
        return out.transpose(2, 0, 1)

    return apply


def instantiate_albumentations(ops: Sequence[dict[str, Any]]) -> list:
    """The albumentations transforms of the `augmentation.train` entries, instantiated by Hydra and
    validated by albumentations; a wrong class or argument becomes a ConfigError naming the entry."""
    from hydra.utils import instantiate

    transforms = []
    for i, op in enumerate(ops):
        where = f"augmentation.train[{i}] ({op.get('_target_')})"
        ensure_allowed(op, f"augmentation.train[{i}]")  # nothing outside the allow-list is built
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                transforms.append(instantiate(op, _convert_="all"))
        except Exception as err:  # noqa: BLE001 - any failure here is a config problem
            raise ConfigError(f"{where}: {_first_line(err)}") from None
        # albumentations only warns about unknown arguments; a typo must not silently do nothing.
        for w in caught:
            if "not valid for transform" in str(w.message):
                raise ConfigError(f"{where}: {w.message}")
    return transforms


def _first_line(err: BaseException) -> str:
    cause = err.__cause__ or err
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


def _worker_key() -> int:
    info = torch.utils.data.get_worker_info()
    return -1 if info is None else int(info.id)


def _cast_like(out: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the sample's stored dtype; integer types are rounded and clipped to their range."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(dtype)
    return out.astype(dtype, copy=False)


def _monai_classes():
    """Two small MONAI wrappers, defined on first use so that importing this module stays light."""
    from monai.transforms import Randomizable, Transform
    from monai.utils import MAX_SEED

    class RandApply(Randomizable, Transform):
        """Apply a transform with probability p (for MONAI transforms without a `prob`)."""

        def __init__(self, transform: Callable, p: float):
            self.transform, self.p = transform, float(p)

        def set_random_state(self, seed=None, state=None):
            super().set_random_state(seed=seed, state=state)
            if isinstance(self.transform, Randomizable):
                self.transform.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
            return self

        def randomize(self, data: Any = None) -> None:
            self._do = self.R.rand() < self.p

        def __call__(self, x):
            self.randomize()
            return self.transform(x) if self._do else x

    class TimeShift(Randomizable, Transform):
        """monai's SignalRandShift, shifting the time axis only.

        MONAI 1.6 passes one scalar shift to scipy.ndimage.shift, which shifts the channel axis too:
        a (1, T) signal becomes all `filling` with mode='constant', and a multi-lead signal has its
        leads rotated with mode='wrap'. This draws the same magnitude and shifts only the last axis.
        """

        def __init__(self, transform: Any):
            self.transform = transform

        def set_random_state(self, seed=None, state=None):
            super().set_random_state(seed=seed, state=state)
            self.transform.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
            return self

        def randomize(self, data: Any = None) -> None:
            t = self.transform
            self.magnitude = t.R.uniform(low=t.boundaries[0], high=t.boundaries[1])

        def __call__(self, x):
            from monai.utils import convert_to_numpy
            from scipy.ndimage import shift

            self.randomize()
            sig = convert_to_numpy(x)
            steps = round(self.magnitude * sig.shape[-1])
            t = self.transform
            offsets = (0,) * (sig.ndim - 1) + (steps,)
            return shift(sig, offsets, mode=t.mode, cval=t.filling)

    return RandApply, TimeShift


class MonaiTransform:
    """A seeded MONAI Compose applied to one channels-first numpy sample (float32 inside).

    Every call reseeds the Compose (and, inside a forked torch generator, torch, which some MONAI
    signal transforms draw from) from a stream of its own per process: seed and DataLoader worker
    id, so workers draw different augmentations and a run is reproducible.
    """

    def __init__(self, compose: Any, seed: int):
        self.compose, self.seed = compose, int(seed)
        self._key: int | None = None
        self._rng: np.random.Generator | None = None

    def _next_seed(self) -> int:
        key = _worker_key()
        if self._rng is None or key != self._key:
            self._key, self._rng = key, np.random.default_rng([self.seed, key + 1])
        return int(self._rng.integers(2**31 - 1))

    def raw(self, x: np.ndarray) -> np.ndarray:
        """The composed output as float numpy, before the cast back to x's dtype."""
        from monai.utils import convert_to_numpy

        s = self._next_seed()
        self.compose.set_random_state(seed=s)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            out = self.compose(np.asarray(x, dtype=np.float32))
        return np.asarray(convert_to_numpy(out))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.raw(x)
        if out.shape != x.shape:
            raise ConfigError(
                f"augmentation.train: the MONAI transforms change the sample shape from "
                f"{tuple(x.shape)} to {tuple(out.shape)}; samples must keep their shape"
            )
        return _cast_like(out, x.dtype)


def build_monai(
    ops: Sequence[dict[str, Any]], seed: int, sample_shape: Sequence[int] | None = None
) -> MonaiTransform | None:
    """Instantiate `monai.transforms` array transforms (a `p` key: apply with that probability)."""
    if not ops:
        return None
    from hydra.utils import instantiate
    from monai.transforms import Compose, MapTransform, SignalRandShift

    rand_apply, time_shift = _monai_classes()
    transforms = []
    for i, op in enumerate(ops):
        where = f"augmentation.train[{i}] ({op.get('_target_')})"
        op = dict(op)
        p = op.pop("p", None)
        ensure_allowed(op, f"augmentation.train[{i}]")  # nothing outside the allow-list is built
        try:
            t = instantiate(op, _convert_="all")
        except Exception as err:  # noqa: BLE001 - any failure here is a config problem
            raise ConfigError(f"{where}: {_first_line(err)}") from None
        if isinstance(t, MapTransform):
            raise ConfigError(
                f"{where}: a dictionary transform; use the array version "
                f"(monai.transforms.{type(t).__name__.removesuffix('d')}) without keys"
            )
        if not callable(t):
            raise ConfigError(f"{where}: not a transform (got {type(t).__name__})")
        if isinstance(t, SignalRandShift):
            t = time_shift(t)
        if p is not None:
            t = rand_apply(t, p)
        transforms.append(t)
    if sample_shape is not None:
        _trial(transforms, ops, seed, tuple(sample_shape))
    return MonaiTransform(Compose(transforms), seed)


def _trial(transforms: list, ops: Sequence[dict[str, Any]], seed: int, shape: tuple) -> None:
    """Run each transform once, forced on (prob 1), on a blank sample of the data's shape."""
    import copy

    from monai.transforms import Compose

    blank = np.zeros(shape, np.float32)
    for i, t in enumerate(transforms):
        where = f"augmentation.train[{i}] ({ops[i].get('_target_')})"
        trial = copy.deepcopy(t)
        inner = trial
        while inner is not None:
            if hasattr(inner, "prob"):
                inner.prob = 1.0
            if hasattr(inner, "p"):
                inner.p = 1.0
            inner = getattr(inner, "transform", None)
        try:
            out = MonaiTransform(Compose([trial]), seed).raw(blank)
        except Exception as err:  # noqa: BLE001 - the entry does not fit this data
            raise ConfigError(
                f"{where}: fails on a sample of shape {shape}: {_first_line(err)}"
            ) from None
        if out.shape != shape:
            raise ConfigError(
                f"{where}: changes the sample shape from {shape} to {out.shape}; samples must "
                "keep their shape"
            )


class Normalizer(torch.nn.Module):
    """Map stored intensities to network input: x / scale, then per-channel z-score if asked."""

    def __init__(
        self,
        mode: str,
        scale: float,
        mean: Sequence[float],
        std: Sequence[float],
        spatial_dims: int,
    ):
        super().__init__()
        shape = (1, -1) + (1,) * spatial_dims
        self.mode = mode
        self.scale = float(scale)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.mode == "none":
            return x
        x = x / self.scale
        if self.mode == "zscore":
            x = (x - self.mean) / self.std
        return x
