"""Split a training set among federated clients (numpy only).

iid:        a seeded shuffle cut into equal parts (sizes differ by at most one).
dirichlet:  for every class, its samples are shared out in proportions drawn from
            Dirichlet(alpha, ..., alpha) over the clients (Hsu et al. 2019, "Measuring the effects of
            non-identical data distribution"); small alpha gives each client a few dominant classes.
            Draws are repeated (same seed stream) until every client holds at least `min_size`
            samples. Regression targets are binned into quantiles first, multilabel data by its
            first label (medpipe.data.folds.strata), as cross-validation stratifies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medpipe.errors import ConfigError

MAX_DRAWS = 1000


def partition(
    labels: np.ndarray,
    clients: int,
    method: str,
    alpha: float = 0.5,
    seed: int = 0,
    min_size: int = 1,
) -> list[np.ndarray]:
    """For each client, the sorted row indices of its shard of the training split. `labels`: one
    integer stratum per row."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    n = len(labels)
    if n < clients * min_size:
        raise ConfigError(
            f"fl.clients: {clients} clients need at least {clients * min_size} training samples; "
            f"the training split has {n}"
        )
    rng = np.random.default_rng(seed)
    if method == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(n), clients)]
    if method != "dirichlet":
        raise ConfigError(f"fl.partition: '{method}' is not a partition; use iid or dirichlet")
    classes = np.unique(labels)
    for _ in range(MAX_DRAWS):
        shards: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for k in classes:
            rows = rng.permutation(np.flatnonzero(labels == k))
            share = rng.dirichlet(np.full(clients, float(alpha)))
            cuts = (np.cumsum(share)[:-1] * len(rows)).astype(int)
            for i, part in enumerate(np.split(rows, cuts)):
                shards[i].append(part)
        parts = [np.sort(np.concatenate(s)) for s in shards]
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise ConfigError(
        f"fl.alpha: {MAX_DRAWS} Dirichlet({alpha}) draws all left a client with fewer than "
        f"{min_size} samples; raise fl.alpha or lower fl.clients"
    )


def describe(parts: list[np.ndarray], labels: np.ndarray) -> list[dict[str, Any]]:
    """Per client: its size and its count of every stratum (what the runs record)."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    classes = [int(k) for k in np.unique(labels)]
    return [
        {
            "client": i,
            "size": int(len(p)),
            "class_counts": {str(k): int((labels[p] == k).sum()) for k in classes},
        }
        for i, p in enumerate(parts)
    ]
