"""The selection as a `datasets.Dataset`: the user's own rows, every column kept, plus score and rank.

Both steps keep memory bounded for pools of any size: the top rows are found block by block (a streaming top-k that
holds at most ``k`` candidates plus one block), and the returned dataset maps the pool's rows by index
(`Dataset.select`) instead of copying them.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import InputError

TASK_COLUMN = "selected_for"
"""Column of a ``round_robin`` selection naming the task whose turn picked each row."""

TOP_K_BLOCK = 1 << 20
"""Scores examined per step of :func:`top_indices` (8 MB of float64)."""


def _best_of(values: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` candidates that come first in the order (value descending, row ascending), unordered.

    ``argpartition`` picks an arbitrary subset of the rows tied at the k-th value; the rows strictly above it are
    kept, and the tied ones are filled in by row, so the kept set is exactly the first ``k`` of a full stable sort.
    """
    if len(values) <= k:
        return values, rows
    kth = values[np.argpartition(-values, k - 1)[k - 1]]
    above = np.flatnonzero(values > kth)
    tied = np.flatnonzero(values == kth)
    tied = tied[np.argsort(rows[tied], kind="stable")[: k - len(above)]]
    keep = np.concatenate([above, tied])
    return values[keep], rows[keep]


def _top_k(scores: np.ndarray, k: int, negate: bool, block: int) -> np.ndarray:
    values = np.zeros(0, dtype=scores.dtype)
    rows = np.zeros(0, dtype=np.int64)
    for lo in range(0, len(scores), block):
        chunk = scores[lo : lo + block]
        finite = np.flatnonzero(np.isfinite(chunk))
        chunk_values = -chunk[finite] if negate else chunk[finite]
        values = np.concatenate([values, chunk_values])
        rows = np.concatenate([rows, finite + lo])
        values, rows = _best_of(values, rows, k)
    return rows[np.lexsort((rows, -values))]


def top_indices(scores: np.ndarray, k: int, block: int = TOP_K_BLOCK, lowest: bool = False) -> np.ndarray:
    """Indices of the ``k`` highest finite scores, best first (ties broken by row order, so it is deterministic).

    Exactly the first ``k`` of the full stable sort of the finite scores by descending score (NaN and ±inf are never
    returned; -0.0 ties with 0.0), computed block by block: memory is ``O(k + block)`` whatever the pool's size.

    Args:
        scores: ``(N,)`` scores.
        k: how many rows (fewer when fewer scores are finite).
        block: scores examined per step.
        lowest: return the last ``k`` of that same order instead, last first (lowest score first, ties by
            descending row): ``top_indices(s, k, lowest=True)`` equals ``full_order[::-1][:k]``.
    """
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise InputError(f"scores must be one-dimensional, got shape {scores.shape}.")
    if block < 1:
        raise InputError(f"block must be >= 1, got {block}.")
    k = int(k)
    if k <= 0 or len(scores) == 0:
        return np.zeros(0, dtype=np.int64)
    if scores.dtype.kind not in "fc":  # integers and bools: every score is finite
        scores = scores.astype(np.float64)
    if not lowest:
        return _top_k(scores, k, negate=False, block=block)
    # the reversed array's rows ascending are the original rows descending: its top k by -score is the bottom k
    return len(scores) - 1 - _top_k(scores[::-1], k, negate=True, block=block)


def subset_with_scores(pool, indices: np.ndarray, scores: np.ndarray, score_column: str = "less_score"):
    """``pool.select(indices)`` with ``score_column`` (float) and ``<score_column>_rank`` (0 = best) added.

    The pool's rows are not copied: the score and rank columns are added beside the pool's own table (one float64
    and one int64 per pool row) and the result maps the selected rows by index, as `Dataset.select` does. A pool that
    is itself an index mapping (e.g. ``big.select(rows)`` or a shuffle) falls back to copying the selected rows.
    """
    from datasets import Dataset, concatenate_datasets

    if score_column in pool.column_names:
        raise InputError(f"The pool already has a column {score_column!r}; pick another score_column.")
    rank_column = f"{score_column}_rank"
    if rank_column in pool.column_names:
        raise InputError(f"The pool already has a column {rank_column!r}; pick another score_column.")
    indices = np.asarray(indices, dtype=np.int64)
    scores = np.asarray(scores)
    picked = scores[indices].astype(np.float64)
    if getattr(pool, "_indices", None) is not None or len(scores) != len(pool):
        subset = pool.select(indices, keep_in_memory=True)
        subset = subset.add_column(score_column, picked.tolist())
        return subset.add_column(rank_column, list(range(len(indices))))
    import pyarrow as pa

    full = scores.astype(np.float64)  # a copy: the dataset must not follow later changes to the caller's array
    ranks = np.full(len(pool), -1, dtype=np.int64)
    ranks[indices] = np.arange(len(indices), dtype=np.int64)
    digest = hashlib.sha256(f"{pool._fingerprint}|{score_column}".encode())  # content-made: caches stay right
    digest.update(indices.tobytes())
    digest.update(full.tobytes())
    extra = Dataset(pa.table({score_column: full, rank_column: ranks}), fingerprint=digest.hexdigest()[:16])
    joined = concatenate_datasets([pool, extra], axis=1)
    return joined.select(indices, keep_in_memory=True)
