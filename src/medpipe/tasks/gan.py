"""The conditional GAN task kind (`task_kind=gan`): a class-conditional generator of 2D images
trained against a discriminator on binary or multiclass image data, and the sampling API that
reads its checkpoints (`load_generator`).

Scale. The generator's tanh output t in [-1, 1] stands for the stored intensities
x = low + (t + 1) / 2 * (high - low), where [low, high] is the stored range: [0, scale] for
integer samples (0-255 for MedMNIST's uint8), the training split's min and max for float samples.
The discriminator sees real and generated images alike through the task's `preprocess` (the
configured `data.normalize`), the space the net contract gives every net. Generated samples
(sampling API, exported model, evaluation) are rounded to whole values for integer data, so they
are in the stored scale and dtype range of the real data.

Training (Lightning manual optimisation, two optimizers from the `optimizer` config, each with
its own learning rate `lr_g`/`lr_d` if set): per batch one discriminator step on the real batch
and as many generated images of the same classes (concatenated into one forward pass), and every
`d_steps` batches one generator step that reuses those generated images; DiffAugment on both real
and generated inputs of the discriminator; optionally an exponential moving average of the
generator (`ema_decay`, with the usual warm-up min(decay, (1 + k) / (10 + k)) after k updates),
which is what is sampled, evaluated and exported.

Model selection. Before the first epoch a feature classifier is loaded (`eval.feature_ckpt`) or
trained on the training split (`eval.feature_epochs`); each validation computes `val/fid`
(generated vs validation images, as many of each class as the validation split holds, the same
noise every epoch) and `val/class_acc`, and the best checkpoint is the one with the lowest
`val/fid`. After training, `gan/*` come from the best checkpoint against the test split
(medpipe.evaluation.gan_quality).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from medpipe.data.diff_augment import DiffAugment, DiffAugmentOp
from medpipe.data.processed import DatasetMeta
from medpipe.errors import ConfigError
from medpipe.models.generator import (  # noqa: F401  (the sampling API, re-exported)
    GeneratorBundle,
    GeneratorModel,
    checkpoint_path,
    eval_mode,
    is_integer_dtype,
    load_generator,
)
from medpipe.models.optim import build_scheduler
from medpipe.tasks.base import MedTask, unpack
from medpipe.tasks.kinds import TaskKind, register_task_kind

GAN_METRICS = (
    "fid",
    "kid",
    "fid_real_floor",
    "kid_real_floor",
    "class_acc",
    "class_acc_real",
    "memorised_share",
    "d_loss",
    "g_loss",
)
VAL_NOISE_SEED = 20_231  # the fixed noise of val/fid and of the logged sample grids


class GANEvalOptions(BaseModel):
    """model.eval: how the generator is judged (medpipe.evaluation.gan_quality)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # a medpipe classifier's best.ckpt on the same data, whose features FID/KID read; null: a
    # small CNN is trained on the training split first, for `feature_epochs` epochs
    feature_ckpt: str | None = None
    feature_epochs: Annotated[int, Field(ge=1)] = 3
    # generated samples for gan/*: null = as many as the training split, with its class counts
    n_samples: Annotated[int, Field(ge=2)] | None = None
    kid_subsets: Annotated[int, Field(ge=1)] = 50
    kid_subset_size: Annotated[int, Field(ge=2)] = 1000
    grid_columns: Annotated[int, Field(ge=1, le=32)] = 10  # per class in plots/samples.png
    seed: int | None = None  # noise of the evaluation samples; null: the run's seed


class GANOptions(BaseModel):
    """Read from the `model` config section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    loss: Literal["hinge", "non_saturating", "wgan_gp"] = "hinge"
    gp_weight: Annotated[float, Field(ge=0)] = 10.0  # wgan_gp: weight of the gradient penalty
    lr_g: Annotated[float, Field(gt=0)] | None = None  # null: optimizer.lr
    lr_d: Annotated[float, Field(gt=0)] | None = None  # null: optimizer.lr
    d_steps: Annotated[int, Field(ge=1)] = 1  # discriminator steps (batches) per generator step
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.999  # 0: no moving average
    diffaugment: list[DiffAugmentOp] = []  # on real and generated images alike
    diffaugment_p: Annotated[float, Field(gt=0, le=1)] = 1.0  # per op and sample
    sample_every_n_epochs: Annotated[int, Field(ge=1)] = 1  # the MLflow sample grid
    grid_per_class: Annotated[int, Field(ge=1, le=32)] = 8  # its images per class (row)
    eval: GANEvalOptions = GANEvalOptions()


def d_loss_of(loss: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss on its scores of real and generated images (without a penalty)."""
    if loss == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if loss == "non_saturating":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    return fake.mean() - real.mean()  # wgan_gp


def g_loss_of(loss: str, fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss on the discriminator's scores of its images."""
    return F.softplus(-fake).mean() if loss == "non_saturating" else -fake.mean()


def gradient_penalty(
    discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): (||grad D(x_hat)|| - 1)^2 on random interpolates."""
    eps = torch.rand(len(real), 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(x_hat, y).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


BN_SAMPLES, BN_BATCH, BN_SEED = 512, 256, 7  # batch-norm re-estimation of the EMA generator


@torch.no_grad()
def recalibrate_batch_norm(
    generator: nn.Module, class_counts: list[int], z_dim: int, device: torch.device
) -> None:
    """Re-estimate the running statistics of the generator's batch norms for its own weights.

    An averaged generator's weights are not the weights whose batches the running statistics
    were collected from (copying the trained generator's statistics gave gan/fid 9.6 instead of
    9.0 on PneumoniaMNIST). Here BN_SAMPLES generated images, classes in the training split's
    proportions, pass through it in training mode with cumulative averaging (momentum None),
    from a noise stream of its own (the training's random stream is untouched)."""
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [(m, m.momentum) for m in norms]
    was = generator.training
    g = torch.Generator().manual_seed(BN_SEED)
    probs = torch.tensor([float(c) for c in class_counts]).clamp(min=1e-6)
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        generator.train()
        for _ in range(BN_SAMPLES // BN_BATCH):
            y = torch.multinomial(probs, BN_BATCH, replacement=True, generator=g)
            z = torch.randn(BN_BATCH, z_dim, generator=g)
            generator(z.to(device), y.to(device))
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        generator.train(was)


class GANTask(MedTask):
    """A class-conditional GAN (net: medpipe.models.nets.ConditionalGAN) under manual
    optimisation; see the module's docstring for the scale, the steps and model selection."""

    Options = GANOptions

    @staticmethod
    def num_outputs(meta: DatasetMeta, options: Any) -> int:
        return len(meta.classes)  # the net's class embeddings (and D's per-class scores)

    @staticmethod
    def run_problems(c: dict[str, Any]) -> list[str]:
        """Settings Lightning's manual optimisation or this task does not support, refused
        before the run starts (Lightning itself would refuse some only after MLflow started)."""
        trainer, problems = c.get("trainer") or {}, []
        if trainer.get("gradient_clip_val"):
            problems.append(
                "trainer.gradient_clip_val: not with task_kind=gan (manual optimisation)"
            )
        if int(trainer.get("accumulate_grad_batches") or 1) != 1:
            problems.append(
                "trainer.accumulate_grad_batches: not with task_kind=gan (manual optimisation); "
                "use model.d_steps"
            )
        devices = trainer.get("devices", 1)
        if (isinstance(devices, int) and devices > 1) or (
            isinstance(devices, list) and len(devices) > 1
        ):
            problems.append(
                "trainer.devices: task_kind=gan trains on one device (val/fid per rank)"
            )
        if int((c.get("cv") or {}).get("folds") or 0) > 0:
            problems.append("cv.folds: task_kind=gan has no cross-validation; use 0")
        if c.get("compile") or c.get("channels_last"):
            problems.append(
                "compile, channels_last: not applied by task_kind=gan; leave them false"
            )
        return problems

    @staticmethod
    def option_problems(meta: DatasetMeta, options: GANOptions) -> list[str]:
        problems = []
        if len(meta.sample_shape) != 3:
            problems.append(
                f"task_kind: gan makes 2D images (C, H, W); {meta.name} samples are "
                f"{tuple(meta.sample_shape)}"
            )
        else:
            from medpipe.models.nets.gan import gan_levels

            try:
                gan_levels(meta.sample_shape[1:])
            except ValueError as err:
                problems.append(f"task_kind: gan on {meta.name}: {err}")
        ckpt = options.eval.feature_ckpt
        if ckpt and not Path(ckpt).expanduser().is_file():
            problems.append(f"model.eval.feature_ckpt: file not found: {Path(ckpt).resolve()}")
        return problems

    def __init__(self, net: nn.Module, meta: DatasetMeta, options: Any = None, **common: Any):
        """`options`: GANOptions (or its dict); `common`: MedTask's settings."""
        if not all(hasattr(net, a) for a in ("generator", "discriminator", "z_dim")):
            raise ConfigError(
                f"model.net._target_: task_kind gan trains a generator against a discriminator; "
                f"{type(net).__name__} has neither (use model=gan: "
                "medpipe.models.nets.ConditionalGAN)"
            )
        super().__init__(net, meta, **common)
        self.automatic_optimization = False
        o = self.Options.model_validate(options or {})
        self.options = o
        self.loss_name = o.loss
        self.augment = DiffAugment(o.diffaugment, o.diffaugment_p)
        self.generator_ema = (
            copy.deepcopy(net.generator).requires_grad_(False) if o.ema_decay > 0 else None
        )
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        # the stored range the generator's [-1, 1] maps onto; set from the training split in setup
        self.register_buffer("stored_low", torch.tensor(0.0))
        self.register_buffer("stored_high", torch.tensor(float(meta.scale)))
        self.stored_dtype = "uint8" if float(meta.scale) == 255.0 else "float32"
        k = len(meta.classes)
        g = torch.Generator().manual_seed(VAL_NOISE_SEED)
        self.register_buffer(
            "grid_noise", torch.randn(k * o.grid_per_class, net.z_dim, generator=g)
        )
        for name in ("d", "g", "real", "fake", "gp", "n_d", "n_g"):
            self.register_buffer(f"_sum_{name}", torch.zeros((), dtype=torch.float64), False)
        # the feature classifier of val/fid and gan/*: kept off the module tree (not trained,
        # not in the state dict); the checkpoint stores it under medpipe.gan.features
        object.__setattr__(self, "feature_classifier", None)
        self._val_features: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self._d_params: list[nn.Parameter] = []
        self._ema_k = 0
        self._ema_bn_fresh = True  # the EMA's batch-norm statistics match its weights

    # -- scale ------------------------------------------------------------------------------------
    def to_stored(self, t: torch.Tensor) -> torch.Tensor:
        """Generator output in [-1, 1] -> stored intensities (float, differentiable)."""
        return self.stored_low + (t + 1) * 0.5 * (self.stored_high - self.stored_low)

    @property
    def sampling_generator(self) -> nn.Module:
        """The moving average if kept (its batch-norm statistics re-estimated for its own weights
        when they changed), else the trained generator."""
        if self.generator_ema is None:
            return self.net.generator
        if not self._ema_bn_fresh:
            counts = self.meta.class_counts.get("train") or [1] * len(self.meta.classes)
            recalibrate_batch_norm(self.generator_ema, counts, self.net.z_dim, self.device)
            self._ema_bn_fresh = True
        return self.generator_ema

    def _sampler(self, generator: nn.Module | None = None) -> GeneratorModel:
        """`generator` (default: the sampling generator, shared, not copied) with the
        stored-scale mapping."""
        return GeneratorModel(
            self.sampling_generator if generator is None else generator,
            float(self.stored_low),
            float(self.stored_high),
            is_integer_dtype(self.stored_dtype),
            self.net.z_dim,
        )

    def generator_model(self) -> GeneratorModel:
        """A copy of the sampling generator with the stored-scale mapping (on the CPU)."""
        return self._sampler(copy.deepcopy(self.sampling_generator).cpu().eval()).eval()

    def generate(
        self, counts: list[int], seed: int, batch_size: int = 512
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x stored scale float32 (N, C, H, W), y int64 (N,)) on the CPU: counts[c] samples of
        class c, class-major, noise from `seed` (the sampling generator, eval mode)."""
        return self._sampler().to(self.device).generate(counts, seed, batch_size)

    # -- set-up -----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage != "fit" or dm is None:
            return
        x = dm.split_arrays("train").x
        self.stored_dtype = str(np.dtype(x.dtype))
        if is_integer_dtype(self.stored_dtype):
            low, high = 0.0, float(self.meta.scale)
        else:
            low, high = float(np.min(x)), float(np.max(x))
        self.stored_low.fill_(low)
        self.stored_high.fill_(high if high > low else low + 1.0)

    def on_fit_start(self) -> None:
        if self.feature_classifier is None:
            self._make_feature_classifier()
        self.feature_classifier.to(self.device)
        self._d_params = list(self.net.discriminator.parameters())
        self._ema_k = int(self.ema_updates)  # once per fit (a resumed run continues its count)

    def _make_feature_classifier(self) -> None:
        from medpipe.evaluation import gan_quality

        o = self.options.eval
        if o.feature_ckpt:
            fc = gan_quality.load_feature_classifier(o.feature_ckpt, self.meta)
        else:
            train = self.trainer.datamodule.split_arrays("train")
            seed = int(self.run_config.get("seed", 0))
            fc = gan_quality.train_feature_classifier(
                train.x, train.y, self.meta, o.feature_epochs, seed, self.device
            )
            if self.trainer.is_global_zero:
                print(
                    f"gan: trained the feature classifier for val/fid and gan/* on the training "
                    f"split ({o.feature_epochs} epochs; model.eval.feature_ckpt to use your own)",
                    flush=True,
                )
        object.__setattr__(self, "feature_classifier", fc)

    # -- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.options
        opt_g = self.optimizer_factory(
            params=self.net.generator.parameters(), **({"lr": o.lr_g} if o.lr_g else {})
        )
        opt_d = self.optimizer_factory(
            params=self.net.discriminator.parameters(), **({"lr": o.lr_d} if o.lr_d else {})
        )
        schedulers = [
            build_scheduler(opt, self.scheduler_cfg, self.max_epochs) for opt in (opt_g, opt_d)
        ]
        if all(s is None for s in schedulers):
            return [opt_g, opt_d]
        return [opt_g, opt_d], [s for s in schedulers if s is not None]

    def training_step(self, batch, batch_idx):
        x, y, _ = unpack(batch)
        opt_g, opt_d = self.optimizers()
        D = self.net.discriminator
        n = len(x)
        g_step = (batch_idx + 1) % self.options.d_steps == 0
        real = self.preprocess(x)
        z = torch.randn(n, self.net.z_dim, device=x.device)
        with torch.set_grad_enabled(g_step):  # the generator's graph only when it is stepped
            fake = self.preprocess(self.to_stored(self.net.generator(z, y)))

        # discriminator: real and generated images of the same classes in one pass
        both = self.augment(torch.cat([real, fake.detach()]))
        scores = D(both, torch.cat([y, y]))
        s_real, s_fake = scores[:n], scores[n:]
        d_loss = d_loss_of(self.loss_name, s_real, s_fake)
        if self.loss_name == "wgan_gp":
            gp = gradient_penalty(D, both[:n], both[n:], y)
            d_loss = d_loss + self.options.gp_weight * gp
            self._sum_gp += gp.detach().double() * n
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self._sum_d += d_loss.detach().double() * n
        self._sum_real += s_real.detach().double().sum()
        self._sum_fake += s_fake.detach().double().sum()
        self._sum_n_d += n

        if g_step:  # generator: the same images through the updated discriminator
            for p in self._d_params:
                p.requires_grad_(False)  # no weight gradients for D: only the input's
            g_loss = g_loss_of(self.loss_name, D(self.augment(fake), y))
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
            for p in self._d_params:
                p.requires_grad_(True)
            self._update_ema()
            self._sum_g += g_loss.detach().double() * n
            self._sum_n_g += n
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self._end_train_epoch()

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.generator_ema is None:
            return
        k = self._ema_k  # a Python count (mirrored in the buffer for resumes): no host sync
        decay = min(self.options.ema_decay, (1 + k) / (10 + k))
        ema = list(self.generator_ema.parameters())
        live = list(self.net.generator.parameters())
        torch._foreach_lerp_(ema, live, 1 - decay)
        self._ema_bn_fresh = False  # its batch-norm statistics are the old weights'
        self.ema_updates += 1
        self._ema_k += 1

    def _end_train_epoch(self) -> None:
        """The epoch's mean losses and scores, logged once (no per-step host sync)."""
        n_d, n_g = self._sum_n_d.clamp(min=1), self._sum_n_g.clamp(min=1)
        logged = {
            "train/d_loss": self._sum_d / n_d,
            "train/g_loss": self._sum_g / n_g,
            "train/d_real": self._sum_real / n_d,  # mean score of real images
            "train/d_fake": self._sum_fake / n_d,  # of generated ones
        }
        if self.loss_name == "wgan_gp":
            logged["train/gp"] = self._sum_gp / n_d
        for key, value in logged.items():
            self.log(
                key,
                value.float(),
                on_step=False,
                on_epoch=True,
                prog_bar=key in ("train/d_loss", "train/g_loss"),
                sync_dist=True,
            )
        for name in ("d", "g", "real", "fake", "gp", "n_d", "n_g"):
            getattr(self, f"_sum_{name}").zero_()
        schedulers = self.lr_schedulers()
        for s in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            s.step()

    def on_train_epoch_end(self) -> None:
        done = self.current_epoch + 1
        if done % self.options.sample_every_n_epochs == 0 or done == self.trainer.max_epochs:
            self._log_grid(self.current_epoch)

    def _log_grid(self, step: int) -> None:
        """The fixed-noise grid (one row per class) as an MLflow image; its step is the epoch's
        (0-based, the step of the run's per-epoch metrics, so the UI's slider lines up)."""
        if not self.trainer.is_global_zero:
            return
        from medpipe.tracking.mlflow_run import mlflow_loggers

        loggers = mlflow_loggers(self.loggers)
        if not loggers:
            return
        from medpipe.evaluation.gan_quality import sample_grid, to_display

        k = len(self.meta.classes)
        y = torch.arange(k, device=self.device).repeat_interleave(self.options.grid_per_class)
        model = self._sampler()
        with eval_mode(model):
            x = model(self.grid_noise, y).cpu().numpy()
        grid = sample_grid(to_display(x, float(self.stored_low), float(self.stored_high)), k)
        for lg in loggers:
            lg.experiment.log_image(lg.run_id, grid, key="samples", step=step)

    # -- validation: val/fid and val/class_acc ----------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_features, self._val_labels = [], []

    def validation_step(self, batch, batch_idx):
        x, y, _ = unpack(batch)
        self._val_features.append(self.feature_classifier.embed(x)[1])
        self._val_labels.append(y.detach().cpu().long())

    def on_validation_epoch_end(self) -> None:
        from medpipe.evaluation.gan_quality import class_accuracy, frechet_distance

        if not self._val_features:
            return
        real = torch.cat(self._val_features).double().numpy()
        labels = torch.cat(self._val_labels)
        counts = torch.bincount(labels, minlength=len(self.meta.classes)).tolist()
        x, y = self.generate(counts, VAL_NOISE_SEED)
        logits, feats = self.feature_classifier.embed(x)
        fid = frechet_distance(feats.double().numpy(), real) if len(real) > 1 else math.nan
        acc, _ = class_accuracy(
            self.feature_classifier.predict(logits).numpy(), y.numpy(), len(self.meta.classes)
        )
        self.log("val/fid", fid, prog_bar=True)
        self.log("val/class_acc", acc)
        self._val_features, self._val_labels = [], []

    # -- test: nothing per batch; evaluate_outputs generates and measures --------------------------
    def test_step(self, batch, batch_idx):
        return None

    def on_test_epoch_end(self) -> None:
        self._test_buffer = []

    def evaluate_outputs(
        self, out_dir: Path, settings, test_split, rows=None, refit=True, info=None
    ):
        """gan/* of the (best) generator and plots/samples.png (medpipe.evaluation.gan_quality)."""
        from medpipe.evaluation.gan_quality import evaluate_gan

        if self.feature_classifier is None:
            self._make_feature_classifier()
        return evaluate_gan(self, Path(out_dir), test_split)

    # -- checkpoints and export -------------------------------------------------------------------
    def operating_point(self) -> dict[str, Any]:
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        fc = self.feature_classifier
        checkpoint["medpipe"]["gan"] = {
            "stored_dtype": self.stored_dtype,
            "z_dim": int(self.net.z_dim),
            "features": fc.state() if fc is not None else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        gan = (checkpoint.get("medpipe") or {}).get("gan") or {}
        self.stored_dtype = gan.get("stored_dtype", self.stored_dtype)
        self._ema_bn_fresh = True  # saved after validation had re-estimated them
        if gan.get("features") is not None and self.feature_classifier is None:
            from medpipe.evaluation.gan_quality import FeatureClassifier

            fc = FeatureClassifier.from_state(gan["features"]).eval()
            object.__setattr__(self, "feature_classifier", fc)

    def inference_model(self) -> nn.Module:
        return self.generator_model()

    def export_card(self, run_id: str, title: str) -> tuple[np.ndarray, dict[str, Any], str]:
        """(input example, card, description) of the exported generator, for medpipe.outputs:
        it takes noise and a class, not the data's samples."""
        meta, z_dim, k = self.meta, int(self.net.z_dim), len(self.meta.classes)
        rng = np.random.default_rng(0)
        example = np.concatenate(
            [np.arange(2, dtype=np.float32)[:, None] % k, rng.standard_normal((2, z_dim))], 1
        ).astype(np.float32)
        c, h, w = meta.sample_shape
        low, high = float(self.stored_low), float(self.stored_high)
        scale = (
            f"stored scale {low:g}-{high:g}, whole values ({self.stored_dtype} data as float32)"
            if is_integer_dtype(self.stored_dtype)
            else f"stored scale ({self.stored_dtype} data, range {low:.4g}-{high:.4g})"
        )
        classes = ", ".join(f"{i}={name}" for i, name in enumerate(meta.classes))
        card = {
            "input": (
                f"float32 (batch, 1 + {z_dim}): column 0 the class index ({classes}), columns "
                f"1-{z_dim} standard normal noise"
            ),
            "input_shape": [1 + z_dim],
            "output": f"images (batch, C={c}, H={h}, W={w}), {scale}",
            "output_shape": [c, h, w],
            "output_kind": "images",
            "classes": [str(x) for x in meta.classes],
            "task": "gan",
            "kind": meta.kind,
            "scale": float(meta.scale),
            "stored_dtype": self.stored_dtype,
            "stored_range": [low, high],
            "z_dim": z_dim,
            "variable_length": False,
        }
        note = "\n".join(
            [
                f"**{title}**: a class-conditional generator; a class and noise in, images out.",
                "",
                f"- **input**: {card['input']}",
                f"- **output**: {card['output']}, the scale of the processed data's samples",
                "",
                "```python",
                "import mlflow, torch",
                f'model = mlflow.pytorch.load_model("runs:/{run_id}/model")',
                f"x = torch.cat([torch.full((8, 1), 1.0), torch.randn(8, {z_dim})], 1)  # class 1",
                "images = model(x)",
                "```",
                "",
                "Samples in the data's own dtype, by class and seed: "
                f'`medpipe.tasks.gan.load_generator("runs:/{run_id}").sample({{1: 8}}, seed=0)`.',
            ]
        )
        return example, card, note


KIND = register_task_kind(
    TaskKind(
        name="gan",
        module=GANTask,
        data_tasks=("binary", "multiclass"),
        sample_kinds=("image",),
        metrics=GAN_METRICS,
        metric_prefixes=("class_acc_",),
        main_metrics=("fid", "class_acc", "gan/fid", "gan/kid", "gan/class_acc"),
        monitor="val/fid",
        minimised=("loss", "fid", "kid", "fid_real_floor", "kid_real_floor", "memorised_share"),
        auto=False,  # chosen by task_kind=gan only
    )
)
