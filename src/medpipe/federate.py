"""Federated training with Flower:  python -m medpipe.federate [train overrides] fl.clients=4 ...

Composes the training config (conf/federate.yaml: conf/train.yaml plus an `fl` section), prepares
the data once, splits the training split among `fl.clients` clients (iid or Dirichlet(alpha) by
class) and runs a Flower federation of real processes on 127.0.0.1 (a SuperLink and one SuperNode
per client) that it starts and stops itself (medpipe.federated). Returns the best validation value
of `monitor` over the rounds.
"""

from __future__ import annotations

from typing import Any

from medpipe.entry import hydra_entry


@hydra_entry("federate")
def main(c: dict[str, Any]) -> float | None:
    from medpipe.data.prepare import prepare_from_config
    from medpipe.data.processed import read_meta
    from medpipe.tracking.store import check_tracking

    check_tracking(c)
    c.pop("resume", None)
    c.pop("sweep", None)
    folder = prepare_from_config(c)
    from medpipe.checks import check_run

    c, kind = check_run(c, read_meta(folder))
    from medpipe.federated.run import federate

    return federate(c, folder, kind)


if __name__ == "__main__":
    main()
