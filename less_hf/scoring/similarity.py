"""Stream the pool's features from disk in blocks and score them against many targets in one pass."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..datastore import Datastore, TargetFeatures
from .aggregate import normalize_rows, subtask_directions


def score_datastore(
    datastore: Datastore,
    targets: list[TargetFeatures],
    dim: int | None = None,
    aggregate: str = "mean_of_cosines",
    block_rows: int = 65536,
) -> dict[str, np.ndarray]:
    """LESS scores of every pool row for every target.

    ``score(z, task) = max over subtasks j of Σᵢ η̄ᵢ · aggᵢⱼ(z)`` where ``aggᵢⱼ`` is the subtask's aggregate of
    cosines at checkpoint i (see :func:`subtask_directions`). Memory is one block of rows plus the output, whatever
    the pool size. Rows without a supervised token get ``-inf``.

    Returns:
        ``{target name: (N,) float32 scores}``.
    """
    dim = dim or max(datastore.manifest.dims)
    if dim not in datastore.manifest.dims:
        raise ValueError(f"dim={dim} was not built; this datastore has {datastore.manifest.dims}.")
    checkpoints = [c.name for c in datastore.manifest.checkpoints]
    weights = datastore.weights
    # (d, S_total) per checkpoint, and which columns belong to which target
    matrices, spans, start = [], {}, 0
    for target in targets:
        per_ckpt = [
            subtask_directions(target.features(c, dim), target.subtasks, target.valid, aggregate)[0]
            for c in checkpoints
        ]
        spans[target.name] = (start, start + per_ckpt[0].shape[0])
        start += per_ckpt[0].shape[0]
        matrices.append(per_ckpt)
    stacked = [np.concatenate([m[i] for m in matrices], axis=0).T.copy() for i in range(len(checkpoints))]
    n = datastore.manifest.n_rows
    scores = {t.name: np.empty(n, dtype=np.float32) for t in targets}
    pool = [datastore.pool_features(c, dim) for c in checkpoints]
    for lo in tqdm(range(0, n, block_rows), desc="Scoring", unit="block", disable=n <= block_rows):
        hi = min(n, lo + block_rows)
        acc = np.zeros((hi - lo, start), dtype=np.float32)
        for w, features, matrix in zip(weights, pool, stacked):
            acc += np.float32(w) * (normalize_rows(features[lo:hi]) @ matrix)
        for name, (a, b) in spans.items():
            scores[name][lo:hi] = acc[:, a:b].max(axis=1)
    valid = datastore.valid
    for name in scores:
        scores[name][~valid] = -np.inf
    return scores
