"""Evaluate a checkpoint on its test split:  python -m medpipe.evaluate ckpt_path=PATH."""

from __future__ import annotations

from typing import Any

from medpipe.entry import hydra_entry


@hydra_entry("evaluate")
def main(c: dict[str, Any]) -> dict[str, float]:
    from medpipe.pipeline import evaluate

    return evaluate(c)


if __name__ == "__main__":
    main()
