"""A Hydra sweeper driven by an Optuna study (seeded TPE by default), on current Optuna.

Why not hydra-optuna-sweeper: its last release (1.3.0) requires optuna<3, whose sqlite storage
breaks under SQLAlchemy 2 (which MLflow 3 needs); Optuna 4/5 support exists only in Hydra's
unreleased 1.4 line. This sweeper keeps that plugin's search-space syntax:

    hydra.sweeper.params:
      optimizer.lr: tag(log, interval(1e-4, 1e-2))   # float, log scale
      data.batch_size: choice(32, 64, 128)             # categorical
      model.net.hidden: range(128, 513, 128)           # integers
      augmentation: choice(none, light, strong)        # config-group choices work too

Sweeps on the command line (key=a,b or key=choice(a,b)) join the search space; plain overrides
apply to every trial. Each trial is a Hydra job; its return value (train's best monitor value) is
the objective. A failed or NaN trial is told to Optuna as FAIL and the study goes on.

`storage` (an Optuna storage URL, e.g. sqlite:///logs/optuna.db) keeps the study on disk: the same
command again resumes it (Optuna's load_if_exists): its finished trials are kept, trials left
running by a process that died are told as FAIL, and trials run until the study holds `n_trials`
finished ones. Without it the study lives in memory, as before.
"""

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional  # noqa: UP035 - OmegaConf structured configs

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class OptunaTPESweeperConf:
    _target_: str = "hydra_plugins.medpipe_optuna_sweeper.optuna_sweeper.OptunaTPESweeper"
    direction: str = "maximize"  # maximize | minimize (max | min accepted)
    n_trials: int = 20
    n_jobs: int = 1  # trials launched together (parallel with a parallel launcher)
    seed: int = 0
    sampler: str = "tpe"  # tpe | random
    n_startup_trials: int = 5  # random trials before TPE models the search space
    study_name: str = "medpipe"
    storage: Optional[str] = None  # noqa: UP045 - e.g. sqlite:///logs/optuna.db: resumable
    params: Dict[str, str] = field(default_factory=dict)  # noqa: UP006


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna_tpe", node=OptunaTPESweeperConf, provider="medpipe"
)


def _direction(d: str) -> str:
    d = d.lower()
    if d in ("max", "maximize"):
        return "maximize"
    if d in ("min", "minimize"):
        return "minimize"
    raise ValueError(f"hydra.sweeper.direction: '{d}' is not maximize or minimize")


class Dimension:
    """One searched key and how to sample it from an Optuna trial."""

    def __init__(self, override: Override):
        self.key = override.get_key_element()
        value = override.value()
        self.log = False
        if isinstance(value, ChoiceSweep):
            self.kind, self.choices = "choice", [_plain(v) for v in value.list]
        elif isinstance(value, RangeSweep):
            self.kind, self.choices = "choice", list(override.sweep_iterator())
        elif isinstance(value, IntervalSweep):
            self.log = "log" in value.tags
            self.low, self.high = value.start, value.end
            both_int = isinstance(self.low, int) and isinstance(self.high, int)
            self.kind = "int" if both_int else "float"
        else:
            raise ValueError(
                f"hydra.sweeper.params.{self.key}: use choice(...), range(...) or interval(...)"
            )

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            labels = [str(c) for c in self.choices]
            picked = trial.suggest_categorical(self.key, labels)
            return self.choices[labels.index(picked)]
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), log=self.log)


def _plain(v: Any) -> Any:
    return v.value if hasattr(v, "value") and not isinstance(v, str | int | float | bool) else v


def _format(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


class OptunaTPESweeper(Sweeper):
    def __init__(
        self,
        direction: str,
        n_trials: int,
        n_jobs: int,
        seed: int,
        sampler: str,
        n_startup_trials: int,
        study_name: str,
        params: dict[str, str] | None,
        storage: str | None = None,
    ):
        self.direction = _direction(str(direction))
        self.n_trials, self.n_jobs, self.seed = int(n_trials), max(1, int(n_jobs)), int(seed)
        self.sampler_name, self.n_startup_trials = sampler, int(n_startup_trials)
        self.study_name, self.storage = study_name, storage or None
        self.params = dict(params or {})

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _space(self, arguments: list[str]) -> tuple[list[Dimension], list[str]]:
        parser = OverridesParser.create()
        dims, fixed = [], []
        for o in parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()]):
            dims.append(Dimension(o))
        for o in parser.parse_overrides(arguments):
            if o.is_sweep_override():
                dims = [d for d in dims if d.key != o.get_key_element()] + [Dimension(o)]
            else:
                fixed.append(o.input_line)
        return dims, fixed

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        dims, fixed = self._space(arguments)
        if self.sampler_name == "random":
            sampler = optuna.samplers.RandomSampler(seed=self.seed)
        else:
            sampler = optuna.samplers.TPESampler(
                seed=self.seed, n_startup_trials=self.n_startup_trials
            )
        study = optuna.create_study(
            study_name=self.study_name,
            direction=self.direction,
            sampler=sampler,
            storage=self.storage,
            load_if_exists=self.storage is not None,
        )
        states = optuna.trial.TrialState
        for t in study.get_trials(deepcopy=False, states=(states.RUNNING, states.WAITING)):
            study.tell(t.number, state=states.FAIL)  # left by a sweep that died
        done = len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.FAIL)))
        if done:
            print(
                f"optuna: resuming study {self.study_name} from {self.storage}: {done} trials done"
            )
        returns = []
        while done < self.n_trials:
            batch = min(self.n_jobs, self.n_trials - done)
            trials = [study.ask() for _ in range(batch)]
            overrides = [
                fixed
                + [f"{d.key}={_format(d.suggest(t))}" for d in dims]
                + [f"+optuna_trial={t.number}"]
                for t in trials
            ]
            self.validate_batch_is_legal(overrides)
            results = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            for trial, ret in zip(trials, results, strict=True):
                value = ret._return_value if ret.status == JobStatus.COMPLETED else None
                if isinstance(value, int | float) and not math.isnan(float(value)):
                    study.tell(trial, float(value))
                else:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
            returns.append(results)
            done += batch
        self._write_results(study)
        return returns

    def _write_results(self, study) -> None:
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        out = {
            "name": self.study_name,
            "direction": self.direction,
            "n_trials": len(study.trials),
            "n_complete": len(complete),
        }
        if complete:
            best = study.best_trial
            out.update(best_trial=best.number, best_value=best.value, best_params=best.params)
            log.info("best trial %s: %s = %s", best.number, best.params, best.value)
        path = Path(self.config.hydra.sweep.dir) / "optimization_results.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(out), path)
        print(
            f"optuna: {len(complete)}/{len(study.trials)} trials complete"
            + (
                f"; best trial {out['best_trial']} ({out['best_value']:.4f}): {out['best_params']}"
                if complete
                else ""
            )
            + f"; results in {path}"
        )
