"""Train a model from the composed config:  python -m medpipe.train [overrides].

Returns the best value of `monitor` so that Hydra sweepers can optimise it.
"""

from __future__ import annotations

from omegaconf import DictConfig

from medpipe.entry import hydra_entry


def check_task(cfg: DictConfig, folder) -> None:
    from omegaconf import OmegaConf

    from medpipe.data.processed import read_meta
    from medpipe.errors import ConfigError
    from medpipe.task_check import task_problems

    problems = task_problems(OmegaConf.to_container(cfg, resolve=True), read_meta(folder))
    if problems:
        raise ConfigError(problems)


@hydra_entry("train")
def main(cfg: DictConfig) -> float | None:
    from medpipe.data.prepare import prepare_from_config

    # numpy only: a bad data file fails before torch is imported; train reuses the folder
    folder = prepare_from_config(cfg)
    check_task(cfg, folder)  # loss and monitor against the data's task, still before torch
    from medpipe.pipeline import train

    return train(cfg, folder)


if __name__ == "__main__":
    main()
