"""Multi-target policies: how per-task scores become selections (one per task, or one for the union of the tasks).

* ``per_task``: one selection per target task (each task gets the full budget).
* ``max``: one selection for the union of the tasks, the top rows by the max of the tasks' scores (a row useful to any
  task ranks high). ``combined`` is the deprecated name of this policy.
* ``round_robin``: one selection for the union, filled by taking the next best not-yet-selected row of each task in
  turn (Ivison et al. 2025, arXiv 2503.01807, ``get_top_aggregated_influences.py`` of
  hamishivi/automated-instruction-selection), so that every task gets an equal share whatever its score scale.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError
from ..output.dataset import TASK_COLUMN

__all__ = [
    "ALIASES",
    "MAX",
    "PER_TASK",
    "POLICIES",
    "ROUND_ROBIN",
    "TASK_COLUMN",
    "UNION",
    "combine_max",
    "resolve_policy",
    "round_robin",
]

PER_TASK, MAX, ROUND_ROBIN = "per_task", "max", "round_robin"
POLICIES = (PER_TASK, MAX, ROUND_ROBIN)
"""The policies :meth:`Selector.select` accepts as ``mode`` (plus the deprecated alias ``combined`` = ``max``)."""
ALIASES = {"combined": MAX}
UNION = "combined"
"""The name of the one selection for the union of the targets (its subset folder and ``scores_`` key)."""


def resolve_policy(mode: str) -> str:
    """The canonical policy for ``mode``; ``combined`` maps to ``max`` with a deprecation warning."""
    if mode in ALIASES:
        warnings.warn(
            f"mode={mode!r} is deprecated; use mode={ALIASES[mode]!r} (same selection).", FutureWarning, stacklevel=3
        )
        return ALIASES[mode]
    if mode not in POLICIES:
        raise ConfigError(f"mode={mode!r}; choose one of {POLICIES} ('combined' is the old name of 'max').")
    return mode


def combine_max(scores: dict[str, np.ndarray]) -> np.ndarray:
    """One score for the union of the targets: the max over tasks (a row useful to any task ranks high)."""
    return np.max(np.stack(list(scores.values())), axis=0)


def round_robin(orders: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge ranked lists by taking, from each list in turn, its best row not selected yet, until ``k`` rows.

    Args:
        orders: one array of row indices per task (or per target example), best first; a row may appear in
            several lists (it is taken once, by the first list that reaches it). Lists hold only selectable rows.
        k: how many distinct rows to take.

    Returns:
        ``(indices, owner)``: the distinct rows in the order taken, and for each the position in ``orders`` of the
        list whose turn took it. Fewer than ``k`` rows when the lists together hold fewer distinct rows; a list that
        runs out drops out of the rotation and the others continue.

    Unlike the reference script, a row already taken does not use up a list's turn: the list moves on to its next
    unseen row (the paper's "next best unseen row"), so every list gets the same share while it has rows.
    """
    orders = [np.asarray(o, dtype=np.int64) for o in orders]
    pointers = [0] * len(orders)
    taken: set[int] = set()
    indices: list[int] = []
    owner: list[int] = []
    active = [i for i, o in enumerate(orders) if len(o)]
    while len(indices) < k and active:
        still = []
        for i in active:
            order, p = orders[i], pointers[i]
            while p < len(order) and int(order[p]) in taken:
                p += 1
            if p < len(order):
                row = int(order[p])
                taken.add(row)
                indices.append(row)
                owner.append(i)
                p += 1
            pointers[i] = p
            if p < len(order):
                still.append(i)
            if len(indices) == k:
                break
        active = still
    return np.asarray(indices, dtype=np.int64), np.asarray(owner, dtype=np.int64)
