"""Stream the pool's features from disk in blocks and score them against many targets in one pass."""

from __future__ import annotations

import numpy as np
import torch

from .._logging import progress
from ..datastore import Datastore, TargetFeatures
from ..errors import InputError
from .aggregate import subtask_directions


def cosine_block(block: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``unit(block) @ directions`` without materialising the normalised block: ``(block @ D) / ‖row‖``.

    One fp16/int8 → fp32 conversion, one matmul and one row-norm per block; all-zero rows score 0.
    """
    x = block.float()
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return (x @ directions).div_(torch.where(norms > 0, norms, torch.ones_like(norms)))


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
        raise InputError(f"dim={dim} was not built; this datastore has {datastore.manifest.dims}.")
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
    stacked = [
        torch.from_numpy(np.concatenate([m[i] for m in matrices], axis=0).T.copy()) for i in range(len(checkpoints))
    ]
    n = datastore.manifest.n_rows
    scores = {t.name: np.empty(n, dtype=np.float32) for t in targets}
    readers = [datastore.pool_reader(c, dim) for c in checkpoints]
    try:
        for lo in progress(range(0, n, block_rows), desc="Scoring", unit="block", disable=n <= block_rows):
            hi = min(n, lo + block_rows)
            acc = torch.zeros((hi - lo, start), dtype=torch.float32)
            for w, reader, matrix in zip(weights, readers, stacked):
                acc += cosine_block(torch.from_numpy(reader.read(lo, hi)), matrix).mul_(float(w))
            for name, (a, b) in spans.items():
                scores[name][lo:hi] = acc[:, a:b].amax(dim=1).numpy()
    finally:
        for reader in readers:
            reader.close()
    valid = datastore.valid
    for name in scores:
        scores[name][~valid] = -np.inf
    return scores
