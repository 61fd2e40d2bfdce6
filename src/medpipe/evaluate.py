"""Evaluate a checkpoint on its test split:  python -m medpipe.evaluate ckpt_path=PATH."""

from __future__ import annotations

from omegaconf import DictConfig

from medpipe.entry import hydra_entry


@hydra_entry("evaluate")
def main(cfg: DictConfig) -> dict[str, float]:
    from medpipe.pipeline import evaluate

    return evaluate(cfg)


if __name__ == "__main__":
    main()
