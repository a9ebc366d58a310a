"""Mean ± standard error of a held-out metric over seeds and test rows, and which methods can be told apart.

A cell (one method on one held-out set) has, for every seed ``s``, a value per test row ``r[s, i]``. Its mean is
``mean_s mean_i r[s, i]`` and its standard error combines the two sources of noise:

- training: the spread of the per-seed means, ``var_s(m_s) / S`` (0 with one seed: then not measured);
- test rows: the rows are a sample of the task, ``var_i(mean_s r[s, i]) / N``.

Two methods are compared on the *same* test rows, so the rows' part of the difference's SE uses the per-row
differences (a paired comparison): ``SE(a - b)² = var_s(m_a)/S_a + var_s(m_b)/S_b + var_i(r̄_a,i - r̄_b,i)/N``. They are
"not distinguishable" when ``|mean_a - mean_b| <= 2 SE(a - b)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import InputError


def _matrix(per_seed: Sequence[Sequence[float]]) -> np.ndarray:
    m = np.asarray(per_seed, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise InputError("Expected one list of per-row values per seed (all the same length, at least one row).")
    return m


def _seed_var(m: np.ndarray) -> float:
    means = m.mean(axis=1)
    return float(means.var(ddof=1) / len(means)) if len(means) > 1 else 0.0


def mean_se(per_seed: Sequence[Sequence[float]]) -> tuple[float, float]:
    """``(mean, SE)`` of a cell from its ``[seed][row]`` values (see the module docstring)."""
    m = _matrix(per_seed)
    rows = m.mean(axis=0)
    row_var = float(rows.var(ddof=1) / len(rows)) if len(rows) > 1 else 0.0
    return float(m.mean()), math.sqrt(_seed_var(m) + row_var)


def difference_se(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> tuple[float, float]:
    """``(mean_a - mean_b, SE of that difference)`` for two cells scored on the same test rows (paired)."""
    ma, mb = _matrix(a), _matrix(b)
    if ma.shape[1] != mb.shape[1]:
        raise InputError(f"The two cells were scored on different test rows ({ma.shape[1]} vs {mb.shape[1]}).")
    diff = ma.mean(axis=0) - mb.mean(axis=0)
    row_var = float(diff.var(ddof=1) / len(diff)) if len(diff) > 1 else 0.0
    return float(ma.mean() - mb.mean()), math.sqrt(_seed_var(ma) + _seed_var(mb) + row_var)


def distinguishable_from_best(
    cells: dict[str, Sequence[Sequence[float]]], higher_is_better: bool = False, z: float = 2.0
) -> tuple[str, dict[str, dict[str, float | bool]]]:
    """The best method by mean, and for each method its gap to the best, that gap's SE and whether it is within
    ``z`` SE of it (``tied`` = not distinguishable from the best; the best itself is tied)."""
    if not cells:
        raise InputError("No methods to compare.")
    means = {name: float(np.mean(values)) for name, values in cells.items()}
    best = (max if higher_is_better else min)(means, key=means.__getitem__)
    out: dict[str, dict[str, float | bool]] = {}
    for name, values in cells.items():
        gap, se = difference_se(values, cells[best]) if name != best else (0.0, 0.0)
        out[name] = {"gap": gap, "gap_se": se, "tied": name == best or abs(gap) <= z * se}
    return best, out
