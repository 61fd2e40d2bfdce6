"""Train a model from the composed config:  python -m medpipe.train [overrides].

Returns the best value of `monitor` so that Hydra sweepers can optimise it.
"""

from __future__ import annotations

from typing import Any

from medpipe.entry import hydra_entry


@hydra_entry("train")
def main(c: dict[str, Any]) -> float | None:
    from medpipe.data.prepare import prepare_from_config
    from medpipe.data.processed import read_meta

    # numpy only: a bad data file fails before torch is imported; training reuses the folder
    folder = prepare_from_config(c)
    from medpipe.checks import check_run  # task kind, net and monitor against the data

    c, kind = check_run(c, read_meta(folder))
    from medpipe.pipeline import train

    return train(c, folder, kind)


if __name__ == "__main__":
    main()
