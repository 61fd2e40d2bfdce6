"""Train a model from the composed config:  python -m medpipe.train [overrides].

Returns the best value of `monitor` so that Hydra sweepers can optimise it.
"""

from __future__ import annotations

from omegaconf import DictConfig

from medpipe.entry import hydra_entry


@hydra_entry("train")
def main(cfg: DictConfig) -> float | None:
    from medpipe.data.prepare import prepare_from_config

    # numpy only: a bad data file fails before torch is imported; train reuses the folder
    folder = prepare_from_config(cfg)
    from medpipe.pipeline import train

    return train(cfg, folder)


if __name__ == "__main__":
    main()
