"""Target side of the score: normalise target gradients, average them per subtask."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

AGGREGATES = ("mean_of_cosines", "cosine_of_mean")


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows in float32; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def subtask_directions(
    features: np.ndarray, subtasks: list[str], valid: np.ndarray, aggregate: str = "mean_of_cosines"
) -> tuple[np.ndarray, list[str]]:
    """One direction per subtask, so that ``pool_unit @ direction`` is the subtask's score at one checkpoint.

    - ``mean_of_cosines`` (the reference code, default): the mean of the unit target gradients, not re-normalised,
      so the score is the mean over the subtask's examples of cos(target, pool row).
    - ``cosine_of_mean`` (the paper's formula): that mean, re-normalised: cos(mean target, pool row).

    Returns:
        ``(S, d)`` float32 directions and the ``S`` subtask names (sorted).
    """
    if aggregate not in AGGREGATES:
        raise InputError(f"aggregate={aggregate!r}; choose one of {AGGREGATES}.")
    unit = normalize_rows(features)
    labels = np.asarray(subtasks)
    names = sorted(set(labels[valid].tolist()))
    directions = np.stack([unit[(labels == s) & valid].mean(axis=0) for s in names])
    if aggregate == "cosine_of_mean":
        directions = normalize_rows(directions)
    return directions.astype(np.float32), names
