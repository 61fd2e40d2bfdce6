"""Apply a trained model to new files:  python -m medpipe.predict ckpt_path=PATH inputs=DIR."""

from __future__ import annotations

import sys
from typing import Any

from medpipe.entry import hydra_entry


@hydra_entry("predict")
def main(c: dict[str, Any]) -> int:
    from medpipe.predicting import predict

    failed = predict(c)
    if failed:
        sys.exit(1)
    return 0


if __name__ == "__main__":
    main()
