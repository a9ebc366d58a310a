"""Stream the pool's features from disk in blocks and score them against many targets in one pass."""

from __future__ import annotations

import numpy as np
import torch

from .._logging import progress
from ..datastore import Datastore, TargetFeatures
from ..datastore.packed import decode_levels, level_table
from ..errors import InputError
from .aggregate import subtask_directions


def cosine_block(block: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``unit(block) @ directions`` without materialising the normalised block: ``(block @ D) / ‖row‖``.

    One fp16/int8 → fp32 conversion, one matmul and one row-norm per block; all-zero rows score 0.
    """
    x = block.float()
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return (x @ directions).div_(torch.where(norms > 0, norms, torch.ones_like(norms)))


READ_BYTES = 64 << 20
"""Bytes of one checkpoint's features read from disk at a time (one large read into a reused buffer)."""
CHUNK_BYTES = 64 << 20
"""Bytes of float32 rows decoded at a time (2,048 rows at d = 8192): the store is never converted to float beyond one
chunk. On the 2-core benchmark machine, smaller (cache-sized) chunks were slower: each threaded torch call has a fixed
cost, and at 128–512 rows it outweighed the cache misses (fp16 at 85 directions: 17.6k rows/s at 1,024 rows per chunk,
23k at 2,048 and 4,096)."""


TABLE_MAX_DIRECTIONS = 4
"""1-bit rows scored against at most this many directions use byte tables instead of decode + matmul: measured 2.8×
faster at 1 direction (233k vs 82k rows/s at d = 8192 on 2 cores) and slower from about 8 directions on."""


def byte_tables(directions: torch.Tensor) -> np.ndarray:
    """``(S, d/8 · 256)`` float32: for each direction and each byte of a 1-bit row, the dot product of the byte's 8
    sign levels with the direction's 8 coordinates there, so a row's dot product is a sum of ``d/8`` table entries."""
    t = directions.numpy()
    d, n_directions = t.shape
    tables = np.einsum("vi,jis->sjv", level_table(1).astype(np.float64), t.reshape(d // 8, 8, n_directions))
    return np.ascontiguousarray(tables.reshape(n_directions, -1), dtype=np.float32)


class _ChunkScorer:
    """Adds ``w · cos(row, direction)`` of stored rows to an accumulator, one :data:`CHUNK_BYTES` chunk at a time:
    decode (fp16/int8 → fp32, or packed bytes → levels) into a reused float32 buffer, one row-norm, one matmul; or,
    for 1-bit rows against few directions, sums of byte-table entries (:func:`byte_tables`)."""

    def __init__(self, dim: int, n_directions: int, chunk_rows: int) -> None:
        self.work = torch.empty((chunk_rows, dim), dtype=torch.float32)
        self.products = torch.empty((chunk_rows, n_directions), dtype=torch.float32)
        self.chunk_rows = chunk_rows

    def add(
        self, acc: torch.Tensor, raw: np.ndarray, scales: np.ndarray | None, bits: int | None, directions, w, tables
    ):
        offsets = None if tables is None else np.arange(raw.shape[1], dtype=np.int64) * 256
        for c0 in range(0, raw.shape[0], self.chunk_rows):
            c1 = min(raw.shape[0], c0 + self.chunk_rows)
            rows = c1 - c0
            if tables is not None:  # 1 bit, few directions: a sum of byte-table entries per row and direction
                index = raw[c0:c1].astype(np.int64)
                index += offsets
                out = self.products[:rows]
                for j, table in enumerate(tables):
                    out[:, j] = torch.from_numpy(table[index].sum(axis=1))
                inv = torch.from_numpy((scales[c0:c1] > 0) * np.float32(w / np.sqrt(directions.shape[0])))
                acc[c0:c1].addcmul_(out, inv)
                continue
            if bits is not None:
                x = self.work[:rows]
                decode_levels(raw[c0:c1], bits, out=x.numpy())
            elif raw.dtype == np.float32:
                x = torch.from_numpy(raw[c0:c1])
            else:
                x = self.work[:rows]
                x.copy_(torch.from_numpy(raw[c0:c1]))
            if bits == 1:  # every level is ±1: the norm is √d (an all-zero row has scale 0)
                inv = torch.full((rows, 1), w / np.sqrt(x.shape[1]), dtype=torch.float32)
            else:
                norms = torch.linalg.vector_norm(x, dim=1, keepdim=True)
                inv = torch.where(norms > 0, w / norms, torch.zeros_like(norms))
            if scales is not None:
                inv.mul_(torch.from_numpy(scales[c0:c1] > 0))
            out = self.products[:rows]
            torch.mm(x, directions, out=out)
            acc[c0:c1].addcmul_(out, inv)


def score_datastore(
    datastore: Datastore,
    targets: list[TargetFeatures],
    dim: int | None = None,
    aggregate: str = "mean_of_cosines",
    block_rows: int = 65536,
) -> dict[str, np.ndarray]:
    """LESS scores of every pool row for every target.

    ``score(z, task) = max over subtasks j of Σᵢ η̄ᵢ · aggᵢⱼ(z)`` where ``aggᵢⱼ`` is the subtask's aggregate of
    cosines at checkpoint i (see :func:`subtask_directions`). The pool streams from disk in reads of at most
    ``block_rows`` rows and :data:`READ_BYTES` per checkpoint, and is decoded to float32 one :data:`CHUNK_BYTES`
    chunk at a time, so memory is one read per checkpoint plus the output, whatever the pool size; packed (4/2/1-bit)
    features are scored from their bytes without a float copy of the store. Rows without a supervised token get
    ``-inf``.

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
        torch.from_numpy(np.ascontiguousarray(np.concatenate([m[i] for m in matrices], axis=0).T))
        for i in range(len(checkpoints))
    ]
    n = datastore.manifest.n_rows
    scores = {t.name: np.empty(n, dtype=np.float32) for t in targets}
    readers = [datastore.pool_reader(c, dim) for c in checkpoints]
    try:
        step = max(1, min(block_rows, n, READ_BYTES // readers[0].row_bytes))
        buffers = [
            (np.empty((step, r.data.shape[1]), r.data.dtype), np.empty((step, 1), np.float32) if r.bits else None)
            for r in readers
        ]
        scorer = _ChunkScorer(dim, start, max(8, min(step, CHUNK_BYTES // (4 * dim))))
        acc_buffer = torch.empty((step, start), dtype=torch.float32)
        small = start <= TABLE_MAX_DIRECTIONS
        tables = [byte_tables(m) if r.bits == 1 and small else None for r, m in zip(readers, stacked)]
        for lo in progress(range(0, n, step), desc="Scoring", unit="block", disable=n <= step):
            hi = min(n, lo + step)
            acc = acc_buffer[: hi - lo].zero_()
            for w, reader, matrix, table, (buffer, scale_buffer) in zip(weights, readers, stacked, tables, buffers):
                raw, scales = reader.read_raw(lo, hi, buffer, scale_buffer)
                scorer.add(acc, raw, scales, reader.bits, matrix, float(w), table)
            for name, (a, b) in spans.items():
                scores[name][lo:hi] = acc[:, a:b].amax(dim=1).numpy()
    finally:
        for reader in readers:
            reader.close()
    valid = datastore.valid
    for name in scores:
        scores[name][~valid] = -np.inf
    return scores
