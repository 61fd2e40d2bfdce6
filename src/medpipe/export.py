"""Export a checkpoint's model:  python -m medpipe.export ckpt_path=PATH format=onnx|torch_export."""

from __future__ import annotations

from typing import Any

from medpipe.entry import hydra_entry


@hydra_entry("export")
def main(c: dict[str, Any]) -> dict[str, float]:
    from medpipe.exporting import export

    return export(c)


if __name__ == "__main__":
    main()
