"""Prepare a dataset into the processed format:  python -m medpipe.prepare data=NAME."""

from __future__ import annotations

from typing import Any

from medpipe.entry import hydra_entry


@hydra_entry("prepare")
def main(c: dict[str, Any]) -> str:
    from medpipe.data.prepare import prepare_from_config
    from medpipe.data.processed import read_meta

    folder = prepare_from_config(c)
    meta = read_meta(folder)
    sizes = ", ".join(f"{k} {v}" for k, v in meta.sizes.items())
    print(
        f"{meta.name}: {meta.kind} {meta.sample_shape}, {meta.task} ({', '.join(meta.classes)}); {sizes}"
    )
    print(f"processed: {folder}")
    return str(folder)


if __name__ == "__main__":
    main()
