"""What did a trained model look at: attribution maps for a trained task module, and checks of those
maps against known lesion masks.

Methods (`method=`):

- `gradcam`, `gradcampp`: Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhyay et al.
  2018), MONAI's `monai.visualize` on the layer the net declares (`@register_net(explain_layer=)`,
  contract in medpipe.models.nets.registry), upsampled to the input's spatial shape. A net that
  folds the slices of a volume into the batch (CRNN2D, SliceCNN) has its maps unfolded first, so
  the channel weights are those of the whole volume, as for a 3D net.
- `integrated_gradients` (Sundararajan et al. 2017), `occlusion`: Captum, on the normalised input
  with the all-zero input (the training mean under z-scoring) as the baseline, summed over
  channels: a map over time for a signal net without convolutions (LSTM/GRU), or over pixels.
- `auto`: Grad-CAM where the net declares a layer, else integrated gradients (occlusion for a net
  with `input_gradients = False`, whose features are computed outside torch).

Maps have one sample's spatial shape without the channel axis: (N, H, W), (N, D, H, W), (N, T).
Grad-CAM maps are >= 0, the input attributions signed; none is normalised (the figures are).

The class explained is a logit: column c of the net's output, or, for a binary task with one logit
(loss=bce), the logit for class 1 and its negative for class 0.

Checks, when the data has lesion masks (`Split.mask`): the pointing game (Zhang et al. 2018:
does the map's maximum lie in the lesion?) and the share of positive attribution inside it, for
the trained model and for a copy with re-initialised weights (the model-randomisation sanity check
of Adebayo et al. 2018, whose maps should change: their Spearman rank correlation with the trained
maps is reported as well). Regression tasks have no class to explain: `explain_run` returns
nothing for them (`explain_batch` attributes the predicted value).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, get_args

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from captum.attr import IntegratedGradients, Occlusion  # noqa: E402
from monai.visualize import GradCAM, GradCAMpp  # noqa: E402
from monai.visualize.class_activation_maps import ModelWithHooks, default_upsampler  # noqa: E402
from scipy.stats import rankdata  # noqa: E402
from torch import nn  # noqa: E402

from medpipe.config import ExplainMethod  # noqa: E402
from medpipe.data.processed import Split  # noqa: E402

__all__ = [
    "METHODS",
    "explain_batch",
    "explain_run",
    "pointing_game",
    "predict_probabilities",
    "randomised_copy",
    "rank_correlation",
    "resolve_method",
]

METHODS: tuple[str, ...] = get_args(ExplainMethod)  # stated once, in medpipe.config
CAM_METHODS = {"gradcam": GradCAM, "gradcampp": GradCAMpp}
IG_STEPS = 8  # integrated-gradients path steps: the default experiment's pointing game is the
# same (0.824) at 8, 16 and 32 steps, at 2.5, 5.2 and 10.3 s for 256 images


# -- the model under explanation ------------------------------------------------------------------
class _Scores(nn.Module):
    """A task's normalisation and net on raw samples, one score per class: column c is class c's
    logit, also for a binary net with one logit (columns -z, z). Copies: the hooks MONAI adds (and
    the in-place ReLU it turns off) stay off the trained task."""

    def __init__(self, task: nn.Module):
        super().__init__()
        self.preprocess = copy.deepcopy(task.preprocess)
        self.net = copy.deepcopy(task.net)
        for m in self.net.modules():  # a hooked layer's output must not be changed in place
            if getattr(m, "inplace", None) is True:
                m.inplace = False
        self.binary = task.meta.task == "binary"
        self.requires_grad_(False)  # gradients reach the activations and the input only: faster
        self.eval()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.from_normalised(self.preprocess(x), lengths)

    def from_normalised(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        z = self.net(x) if lengths is None else self.net(x, lengths=lengths)
        return torch.cat([-z, z], 1) if self.binary and z.shape[1] == 1 else z


def _unfold(t: torch.Tensor, n: int, axis: int) -> torch.Tensor:
    """(N * S, C, a, b) slice maps -> (N, C, *spatial) with the S slices back on spatial `axis`."""
    s = t.shape[0] // n
    t = t.reshape(n, s, *t.shape[1:]).transpose(1, 2)  # (N, C, S, a, b)
    return t.movedim(2, 2 + axis).contiguous()


class _Hooks(ModelWithHooks):
    """MONAI's forward/backward hooks on the explained layer, with one class per sample (MONAI
    takes one class for the batch) and folded slices unfolded back into volumes."""

    def __init__(self, model: nn.Module, layer: str, slice_axis: int | None):
        super().__init__(model, layer, register_forward=True, register_backward=True)
        self.slice_axis = slice_axis

    def class_score(self, logits: torch.Tensor, class_idx: torch.Tensor) -> torch.Tensor:
        return logits.gather(1, class_idx.reshape(-1, 1))[:, 0]

    def __call__(self, x, class_idx=None, retain_graph=False, **kwargs):
        logits, (acti,), (grad,) = super().__call__(x, class_idx, retain_graph, **kwargs)
        if self.slice_axis is not None:
            if acti.shape[0] != len(x) * x.shape[2 + self.slice_axis]:
                raise ValueError(
                    f"{self.target_layers[0]}: {acti.shape[0]} maps for {len(x)} samples of "
                    f"{x.shape[2 + self.slice_axis]} slices (see slice_axis in the net registry)"
                )
            acti, grad = (_unfold(t, len(x), self.slice_axis) for t in (acti, grad))
        # Grad-CAM++ multiplies by exp(score), one scalar per sample: shape it to broadcast over
        # the maps (MONAI's (N,) does not), and clamp it, as exp overflows float32 beyond 88 and
        # a per-sample factor does not change where a map points
        self.score = self.score.detach().clamp(max=50).reshape(-1, *[1] * (acti.ndim - 1))
        return logits, (acti.detach(),), (grad.detach(),)


def _layer_name(module: nn.Module, name: str) -> str:
    """The name in `module.named_modules()` of the layer `name` resolves to (it may go through
    a property such as `last_block`), for MONAI's hooks, which match names."""
    target = module.get_submodule(name)
    for full, m in module.named_modules():
        if m is target:
            return full
    raise ValueError(f"explain_layer '{name}' is not a registered module of the net")


def resolve_method(task: nn.Module, method: str = "auto") -> str:
    """The method `method` means for this task's net (auto: gradcam where the net declares an
    explain layer, else integrated_gradients); ValueError, naming `method`, if it cannot apply."""
    if method not in METHODS:
        raise ValueError(f"method: '{method}' is not one of {', '.join(METHODS)}")
    layer = getattr(type(task.net), "explain_layer", None)
    gradients = getattr(type(task.net), "input_gradients", True)  # False: features in numpy
    if method == "auto":
        return "gradcam" if layer else "integrated_gradients" if gradients else "occlusion"
    if method == "integrated_gradients" and not gradients:
        raise ValueError(
            f"method: integrated_gradients needs gradients to the input; "
            f"{type(task.net).__name__} has none (use occlusion)"
        )
    if method in CAM_METHODS and not layer:
        raise ValueError(
            f"method: {method} reads the layer a net declares; {type(task.net).__name__} "
            "declares none (use integrated_gradients or occlusion)"
        )
    return method


def _tensor(a: Any) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


class _Explainer:
    """Attribution maps of one task by one method, batch by batch."""

    def __init__(self, task: nn.Module, method: str = "auto"):
        self.method = method = resolve_method(task, method)
        layer = type(task.net).explain_layer
        self.scores = _Scores(task)
        self.device = next(iter(task.parameters()), torch.zeros(())).device
        numel = int(np.prod(task.meta.sample_shape))
        per_sample = IG_STEPS if method == "integrated_gradients" else 1
        self.batch = max(1, min(256, (1 << 22) // (numel * per_sample)))  # bounded memory
        if method in CAM_METHODS:
            name = _layer_name(self.scores, f"net.{layer}")
            slice_axis = getattr(self.scores.net, "slice_axis", None)
            hooks = _Hooks(self.scores, name, slice_axis)
            self.cam = CAM_METHODS[method](
                nn_module=hooks,
                target_layers=name,
                upsampler=default_upsampler,
                postprocessing=lambda m: m,  # raw maps; figures normalise their own
            )

    def __call__(
        self, x: np.ndarray | torch.Tensor, lengths: Any = None, target: Any = None
    ) -> np.ndarray:
        """Maps (N, *spatial) for raw samples x (N, C, *spatial); `target`: a class per sample,
        one class for all, or None (each sample's predicted class)."""
        n = len(x)
        out = np.zeros((n, *x.shape[2:]), np.float32)
        if target is not None:
            target = np.array(np.broadcast_to(np.asarray(target, np.int64), (n,)))
        for start in range(0, n, self.batch):
            rows = slice(start, start + self.batch)
            xb = _tensor(x[rows]).to(self.device).float()
            lb = None if lengths is None else _tensor(lengths[rows]).to(self.device)
            if target is None:
                with torch.no_grad():
                    tb = self.scores(xb, lb).argmax(1)
            else:
                tb = torch.as_tensor(target[rows]).to(self.device)
            # cuDNN's RNN backward refuses eval mode; the native kernels do the same sums
            with torch.backends.cudnn.flags(enabled=False):
                maps = self._maps(xb, lb, tb)
            if lb is not None and maps.ndim == 2:  # a padded signal: nothing beyond its end
                maps = maps * (torch.arange(maps.shape[1], device=maps.device) < lb[:, None])
            out[rows] = maps.detach().float().cpu().numpy()
        return out

    def _maps(self, x: torch.Tensor, lengths, target: torch.Tensor) -> torch.Tensor:
        kwargs = {} if lengths is None else {"lengths": lengths}
        if self.method in CAM_METHODS:
            x = x.detach().requires_grad_(True)  # the weights need no gradients; the input does
            with torch.enable_grad():
                return self.cam(x, class_idx=target, **kwargs)[:, 0]
        xn = self.scores.preprocess(x).detach()
        extra = None if lengths is None else (lengths,)
        if self.method == "integrated_gradients":
            attr = IntegratedGradients(self.scores.from_normalised).attribute(
                xn,
                baselines=torch.zeros_like(xn),
                target=target,
                additional_forward_args=extra,
                n_steps=IG_STEPS,
                internal_batch_size=len(xn) * IG_STEPS,
            )
        else:  # occlusion: windows of ~1/8 of each spatial axis, half-overlapping
            window = (xn.shape[1], *[max(1, s // 8) for s in xn.shape[2:]])
            strides = (xn.shape[1], *[max(1, w // 2) for w in window[1:]])
            with torch.no_grad():
                attr = Occlusion(self.scores.from_normalised).attribute(
                    xn,
                    sliding_window_shapes=window,
                    strides=strides,
                    baselines=0.0,
                    target=target,
                    additional_forward_args=extra,
                    perturbations_per_eval=8,
                )
        return attr.sum(1)  # over channels


def explain_batch(
    task: nn.Module,
    x: np.ndarray | torch.Tensor,
    lengths: np.ndarray | torch.Tensor | None = None,
    target_class: int | np.ndarray | None = None,
    method: str = "auto",
) -> np.ndarray:
    """Attribution maps (N, *spatial) of raw stored-scale samples x (N, C, *spatial) for a trained
    task: of `target_class` (one class, one per sample, or None: each sample's predicted class)."""
    return _Explainer(task, method)(x, lengths, target_class)


# -- checks ---------------------------------------------------------------------------------------
def pointing_game(maps: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """(hit rate, mean share inside) over the samples whose mask is not empty: a hit when the map's
    maximum lies inside the mask (Zhang et al. 2018); share = positive attribution inside the mask
    / all positive attribution. A map with no positive value points nowhere: a miss, share 0.
    (nan, nan) when no mask has a pixel."""
    maps, masks = np.asarray(maps), np.asarray(masks)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
    n = len(maps)
    m = maps.reshape(n, -1).astype(np.float64)
    inside = masks.reshape(n, -1).astype(bool)
    keep = inside.any(1)
    if not keep.any():
        return float("nan"), float("nan")
    m, inside = m[keep], inside[keep]
    positive = np.clip(m, 0, None)
    total = positive.sum(1)
    hit = (total > 0) & inside[np.arange(len(m)), m.argmax(1)]
    share = (positive * inside).sum(1) / np.where(total > 0, total, 1.0)
    return float(hit.mean()), float(share.mean())


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps (N,). A constant map (Grad-CAM of a random
    net is often all 0) orders nothing: 0 against a map that orders something, nan against
    another constant map (nothing to compare)."""
    n = len(a)
    ra = rankdata(np.asarray(a).reshape(n, -1), axis=1)
    rb = rankdata(np.asarray(b).reshape(n, -1), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    va, vb = (ra**2).sum(1), (rb**2).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (ra * rb).sum(1) / np.sqrt(va * vb)
    return np.where((va > 0) & (vb > 0), corr, np.where((va > 0) | (vb > 0), 0.0, np.nan))


def randomised_copy(task: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of `task` whose every net weight is re-initialised (each module's own
    `reset_parameters`, BatchNorm statistics included; any other parameter redrawn from a normal
    of its own spread): the full model randomisation of Adebayo et al. 2018, whose maps an
    explanation that reads the model must not reproduce. The global random state is unchanged."""
    # the trainer and a compiled net are not part of the model: the copy refers to neither
    memo = {  # `is not None`: a compiled module refuses truth tests (no __len__)
        id(v): None for k in ("_trainer", "_fast_net") if (v := task.__dict__.get(k)) is not None
    }
    twin = copy.deepcopy(task, memo)
    device = next(iter(twin.parameters()), torch.zeros(())).device
    net = twin.net.cpu()  # one seeded CPU stream, whatever the device
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        done: set[int] = set()
        for module in net.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                done.update(id(p) for p in module.parameters(recurse=False))
        for p in net.parameters():
            if id(p) not in done:
                p.normal_(0.0, float(p.std()) if p.numel() > 1 else 0.02)
    twin.net = net.to(device)
    return twin


# -- a run's explanations -------------------------------------------------------------------------
def predict_probabilities(
    task: nn.Module, x: np.ndarray, lengths: np.ndarray | None = None, batch: int = 256
) -> np.ndarray:
    """The task's outputs for raw samples, batch by batch: for classification the probabilities,
    calibrated by the task's temperature where it has one (as the exported model gives them)."""
    device = next(iter(task.parameters()), torch.zeros(())).device
    out = []
    was_training = task.training
    task.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch):
            xb = _tensor(x[start : start + batch]).to(device)
            lb = None if lengths is None else _tensor(lengths[start : start + batch])
            raw = task(xb, None if lb is None else lb.to(device))
            if isinstance(getattr(task, "temperature", None), torch.Tensor):  # calibrated
                raw = raw / task.temperature
            out.append(task.outputs(raw).float().cpu().numpy())
    task.train(was_training)
    return np.concatenate(out)


def _confidences(probs: np.ndarray, task: str, threshold: Any) -> tuple[np.ndarray, np.ndarray]:
    """(conf (N, K): probability of each class, pred (N, K) bool: predicted as that class)."""
    if task == "binary":
        p = probs.reshape(-1)
        conf = np.stack([1 - p, p], 1)
        pos = p >= float(np.asarray(threshold).reshape(-1)[0])
        return conf, np.stack([~pos, pos], 1)
    if task == "multiclass":
        return probs, probs.argmax(1)[:, None] == np.arange(probs.shape[1])[None]
    return probs, probs >= np.broadcast_to(np.asarray(threshold, np.float64), probs.shape[1:])


def _truth(y: np.ndarray | None, task: str, k: int) -> np.ndarray | None:
    """(N, K) bool: the sample is of class k (multi-hot for multilabel); None without labels."""
    if y is None:
        return None
    y = np.asarray(y)
    if task == "multilabel":
        return y.reshape(len(y), k) > 0.5
    return y.astype(np.int64).reshape(-1)[:, None] == np.arange(k)[None]


def _pick(conf, pred, truth, n: int) -> list[tuple[int, int, bool | None]]:
    """(row, class, right) for up to n // K samples per class: the most confident right
    predictions of the class first, then (up to half the share) the most confident wrong ones."""
    k = conf.shape[1]
    per_class = max(1, n // k)
    out: list[tuple[int, int, bool | None]] = []
    for c in range(k):
        rows = np.flatnonzero(pred[:, c])
        rows = rows[np.argsort(-conf[rows, c], kind="stable")]
        if truth is None:
            out += [(int(r), c, None) for r in rows[:per_class]]
            continue
        right, wrong = rows[truth[rows, c]], rows[~truth[rows, c]]
        n_wrong = min(len(wrong), per_class // 2)
        n_right = min(len(right), per_class - n_wrong)
        n_wrong = min(len(wrong), per_class - n_right)
        out += [(int(r), c, True) for r in right[:n_right]]
        out += [(int(r), c, False) for r in wrong[:n_wrong]]
    return out


def _norm(m: np.ndarray) -> np.ndarray:
    """A map scaled to [0, 1] by its largest magnitude (for display)."""
    top = float(np.abs(m).max())
    return m / top if top > 0 else m


def _image(x: np.ndarray) -> np.ndarray:
    """One sample (C, H, W) as something imshow draws: grey, or RGB for 3 channels."""
    x = np.asarray(x, np.float32)
    if x.shape[0] == 3:
        lo, hi = x.min(), x.max()
        return np.moveaxis((x - lo) / (hi - lo if hi > lo else 1.0), 0, -1)
    return x.mean(0)


def _draw_image(ax, x, m=None, mask=None, title: str = "", point=False, color="black") -> None:
    """The sample, its map over it (none: the sample alone), the mask's outline and, with
    `point`, a cross where the map peaks (where the pointing game looks)."""
    img = _image(x)
    ax.imshow(img, cmap=None if img.ndim == 3 else "gray")
    if m is not None:
        ax.imshow(_norm(m), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        if point and m.max() > 0:
            r, c = np.unravel_index(int(m.argmax()), m.shape)
            ax.plot(c, r, "w+", markersize=8, markeredgewidth=1.5)
    if mask is not None and mask.any():
        ax.contour(mask, levels=[0.5], colors="white", linewidths=0.8)
    ax.set_title(title, fontsize=7, color=color)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_signal(ax, x, m, length=None, title: str = "", color="black") -> None:
    t = int(length) if length is not None else x.shape[-1]
    trace, attr = np.asarray(x, np.float32)[:, :t], _norm(m[:t])
    lo, hi = float(trace.min()), float(trace.max())
    hi = hi if hi > lo else lo + 1.0
    # the attribution as a coloured band behind the trace: red where it raises the class score
    ax.imshow(
        attr[None], aspect="auto", cmap="coolwarm", vmin=-1, vmax=1, alpha=0.6,
        extent=(0, t, lo, hi), interpolation="nearest",
    )  # fmt: skip
    for ch in trace:
        ax.plot(np.arange(t), ch, lw=0.6, color="black")
    ax.set_xlim(0, t)
    ax.set_ylim(lo, hi)
    ax.set_title(title, fontsize=7, color=color)
    ax.set_yticks([])


def _top_slices(m: np.ndarray, k: int = 3) -> list[int]:
    """The k slices (axis 0 of a (D, H, W) map) holding the most positive attribution, in order."""
    mass = np.clip(m, 0, None).reshape(len(m), -1).sum(1)
    return sorted(np.argsort(-mass, kind="stable")[:k].tolist())


def _panels(kind: str) -> int:
    """Panels per sample: a volume shows its most-attributed slices."""
    return 3 if kind in ("volume", "frames") else 1


def _figure(n_panels: int, kind: str):
    cols = {"signal": 2, "volume": 6, "frames": 6}.get(kind, 4)
    rows = max(1, -(-n_panels // cols))
    width, height = (5.0, 1.8) if kind == "signal" else (2.2, 2.4)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * width, rows * height), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, list(axes.flat)


def _draw_sample(axes, kind, x, m, mask, length, title, color) -> None:
    """One sample on its panels (1, or 3 for a volume's most-attributed slices)."""
    for ax in axes:
        ax.set_axis_on()
    if kind == "signal":
        _draw_signal(axes[0], x, m, length, title, color)
        return
    if kind == "image":
        _draw_image(axes[0], x, m, mask, title, color=color)
        return
    word = "frame" if kind == "frames" else "slice"
    for ax, d in zip(axes, _top_slices(m, len(axes)), strict=False):
        mask_d = None if mask is None else mask[d]
        _draw_image(ax, x[:, d], m[d], mask_d, f"{title}\n{word} {d}", color=color)


def _class_name(classes: list[str], c: int) -> str:
    return classes[c] if c < len(classes) else str(c)


def _explanations_figure(path, split, rows, maps, probs_conf, classes, task, kind) -> Path:
    per = _panels(kind)
    fig, axes = _figure(len(rows) * per, kind)
    for i, ((r, c, right), m) in enumerate(zip(rows, maps, strict=True)):
        p = probs_conf[r, c]
        if right is None:
            title = f"pred {_class_name(classes, c)} / p={p:.2f}"
        elif task == "multilabel":
            title = f"{_class_name(classes, c)}: true {int(right)} / pred 1 / p={p:.2f}"
        else:
            true = _class_name(classes, int(np.asarray(split.y).reshape(-1)[r]))
            title = f"true {true} / pred {_class_name(classes, c)} / p={p:.2f}"
        mask = None if split.mask is None else np.asarray(split.mask[r])
        length = None if split.lengths is None else split.lengths[r]
        color = {True: "darkgreen", False: "darkred", None: "black"}[right]
        panels = axes[i * per : (i + 1) * per]
        _draw_sample(panels, kind, split.x[r], m, mask, length, title, color)
    colours = "; red raises the class's score, blue lowers it" if kind == "signal" else ""
    fig.suptitle(
        "What the model looked at: the predicted class's map; per class the most confident "
        f"right (green), then wrong (red){colours}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _pointing_figure(path, split, rows, maps, maps_random, kind, hits, k: int = 6) -> Path:
    """A few positives: the sample with its mask, the trained model's map, the randomised one's."""
    rows = rows[:k]
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.4 * len(rows)), squeeze=False)
    for i, r in enumerate(rows):
        x, mask = np.asarray(split.x[r]), np.asarray(split.mask[r])
        m, mr = maps[i], maps_random[i]
        if kind in ("volume", "frames"):  # the slice with the most lesion
            d = int(mask.reshape(len(mask), -1).sum(1).argmax())
            x, mask, m, mr = x[:, d], mask[d], m[d], mr[d]
        for ax, shown, name in zip(
            axes[i], (None, m, mr), ("sample + lesion", "trained", "randomised"), strict=True
        ):
            if kind == "signal":
                length = None if split.lengths is None else split.lengths[r]
                _draw_signal(ax, x, mask if shown is None else shown, length, name)
            else:
                _draw_image(ax, x, shown, mask, name, point=True)
    fig.suptitle(
        f"Pointing game: trained {hits[0]:.2f}, randomised weights {hits[1]:.2f}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def explain_run(
    task: nn.Module,
    split: Split,
    probs: np.ndarray,
    out_dir: str | Path,
    *,
    threshold: Any = 0.5,
    n: int = 16,
    method: str = "auto",
    max_samples: int = 256,
    seed: int | None = 0,
    prefix: str = "test",
) -> tuple[dict[str, float], dict[str, Path]]:
    """Explanation figures and checks of a trained classification task on a split (the test split,
    `probs` its probabilities, row-aligned: (N,) binary, (N, C) multiclass, (N, K) multilabel).

    Writes `plots/explanations.png` (per class, up to n // classes samples: the most confident
    right predictions, then the most confident wrong ones, each with the map of its predicted
    class; without labels (`split.y` None), the most confident of each class). With lesion masks,
    also `plots/pointing_game.png`, and the metrics `{prefix}/pointing_game`, `.._random`,
    `{prefix}/attribution_in_lesion`, `.._random` on up to `max_samples` positives, trained vs
    randomised weights; for Grad-CAM also `{prefix}/pointing_game_ig`, `.._ig_random` and
    `{prefix}/attribution_in_lesion_ig` with integrated gradients. Always
    `{prefix}/explanation_rank_corr_random`: the mean Spearman rank
    correlation of the trained and the randomised model's maps (low: the maps follow the weights).
    Returns (metrics, {name: path}); ({}, {}) for regression.
    """
    meta = task.meta
    if meta.task == "regression":
        return {}, {}
    seed = 0 if seed is None else int(seed)
    plots = Path(out_dir) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    probs = np.asarray(probs, np.float64)
    conf, pred = _confidences(probs, meta.task, threshold)
    truth = _truth(split.y, meta.task, conf.shape[1])
    explainer = _Explainer(task, method)
    randomised = _Explainer(randomised_copy(task, seed), explainer.method)

    rows = _pick(conf, pred, truth, n)
    idx = np.array([r for r, _, _ in rows], np.int64)
    classes_of = np.array([c for _, c, _ in rows], np.int64)
    take = split.take(idx) if len(idx) else None
    maps = explainer(take.x, take.lengths, classes_of) if take is not None else np.zeros(0)
    paths = {
        "explanations": _explanations_figure(
            plots / "explanations.png", split, rows, maps, conf, meta.classes, meta.task, meta.kind
        )
    }
    metrics: dict[str, float] = {}

    # the sanity check and the pointing game read positives with a lesion where there are masks
    if split.mask is not None:
        has = np.flatnonzero(np.asarray(split.mask).reshape(len(split), -1).any(1))
        if len(has) > max_samples:
            has = np.sort(np.random.default_rng(seed).choice(has, max_samples, replace=False))
        if len(has):
            pos = split.take(has)
            if meta.task == "multilabel":  # the most probable of the sample's true labels
                target = np.where(truth[has], conf[has], -1.0).argmax(1)
            else:
                target = np.asarray(split.y).astype(np.int64).reshape(-1)[has]
            m_t = explainer(pos.x, pos.lengths, target)
            m_r = randomised(pos.x, pos.lengths, target)
            hit, share = pointing_game(m_t, pos.mask)
            hit_r, share_r = pointing_game(m_r, pos.mask)
            metrics.update(
                {
                    f"{prefix}/pointing_game": hit,
                    f"{prefix}/pointing_game_random": hit_r,
                    f"{prefix}/attribution_in_lesion": share,
                    f"{prefix}/attribution_in_lesion_random": share_r,
                }
            )
            if explainer.method in ("gradcam", "gradcampp"):
                # Grad-CAM weighs a coarse map by spatially averaged gradients, which localises
                # poorly behind a flatten + dense head; the input-level check beside it says
                # whether the model or the map is at fault.
                fine = _Explainer(task, "integrated_gradients")
                fine_r = _Explainer(randomised_copy(task, seed), "integrated_gradients")
                hit_ig, share_ig = pointing_game(fine(pos.x, pos.lengths, target), pos.mask)
                hit_ig_r, _ = pointing_game(fine_r(pos.x, pos.lengths, target), pos.mask)
                metrics.update(
                    {
                        f"{prefix}/pointing_game_ig": hit_ig,
                        f"{prefix}/pointing_game_ig_random": hit_ig_r,
                        f"{prefix}/attribution_in_lesion_ig": share_ig,
                    }
                )
            corr = rank_correlation(m_t, m_r)
            paths["pointing_game"] = _pointing_figure(
                plots / "pointing_game.png", split, has, m_t, m_r, meta.kind, (hit, hit_r)
            )
        else:
            corr = np.array([np.nan])
    elif take is not None:  # no masks: the figure's samples, which are explained already
        corr = rank_correlation(maps, randomised(take.x, take.lengths, classes_of))
    else:
        corr = np.array([np.nan])
    metrics[f"{prefix}/explanation_rank_corr_random"] = (
        float(np.nanmean(corr)) if np.isfinite(corr).any() else float("nan")
    )
    return metrics, paths
