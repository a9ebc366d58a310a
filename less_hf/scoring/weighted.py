"""Checkpoint-weighted unit features, for methods that need the features themselves (TSDS's nearest neighbours)
rather than LESS scores: the one place besides :func:`score_datastore` that reads features for scoring."""

from __future__ import annotations

import numpy as np

from ..datastore import Datastore, TargetFeatures
from ..errors import ConfigError
from .aggregate import normalize_rows

CHECKPOINT_CHOICES = ("all", "last")


def weighted_features(
    datastore: Datastore, targets: list[TargetFeatures], checkpoints: str = "all", dim: int | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Unit features of every checkpoint scaled by √η̄ᵢ and concatenated, so that a dot product of two rows is the
    LESS-weighted sum of their per-checkpoint cosines.

    Args:
        datastore: the pool's datastore.
        targets: the targets' features in it.
        checkpoints: ``"all"`` (η̄-weighted) or ``"last"`` (the last checkpoint alone).
        dim: projected dimension (default: the largest built).

    Returns:
        ``(pool (N, C·d), valid (N,), {target name: (valid examples, C·d)})``, float32.
    """
    if checkpoints not in CHECKPOINT_CHOICES:
        raise ConfigError(f"checkpoints={checkpoints!r}; choose one of {CHECKPOINT_CHOICES}.")
    dim = dim or max(datastore.manifest.dims)
    names = [c.name for c in datastore.manifest.checkpoints]
    weights = np.asarray(datastore.weights, dtype=np.float64)
    if checkpoints == "last":
        names, weights = names[-1:], np.ones(1)
    scale = np.sqrt(weights / weights.sum()).astype(np.float32)
    n = datastore.manifest.n_rows
    blocks = []
    for name, s in zip(names, scale):
        with datastore.pool_reader(name, dim) as reader:
            blocks.append(normalize_rows(reader.read(0, n)) * s)
    out = {}
    for target in targets:
        parts = [normalize_rows(np.asarray(target.features(c, dim))) * s for c, s in zip(names, scale)]
        out[target.name] = np.concatenate(parts, axis=1)[target.valid]
    return np.concatenate(blocks, axis=1), np.asarray(datastore.valid, dtype=bool), out
