"""TSDS by a direct linear program (scipy HiGHS): the slow, obviously-correct solve of the same problem.

    min (α/C) Σᵢⱼ γᵢⱼ dᵢⱼ + (1 − α) M t   s.t.  Σⱼ γᵢⱼ = 1/M,  γᵢⱼ ρⱼ ≤ t,  γ ≥ 0

over the full M × N plan (no neighbour lists). Returns p = Σᵢ γᵢ and the optimal objective.
"""

from __future__ import annotations

import numpy as np


def tsds_lp(dists: np.ndarray, rho: np.ndarray, alpha: float, C: float) -> tuple[np.ndarray, float]:
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix, hstack, vstack

    M, N = dists.shape
    n_var = M * N + 1
    c = np.concatenate([alpha / C * dists.ravel(), [(1 - alpha) * M]])
    rows = np.repeat(np.arange(M), N)
    a_eq = hstack([coo_matrix((np.ones(M * N), (rows, np.arange(M * N))), shape=(M, M * N)), np.zeros((M, 1))])
    b_eq = np.full(M, 1.0 / M)
    a_ub = hstack(
        [
            coo_matrix((np.tile(rho, M), (np.arange(M * N), np.arange(M * N))), shape=(M * N, M * N)),
            coo_matrix(-np.ones((M * N, 1))),
        ]
    )
    res = linprog(
        c,
        A_ub=vstack([a_ub]).tocsr(),
        b_ub=np.zeros(M * N),
        A_eq=a_eq.tocsr(),
        b_eq=b_eq,
        bounds=[(0, None)] * n_var,
        method="highs",
    )
    assert res.status == 0, res.message
    gamma = res.x[:-1].reshape(M, N)
    return gamma.sum(axis=0), float(res.fun)
