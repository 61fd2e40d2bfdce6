"""Differentially private training (`privacy=dp`): DP-SGD through Opacus.

Each optimizer step takes a Poisson sample of the training split (every sample joins with
probability q = batch_size / N, MedDataModule), computes per-sample gradients (Opacus'
GradSampleModule hooks on the net), clips each to `privacy.max_grad_norm`, adds Gaussian noise of
standard deviation noise_multiplier * max_grad_norm and divides by the expected batch size
(Opacus' DPOptimizer around the configured optimizer). An Opacus accountant adds up the privacy
spent; `privacy/epsilon` (at `delta`) is logged every epoch.

Nets are made trainable first (`private_net`): BatchNorm becomes GroupNorm (its statistics mix the
samples of a batch), nn.LSTM/nn.GRU become Opacus' DPLSTM/DPGRU for training (same state_dict
names, so the checkpoint loads into the plain net); anything else Opacus refuses is named in one
line. Checkpoints hold the plain net's parameter names: the hooks live outside the module tree.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from medpipe.errors import ConfigError

# Opacus' drop-in recurrent layers: their state_dict names are those of nn.LSTM/nn.GRU, so they
# are swapped in for training only and swapped back after fit (evaluation, export, explanations
# and the logged model see plain torch layers).
_RECURRENT = ("LSTM", "GRU")
# Opacus' hooks on a net's first layer, whose input needs no gradient: torch says so every step
warnings.filterwarnings("ignore", message=".*Full backward hook is firing when gradients.*")
# the PRV accountant bounds its domain with RDP, whose order search says this on short trainings
_RDP_NOTICE = ".*Optimal order is the (largest|smallest) alpha.*"


def default_delta(n: int) -> float:
    """1 / (10 N) rounded down to a power of ten (N = training samples): well below 1/N, the
    level at which releasing one whole record would still meet the guarantee."""
    return 10.0 ** math.floor(math.log10(1.0 / (10 * n)))


@dataclass(frozen=True)
class DPPlan:
    """The DP-SGD settings of one training, fixed before it starts."""

    noise_multiplier: float
    sample_rate: float  # q: each sample's probability of joining a step's batch
    delta: float
    steps: int  # optimizer steps planned: max_epochs * steps per epoch
    max_grad_norm: float
    expected_batch_size: int
    accountant: str
    poisson: bool
    target_epsilon: float | None = None

    def params(self) -> dict[str, Any]:
        """MLflow params (named privacy/*, apart from the config's privacy.* keys)."""
        return {f"privacy/{k}": v for k, v in asdict(self).items()}


def plan(c: dict[str, Any], n_train: int, kind_name: str = "") -> DPPlan:
    """The noise multiplier for `privacy.target_epsilon` at `delta` after max_epochs (or the
    given `privacy.noise_multiplier`), from N = `n_train` and data.batch_size. ConfigError when
    the budget cannot be met."""
    p = c["privacy"]
    if kind_name == "gan":
        raise ConfigError("task_kind: privacy.dp trains classifiers and regressors, not GANs")
    batch = int(c["data"]["batch_size"])
    if n_train < 2 or batch >= n_train:
        raise ConfigError(
            f"data.batch_size: privacy.dp samples batches of expected size {batch} from the "
            f"{n_train} training samples; use a batch size below N"
        )
    q = batch / n_train
    per_epoch = math.ceil(n_train / batch)  # as many steps as the non-private loader takes
    limit = (c.get("trainer") or {}).get("limit_train_batches")
    if isinstance(limit, int) and limit >= 1 and not isinstance(limit, bool):
        per_epoch = min(per_epoch, limit)
    elif isinstance(limit, float) and 0 < limit < 1:
        per_epoch = max(1, int(per_epoch * limit))
    steps = int(c["trainer"]["max_epochs"]) * per_epoch
    delta = float(p["delta"]) if p.get("delta") is not None else default_delta(n_train)
    accountant = str(p.get("accountant", "prv"))
    sigma = p.get("noise_multiplier")
    if sigma is None:
        from opacus.accountants.utils import get_noise_multiplier

        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_RDP_NOTICE)
                sigma = get_noise_multiplier(
                    target_epsilon=float(p["target_epsilon"]),
                    target_delta=delta,
                    sample_rate=q,
                    steps=steps,
                    accountant=accountant,
                )
        except ValueError as err:
            raise ConfigError(
                f"privacy.target_epsilon: {p['target_epsilon']} cannot be met in {steps} steps "
                f"at q={q:.4g}, delta={delta:g} ({err}); raise it or train fewer epochs"
            ) from None
    return DPPlan(
        noise_multiplier=float(sigma),
        sample_rate=q,
        delta=delta,
        steps=steps,
        max_grad_norm=float(p["max_grad_norm"]),
        expected_batch_size=batch,
        accountant=accountant,
        poisson=bool(p.get("poisson_sampling", True)),
        target_epsilon=None if p.get("target_epsilon") is None else float(p["target_epsilon"]),
    )


def _refusals(net: nn.Module, fix: bool) -> list[tuple[str, str]]:
    """(module path, type name) of each layer DP-SGD cannot train as it is; with `fix`, only
    those that cannot be replaced."""
    from opacus.validators import ModuleValidator

    bad = []
    for name, module in net.named_modules():
        kind = type(module)
        refused = kind in ModuleValidator.VALIDATORS or (  # or trainable with buffers
            any(True for _ in module.buffers(recurse=False))
            and any(p.requires_grad for p in module.parameters(recurse=False))
        )
        if refused and not (fix and kind in ModuleValidator.FIXERS):
            bad.append((name or "(the net)", kind.__name__))
    return bad


def private_net(net: nn.Module, fix_layers: bool, training: bool) -> nn.Module:
    """The net DP-SGD trains. `training`: for this run's training (refusals raise ConfigError,
    recurrent layers become Opacus' and a line says what was replaced); else for loading a DP
    run's checkpoint: only the replacements that change the parameters (BatchNorm -> GroupNorm)."""
    from opacus.validators import ModuleValidator

    if training:
        if hasattr(net, "fit_features"):
            raise ConfigError(
                f"model: {type(net).__name__} fits its features on the training split in one "
                "pass, outside DP-SGD; privacy.dp trains nets by gradient steps only"
            )
        bad = _refusals(net, fix_layers)
        if bad:
            what = ", ".join(f"{name} ({kind})" for name, kind in bad)
            fixable = "" if fix_layers else " (privacy.fix_layers=true replaces BatchNorm with "
            fixable += "" if fix_layers else "GroupNorm and LSTM/GRU with Opacus' DPLSTM/DPGRU)"
            raise ConfigError(
                f"model: privacy.dp cannot train {what}: Opacus computes per-sample gradients of "
                f"layers without batch statistics or fused kernels{fixable}"
            )
        for module in net.modules():  # an in-place activation would overwrite the output a
            if getattr(module, "inplace", False) is True:  # per-sample backward hook holds
                module.inplace = False
    replaced: Counter[tuple[str, str]] = Counter()
    for name, module in list(net.named_modules()):
        kind = type(module)
        if kind not in ModuleValidator.FIXERS or not name:
            continue
        if kind.__name__ in _RECURRENT and not training:
            continue
        new = ModuleValidator.FIXERS[kind](module)
        if hasattr(new, "old_to_new"):  # DPLSTM/DPGRU: torch's names inside a bigger net too
            _torch_names(new)
        first = next(module.parameters(), None)
        if first is not None:
            new.to(device=first.device, dtype=first.dtype)
        parent, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent), attr, new)
        replaced[kind.__name__, type(new).__name__] += 1
    if training and replaced and rank_zero_only.rank == 0:
        what = ", ".join(
            f"{n} {src} layer{'s' if n > 1 else ''} with {dst}"
            for (src, dst), n in replaced.items()
        )
        why = []
        if any("BatchNorm" in src for src, _ in replaced):
            why.append("Opacus cannot train BatchNorm privately")
        if any(src in _RECURRENT for src, _ in replaced):
            why.append("for training only; the checkpoint keeps torch's names")
        print(f"privacy: replaced {what} ({'; '.join(why) or 'as Opacus requires'})")
    return net


def _drop_inner_names(module, state_dict, prefix, local_metadata) -> None:
    for inner in module.old_to_new:
        state_dict.pop(prefix + inner, None)


def _fill_inner_names(module, state_dict, prefix, *args) -> None:
    for inner, torch_name in module.old_to_new.items():
        if prefix + torch_name in state_dict and prefix + inner not in state_dict:
            state_dict[prefix + inner] = state_dict[prefix + torch_name]


def _torch_names(module: nn.Module) -> None:
    """Opacus' DPLSTM/DPGRU hold each weight twice, under nn.LSTM's name and under its cells'
    (l0.ih.weight); its own filter drops the latter only when it is the outermost module. These
    hooks make its state_dict nn.LSTM's wherever it sits, and load such a state_dict back."""
    module._state_dict_hooks.clear()  # Opacus' filter returns a copy: lost when nested
    module._register_state_dict_hook(_drop_inner_names)
    module._register_load_state_dict_pre_hook(_fill_inner_names, with_module=True)


def plain_recurrent(net: nn.Module) -> nn.Module:
    """Opacus' DPLSTM/DPGRU back to nn.LSTM/nn.GRU with the same weights (state_dict names are
    the same): what the rest of the pipeline reads after training."""
    from opacus.layers import DPGRU, DPLSTM

    plain = {DPLSTM: nn.LSTM, DPGRU: nn.GRU}
    for name, module in list(net.named_modules()):
        cls = plain.get(type(module))
        if cls is None or not name:
            continue
        new = cls(
            module.input_size,
            module.hidden_size,
            num_layers=module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=module.dropout,
            bidirectional=module.bidirectional,
        )
        new.load_state_dict(module.state_dict())
        first = next(module.parameters())
        new.to(device=first.device, dtype=first.dtype)
        parent, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent), attr, new)
    return net


class DPTraining(L.Callback):
    """DP-SGD for one fit: per-sample gradient hooks on the task's net, the task's optimizer
    wrapped in Opacus' DPOptimizer, the accountant stepped with it and `privacy/epsilon` logged
    at the end of every training epoch. The accountant's history travels in the checkpoint (a
    resumed run goes on counting). Validation and test run the plain net (the hooks record
    nothing outside training mode)."""

    def __init__(self, plan: DPPlan, seed: int):
        from opacus.accountants import create_accountant

        self.plan = plan
        self.seed = seed
        self.accountant = create_accountant(mechanism=plan.accountant)
        self.epsilon = 0.0
        self._hooks = None  # the GradSampleModule, kept off the LightningModule's tree

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.accountant.history]}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """A resumed fit goes on counting; testing a checkpoint restores nothing here."""
        from lightning.pytorch.trainer.states import TrainerFn

        state = (checkpoint.get("callbacks") or {}).get(self.state_key)
        if trainer.state.fn == TrainerFn.FITTING and isinstance(state, dict):
            self.accountant.history = [tuple(h) for h in state.get("history", [])]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from opacus.grad_sample import GradSampleModule
        from opacus.optimizers import DPOptimizer

        self._hooks = GradSampleModule(pl_module.net, batch_first=True, loss_reduction="mean")
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed + 104_729)
        wrapped = []
        for optimizer in trainer.strategy.optimizers:
            dp = DPOptimizer(
                optimizer,
                noise_multiplier=self.plan.noise_multiplier,
                max_grad_norm=self.plan.max_grad_norm,
                expected_batch_size=self.plan.expected_batch_size,
                loss_reduction="mean",
                generator=generator,
            )
            dp.attach_step_hook(
                self.accountant.get_optimizer_hook_fn(sample_rate=self.plan.sample_rate)
            )
            wrapped.append(dp)
        trainer.strategy.optimizers = wrapped

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.accountant.history:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_RDP_NOTICE)
                self.epsilon = float(self.accountant.get_epsilon(delta=self.plan.delta))
        pl_module.log("privacy/epsilon", self.epsilon, on_step=False, on_epoch=True)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._hooks is not None:
            self._hooks.remove_hooks()
            self._hooks = None
        trainer.strategy.optimizers = [  # the plain optimizer for what follows
            getattr(o, "original_optimizer", o) for o in trainer.strategy.optimizers
        ]
        plain_recurrent(pl_module.net)
        if rank_zero_only.rank == 0:
            self.say()

    def steps(self) -> int:
        """DP-SGD steps taken (the accountant's history holds (sigma, q, steps) entries)."""
        return int(sum(h[2] for h in self.accountant.history))

    def summary(self) -> dict[str, float]:
        """What metrics.json and the report state."""
        return {
            "privacy/epsilon": self.epsilon,
            "privacy/delta": self.plan.delta,
            "privacy/noise_multiplier": self.plan.noise_multiplier,
            "privacy/sample_rate": self.plan.sample_rate,
            "privacy/max_grad_norm": self.plan.max_grad_norm,
            "privacy/steps": float(self.steps()),
        }

    def say(self) -> None:
        p = self.plan
        target = f" of target {p.target_epsilon:g}" if p.target_epsilon is not None else ""
        print(
            f"privacy: epsilon {self.epsilon:.3g}{target} spent at delta {p.delta:g} "
            f"({self.steps()} DP-SGD steps, noise multiplier {p.noise_multiplier:.4g}, "
            f"sample rate {p.sample_rate:.4g}, clipping {p.max_grad_norm:g}, {p.accountant} "
            f"accountant{'' if p.poisson else '; without Poisson sampling epsilon is approximate'})"
        )


def private_training(c: dict[str, Any], dm, kind, folds=None) -> DPTraining:
    """The DP-SGD callback of one training (fold): its plan from the training split's size, and
    the DataModule set to Poisson-sample the training batches at the plan's rate."""
    n = len(folds["train"]) if folds is not None else int(dm.meta.sizes["train"])
    p = plan(c, n, getattr(kind, "name", ""))
    if p.poisson:
        dm.poisson_rate = p.sample_rate
    return DPTraining(p, int(c["seed"]))
