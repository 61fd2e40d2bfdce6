"""Explain a checkpoint's predictions:  python -m medpipe.explain ckpt_path=PATH [n=16] [inputs=...]."""

from __future__ import annotations

from typing import Any

from medpipe.entry import hydra_entry


@hydra_entry("explain")
def main(c: dict[str, Any]) -> dict[str, float]:
    from medpipe.explaining import explain

    return explain(c)


if __name__ == "__main__":
    main()
