"""The selection as a `datasets.Dataset`: the user's own rows, every column kept, plus score and rank."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

TASK_COLUMN = "selected_for"
"""Column of a ``round_robin`` selection naming the task whose turn picked each row."""


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest finite scores, best first (ties broken by row order, so it is deterministic)."""
    finite = np.flatnonzero(np.isfinite(scores))
    k = min(k, len(finite))
    order = np.lexsort((finite, -scores[finite]))  # primary key: -score; secondary: row index
    return finite[order[:k]]


def subset_with_scores(pool, indices: np.ndarray, scores: np.ndarray, score_column: str = "less_score"):
    """``pool.select(indices)`` with ``score_column`` (float) and ``<score_column>_rank`` (0 = best) added."""
    if score_column in pool.column_names:
        raise InputError(f"The pool already has a column {score_column!r}; pick another score_column.")
    subset = pool.select(indices.tolist())
    subset = subset.add_column(score_column, [float(scores[i]) for i in indices])
    return subset.add_column(f"{score_column}_rank", list(range(len(indices))))
