"""How good a conditional GAN's samples are, without downloading anything.

FID and KID need an image feature extractor; the usual Inception weights are fetched at run time,
which these machines cannot do. Here the features are those of a medpipe classifier trained on the
same real data: the input of its last linear layer (for SimpleCNN the dense layer's activations,
for a ResNet the pooled features). The classifier is a checkpoint of `medpipe.train` on the same
data (`model.eval.feature_ckpt`) or, when none is given, a small CNN trained first on the training
split (`train_feature_classifier`). The numbers are comparable within one feature extractor only,
never with published Inception FIDs, so each comes with its floor: the same distance between the
real training and test images.

- `frechet_distance`: FID, ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2), with the matrix
  square root's trace from the eigenvalues of S_a^1/2 S_b S_a^1/2 (symmetric, so no complex
  round-off as with scipy.linalg.sqrtm of the non-symmetric product).
- `kernel_distance`: KID, the unbiased MMD^2 with the cubic polynomial kernel
  (x.y / d + 1)^3, averaged over random subsets (Binkowski et al. 2018); about 0 for samples of
  one distribution, negative values included.
- `memorised_share`: the share of generated images whose nearest training image (Euclidean, in
  pixel space on x / scale) is at most as far as the 5th percentile of the test images' nearest
  training distances. Pixel space, because a copy of a patient's image is a copy pixel for pixel,
  while in a classifier's feature space different patients with the same finding lie close
  together. Fresh samples of the real distribution score about 0.05 by construction; copies 1.
  Pixel distances have a blind side: a smooth image near the data's mean lies close to many
  training images without copying any (on noisy synthetic textures such samples scored 0.59), so
  a high share is a reason to look at the samples, not yet proof of copying.
- `class_accuracy`: how often the classifier assigns a generated image to the class it was
  generated for (per class, and their mean): does the class conditioning work.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medpipe.data.processed import DatasetMeta
from medpipe.data.transforms import Normalizer
from medpipe.errors import DataError

if TYPE_CHECKING:
    from medpipe.evaluation.settings import Evaluation

MEMORISED_PERCENTILE = 5.0
# the small CNN trained for the features when no classifier checkpoint is given
FEATURE_NET = {
    "_target_": "medpipe.models.nets.SimpleCNN",
    "channels": [32, 64, 128],
    "hidden": 128,
    "dropout": 0.3,
    "batch_norm": True,
}


# -- distances -------------------------------------------------------------------------------------
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between feature sets a (n, d) and b (m, d), in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root_a @ s_b @ root_a
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * trace_root)


def kernel_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = 50, subset_size: int = 1000, seed: int = 0
) -> float:
    """KID: the mean over `subsets` random subsets (without replacement, min(subset_size, n, m)
    rows of each) of the unbiased MMD^2 with kernel (x.y / d + 1)^3."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    if m < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx, k_yy, k_xy = ((p @ q.T / d + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        values.append(within - 2 * k_xy.mean())
    return float(np.mean(values))


def nearest_distances(query: np.ndarray, reference: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """(n,) Euclidean distance of each query row to its nearest reference row. In float64 by
    |q|^2 + |r|^2 - 2 q.r: an exact copy comes out within about 1e-6 of 0, far below the
    distances between different images."""
    q = torch.from_numpy(np.asarray(query, np.float64).reshape(len(query), -1))
    r = torch.from_numpy(np.asarray(reference, np.float64).reshape(len(reference), -1))
    r_sq = (r * r).sum(1)
    out = []
    for i in range(0, len(q), chunk):
        part = q[i : i + chunk]
        d2 = (part * part).sum(1, keepdim=True) + r_sq[None, :] - 2 * part @ r.T
        out.append(d2.min(1).values.clamp(min=0).sqrt())
    return torch.cat(out).numpy()


def memorised_share(
    generated: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    percentile: float = MEMORISED_PERCENTILE,
) -> tuple[float, float]:
    """(share of generated images whose nearest training image is at most the threshold away,
    the threshold: the `percentile`th percentile of the test images' nearest-training distances).
    All three in the same pixel scale (x / scale)."""
    threshold = float(np.percentile(nearest_distances(test, train), percentile))
    return float((nearest_distances(generated, train) <= threshold).mean()), threshold


def class_accuracy(
    predicted: np.ndarray, target: np.ndarray, n_classes: int
) -> tuple[float, list[float]]:
    """(mean over the classes present, per-class accuracy (nan where a class is absent))."""
    per_class = [
        float((predicted[target == c] == c).mean()) if (target == c).any() else math.nan
        for c in range(n_classes)
    ]
    present = [v for v in per_class if not math.isnan(v)]
    return (float(np.mean(present)) if present else math.nan), per_class


# -- the feature classifier ------------------------------------------------------------------------
def last_linear(net: nn.Module) -> nn.Linear:
    """The net's last nn.Linear (in module order): its input are the features."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(net).__name__} has no linear layer to read features from")
    return linears[-1]


class FeatureClassifier(nn.Module):
    """A classifier of stored samples: `embed(x)` -> (logits, features), the features being the
    input of the net's last linear layer. `spec` says how to rebuild it (net, normalisation)."""

    def __init__(self, net: nn.Module, preprocess: Normalizer, spec: dict[str, Any]):
        super().__init__()
        self.net, self.preprocess, self.spec = net, preprocess, dict(spec)
        self._features: list[torch.Tensor] = []
        last_linear(net).register_forward_pre_hook(lambda m, args: self._features.append(args[0]))

    @torch.no_grad()
    def embed(
        self, x: torch.Tensor | np.ndarray, batch_size: int = 512
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, K), features (N, F)) of stored samples, in eval mode, on the CPU."""
        was_training = self.training
        self.eval()
        device = next(self.net.parameters()).device
        logits, feats = [], []
        try:
            for i in range(0, len(x), batch_size):
                part = x[i : i + batch_size]
                if isinstance(part, np.ndarray):
                    part = torch.from_numpy(np.array(part))  # a writable copy of a memmap
                self._features.clear()
                logits.append(self.net(self.preprocess(part.to(device))).float().cpu())
                feats.append(self._features[-1].flatten(1).float().cpu())
        finally:
            self._features.clear()
            self.train(was_training)
        return torch.cat(logits), torch.cat(feats)

    @staticmethod
    def predict(logits: torch.Tensor) -> torch.Tensor:
        """Class indices: argmax, or logit > 0 for a one-logit binary classifier."""
        return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)

    def state(self) -> dict[str, Any]:
        """What a GAN checkpoint stores to rebuild it (`from_state`)."""
        return {**self.spec, "state_dict": {k: v.cpu() for k, v in self.net.state_dict().items()}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FeatureClassifier:
        from medpipe.models.nets.registry import net_class

        spec = {k: v for k, v in state.items() if k != "state_dict"}
        net_cls, problem = net_class(spec["net"]["_target_"])
        if net_cls is None:
            raise DataError(f"the GAN checkpoint's feature classifier: {problem}")
        net = net_cls(
            spec["in_channels"],
            spec["num_outputs"],
            spec["spatial_shape"],
            **{k: v for k, v in spec["net"].items() if k != "_target_"},
        )
        net.load_state_dict(state["state_dict"])
        return cls(net, _normalizer(spec), spec)


def _normalizer(spec: dict[str, Any]) -> Normalizer:
    return Normalizer(
        spec["normalize"], spec["scale"], spec["mean"], spec["std"], len(spec["spatial_shape"])
    )


def _spec(meta: DatasetMeta, net: dict[str, Any], num_outputs: int, normalize: str, source: str):
    return {
        "source": source,
        "net": dict(net),
        "in_channels": meta.channels,
        "num_outputs": num_outputs,
        "spatial_shape": list(meta.sample_shape[1:]),
        "normalize": normalize,
        "scale": float(meta.scale),
        "mean": list(meta.mean),
        "std": list(meta.std),
        "data_sha256": meta.content_sha256,
    }


def train_feature_classifier(
    x: np.ndarray,
    y: np.ndarray,
    meta: DatasetMeta,
    epochs: int,
    seed: int,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
) -> FeatureClassifier:
    """A small CNN (FEATURE_NET: 128 features) trained on stored samples x with class indices y:
    Adam 1e-3, class-balanced cross-entropy, z-scored input. Its random stream is its own (seeded
    by `seed`), so the caller's stream is the same whether it trains this or loads one."""
    from medpipe.models.nets.cnn import SimpleCNN

    n_classes = len(meta.classes)
    spec = _spec(meta, FEATURE_NET, n_classes, "zscore", "trained on the training split")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        opts = {k: v for k, v in FEATURE_NET.items() if k != "_target_"}
        net = SimpleCNN(meta.channels, n_classes, meta.sample_shape[1:], **opts).to(device)
        fc = FeatureClassifier(net, _normalizer(spec).to(device), spec)
        xt = torch.from_numpy(np.array(x)).to(device)  # a writable copy of a memmap
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64).reshape(-1)).to(device)
        counts = torch.bincount(yt, minlength=n_classes).float().clamp(min=1)
        weight = counts.sum() / (n_classes * counts)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        net.train()
        for _ in range(epochs):
            order = torch.randperm(len(xt), device=device)
            for i in range(0, len(xt), batch_size):
                j = order[i : i + batch_size]
                loss = F.cross_entropy(net(fc.preprocess(xt[j])), yt[j], weight=weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return fc.eval()


def load_feature_classifier(path: str | Path, meta: DatasetMeta) -> FeatureClassifier:
    """The net of a medpipe classifier checkpoint (`best.ckpt` of medpipe.train on the same data),
    built as `medpipe.evaluate` builds it. DataError (one line naming the file) when the file is
    not a classifier of this data's samples and classes."""
    from medpipe.building import build_task
    from medpipe.checkpoints import load_checkpoint

    ckpt = load_checkpoint(path)
    own = DatasetMeta.from_dict(ckpt["medpipe"]["meta"])
    key = "model.eval.feature_ckpt"
    if ckpt["medpipe"].get("gan") is not None:
        raise DataError(f"{key}: {path} is a GAN's checkpoint; give a classifier's best.ckpt")
    if list(own.sample_shape) != list(meta.sample_shape) or list(own.classes) != list(meta.classes):
        raise DataError(
            f"{key}: {path} classifies {own.name} samples {tuple(own.sample_shape)} into "
            f"{', '.join(own.classes)}; this GAN learns {meta.name} samples "
            f"{tuple(meta.sample_shape)} of {', '.join(meta.classes)}"
        )
    run_cfg = ckpt["medpipe"]["config"]
    task = build_task({**run_cfg, "compile": False}, own)
    task.on_load_checkpoint(ckpt)
    task.load_state_dict(ckpt["state_dict"])
    try:
        last_linear(task.net)
    except ValueError as err:
        raise DataError(f"{key}: {path}: {err}") from None
    with torch.no_grad():
        n_out = int(task.net.eval()(torch.zeros(1, *own.sample_shape)).shape[1])
    normalize = str(run_cfg["data"].get("normalize", "zscore"))
    spec = _spec(own, run_cfg["model"]["net"], n_out, normalize, str(path))
    return FeatureClassifier(task.net, _normalizer(spec), spec).eval()


# -- figures -------------------------------------------------------------------------------------
def to_display(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """Stored samples (N, C, H, W) -> uint8 (N, H, W) or (N, H, W, 3) for viewing."""
    u = (np.asarray(x, np.float64) - low) / max(high - low, 1e-12)
    u = (np.clip(u, 0, 1) * 255).round().astype(np.uint8)
    return u.transpose(0, 2, 3, 1) if u.shape[1] == 3 else u[:, 0]


def sample_grid(images: np.ndarray, rows: int, pad: int = 2) -> np.ndarray:
    """Display images (rows * cols, H, W[, 3]) -> one uint8 picture, row-major, `pad` px apart."""
    cols = len(images) // rows
    h, w = images.shape[1:3]
    shape = (rows * (h + pad) + pad, cols * (w + pad) + pad, *images.shape[3:])
    grid = np.full(shape, 255, dtype=np.uint8)
    for i, img in enumerate(images[: rows * cols]):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) :][:, :w] = img
    return grid


def write_samples_figure(
    generated: np.ndarray,
    real: np.ndarray,
    classes: Sequence[str],
    path: Path,
) -> Path:
    """plots/samples.png: per class a row of generated images above a row of real ones (display
    images (K * cols, H, W[, 3]) each, class-major)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(classes)
    cols = len(generated) // k
    fig, axes = plt.subplots(2 * k, 1, figsize=(1.0 + 0.9 * cols, 1.15 * 2 * k), squeeze=False)
    for i, name in enumerate(classes):
        for j, (what, imgs) in enumerate((("generated", generated), ("real", real))):
            ax = axes[2 * i + j, 0]
            ax.imshow(
                sample_grid(imgs[i * cols : (i + 1) * cols], 1), cmap="gray", vmin=0, vmax=255
            )
            ax.set_ylabel(f"{what}\n{name}", rotation=0, ha="right", va="center", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Generated (fixed noise, best checkpoint) and real training images per class")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- the evaluation of a trained GAN ---------------------------------------------------------------
def sample_counts(train_counts: Sequence[int], n_samples: int | None) -> list[int]:
    """Generated samples per class: the training split's counts, or `n_samples` in the same
    proportions (at least one per class)."""
    counts = [int(c) for c in train_counts]
    if n_samples is None:
        return counts
    total = max(sum(counts), 1)
    return [max(1, round(n_samples * c / total)) for c in counts]


def evaluate_gan(task, out_dir: Path, test_split) -> Evaluation:
    """The gan/* metrics of the task's (best) generator against the real training and test
    splits, with the feature classifier's own test accuracy beside them, and plots/samples.png."""
    from medpipe.evaluation.settings import Evaluation

    meta, o = task.meta, task.options.eval
    train = task.trainer.datamodule.split_arrays("train")
    classes = list(meta.classes)
    k = len(classes)
    seed = int(o.seed if o.seed is not None else task.run_config.get("seed", 0))
    x_gen, y_gen = task.generate(sample_counts(meta.class_counts["train"], o.n_samples), seed)
    fc = task.feature_classifier
    _, f_train = fc.embed(train.x)
    test_logits, f_test = fc.embed(test_split.x)
    gen_logits, f_gen = fc.embed(x_gen)
    f_train, f_test, f_gen = (f.double().numpy() for f in (f_train, f_test, f_gen))
    m: dict[str, float] = {
        "gan/fid": frechet_distance(f_gen, f_test),
        "gan/fid_real_floor": frechet_distance(f_train, f_test),
        "gan/kid": kernel_distance(f_gen, f_test, o.kid_subsets, o.kid_subset_size, seed),
        "gan/kid_real_floor": kernel_distance(
            f_train, f_test, o.kid_subsets, o.kid_subset_size, seed
        ),
    }
    y_gen_np = y_gen.numpy()
    acc, per_class = class_accuracy(fc.predict(gen_logits).numpy(), y_gen_np, k)
    m["gan/class_acc"] = acc
    for c, v in enumerate(per_class):
        m[f"gan/class_acc_{c}"] = v
    y_test = np.asarray(test_split.y).reshape(-1)
    m["gan/class_acc_real"], _ = class_accuracy(fc.predict(test_logits).numpy(), y_test, k)

    low, high = float(task.stored_low), float(task.stored_high)
    span = max(high - low, 1e-12)

    def pixels(x) -> np.ndarray:
        return (np.asarray(x, np.float64).reshape(len(x), -1) - low) / span

    share, threshold = memorised_share(pixels(x_gen.numpy()), pixels(train.x), pixels(test_split.x))
    m["gan/memorised_share"] = share
    m["gan/memorised_threshold"] = threshold

    ev = Evaluation(metrics=m)
    cols = task.options.eval.grid_columns
    grid_x, _ = task.generate([cols] * k, seed)
    y_train = np.asarray(train.y).reshape(-1)
    rng = np.random.default_rng(seed)
    real_rows = [
        np.asarray(train.x[np.sort(rng.choice(np.flatnonzero(y_train == c), cols, replace=True))])
        if (y_train == c).any()
        else np.full((cols, *meta.sample_shape), low)
        for c in range(k)
    ]
    ev.files["samples"] = write_samples_figure(
        to_display(grid_x.numpy(), low, high),
        to_display(np.concatenate(real_rows), low, high),
        classes,
        out_dir / "plots" / "samples.png",
    )
    if share > 2 * MEMORISED_PERCENTILE / 100:
        ev.warnings.append(
            f"memorisation check: {share:.1%} of generated images lie nearer to a training image "
            f"than {100 - MEMORISED_PERCENTILE:g}% of the real test images do (fresh samples of the "
            f"real distribution: about {MEMORISED_PERCENTILE / 100:.0%}); look at them before "
            "sharing synthetic data"
        )
    if not math.isnan(acc) and acc < 0.5 * (1 + 1 / k) and m["gan/class_acc_real"] > acc + 0.1:
        ev.warnings.append(
            f"class conditioning: the real-data classifier recognises {acc:.0%} of generated "
            f"images as their class (chance {1 / k:.0%}; real test images "
            f"{m['gan/class_acc_real']:.0%})"
        )
    spec = fc.spec
    if spec.get("data_sha256") and spec["data_sha256"] != meta.content_sha256:
        ev.warnings.append(
            f"the feature classifier ({spec['source']}) was trained on other processed data "
            f"than this GAN (processed sha256 {spec['data_sha256'][:12]} vs "
            f"{meta.content_sha256[:12]})"
        )
    return ev
