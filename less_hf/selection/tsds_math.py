"""TSDS maths (Liu, Karbasi, Rekatsinas 2024): k-NN lists, KDE densities, and the water-filling solution.

The problem solved here exactly, for M target (query) examples with uniform mass 1/M and N candidates:

    min_{γ ≥ 0}  (α / C) · Σᵢⱼ γᵢⱼ dᵢⱼ  +  (1 − α) · M · maxᵢⱼ γᵢⱼ ρⱼ      s.t.  Σⱼ γᵢⱼ = 1/M for every target i,

where γ is the transport plan (restricted to each target's K nearest candidates), dᵢⱼ the Euclidean distance
between unit feature vectors (√(2 − 2 cos)), and ρⱼ the KDE density of candidate j (ρ ≡ 1 when σ = 0: the
paper's G∞ regulariser; KNN-Uniform). The selection distribution is p = Σᵢ γᵢ. This is the problem the authors'
heap algorithm optimises (its stopping rule is the derivative of this objective in the common water level); its
regulariser acts on the plan's entries, which equals ``max_j p_j ρ_j`` when no two targets share a neighbour.

Water-filling: at a common level s every target fills its neighbours in distance order, giving neighbour k the
mass 1/(M·s·ρₖ) until its 1/M is spent. Raising s spreads mass further (lower regulariser, higher transport
cost); the objective is convex in 1/s, so the optimum is the first breakpoint where
(α/C)·Σᵢ costᵢ ≥ (1 − α)·M, costᵢ being the transport-cost slope of target i. All breakpoints are sorted at once
(no loop over queries × neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from transformers.utils import logging

from ..errors import InputError

logger = logging.get_logger(__name__)

EXACT_SEARCH_MAX_ROWS = 50_000
"""Below this pool size the neighbour search is exact (flat inner-product index); above it, IVF-Flat."""


@dataclass
class WaterFilling:
    """The solution: ``mass[i, k]`` is the mass target i sends to its k-th neighbour; ``level`` is s."""

    mass: np.ndarray
    level: float
    capped: bool


def water_fill(dists: np.ndarray, kdes: np.ndarray, alpha: float, C: float) -> WaterFilling:
    """Solve the TSDS problem from sorted k-NN lists.

    Args:
        dists: ``(M, K)`` distances of each target's neighbours, ascending per row; ``inf`` marks a missing one.
        kdes: ``(M, K)`` densities ρ of those neighbours (≥ some positive value; ignored where ``dists`` is inf).
        alpha: weight of the transport term (0 < α < 1).
        C: scale of the distances.

    Returns:
        :class:`WaterFilling`; ``capped`` says that some target ran out of neighbours before the optimum (raise K).
    """
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1), got {alpha}.")
    if C <= 0:
        raise InputError(f"C must be > 0, got {C}.")
    dists = np.asarray(dists, dtype=np.float64)
    M, K = dists.shape
    valid = np.isfinite(dists)
    if not valid[:, 0].all():
        raise InputError("Some target has no neighbour at all; check the features (NaN?) and the index.")
    inv = np.where(valid, 1.0 / np.where(valid, np.asarray(kdes, dtype=np.float64), 1.0), 0.0)
    count = np.cumsum(inv, axis=1)  # capacity (in units of 1/(M s)) of the first k+1 neighbours
    dists = np.where(valid, dists, 0.0)  # missing neighbours carry no mass (inv = 0) and no cost
    weighted = np.cumsum(dists * inv, axis=1)
    level_cap = float(count[:, -1].min())  # beyond it the poorest target cannot hold its mass in K neighbours
    if K > 1:
        has_next = valid[:, 1:]
        # slope of target i's transport cost in t = 1/(M s) once its first k+1 neighbours are full
        cost = np.where(has_next, dists[:, 1:] * count[:, :-1] - weighted[:, :-1], 0.0)
        delta = cost - np.concatenate([np.zeros((M, 1)), cost[:, :-1]], axis=1)
        points = count[:, :-1][has_next]
        order = np.argsort(points, kind="stable")
        total = np.cumsum(delta[has_next][order])
        crossed = np.flatnonzero(alpha / C * total >= (1 - alpha) * M)
        level_cross = float(points[order][crossed[0]]) if len(crossed) else np.inf
    else:
        level_cross = np.inf
    capped = level_cap < level_cross
    level = min(level_cross, level_cap)
    filled = np.minimum(count, level)
    mass = np.diff(np.concatenate([np.zeros((M, 1)), filled], axis=1), axis=1) / (M * level)
    # float round-off: make every target's row sum exactly 1/M
    mass *= (1.0 / M) / mass.sum(axis=1, keepdims=True)
    return WaterFilling(mass=mass, level=level, capped=capped)


def scatter_mass(mass: np.ndarray, indices: np.ndarray, n_rows: int) -> np.ndarray:
    """``p[j] = Σ`` of the mass every target sends to candidate j (missing neighbours, id -1, are skipped)."""
    keep = (indices >= 0) & (mass > 0)
    p = np.bincount(indices[keep], weights=mass[keep], minlength=n_rows)
    return p / p.sum()


# ----------------------------------------------------------------------------------------------------------------
# nearest neighbours (faiss, imported lazily)


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "TSDS needs faiss for its nearest-neighbour search: `pip install faiss-cpu` (or `pip install "
            "'less-hf[tsds]'`; faiss-gpu works too)."
        ) from exc
    return faiss


def build_index(features: np.ndarray, exact_max_rows: int = EXACT_SEARCH_MAX_ROWS, nprobe: int = 10, seed: int = 0):
    """A faiss inner-product index over unit rows: exact (flat) for small pools, IVF-Flat (nlist ≈ √N/2) above.

    On a machine with a CUDA faiss build and a GPU, the index is moved to GPU 0.
    """
    faiss = _faiss()
    x = np.ascontiguousarray(features, dtype=np.float32)
    n, d = x.shape
    if n <= exact_max_rows:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = max(1, int(np.sqrt(n)) // 2)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        train = x if n <= 256 * nlist else x[np.random.default_rng(seed).choice(n, 256 * nlist, replace=False)]
        index.train(train)
        index.nprobe = nprobe
    index.add(x)
    if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:  # pragma: no cover - GPU only
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


def search(index, queries: np.ndarray, k: int, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """k nearest candidates of each query: ``(distances (Q, k), ids (Q, k))``, ascending, Euclidean on unit rows.

    faiss returns id -1 (and a huge score) where a probed IVF cell holds too few rows; those come back with
    distance ``inf`` and id -1 at the end of the row.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, index.ntotal)
    dists = np.empty((len(q), k), dtype=np.float64)
    ids = np.empty((len(q), k), dtype=np.int64)
    for lo in range(0, len(q), block):
        sims, idx = index.search(q[lo : lo + block], k)
        d = np.sqrt(np.clip(2.0 - 2.0 * sims.astype(np.float64), 0.0, None))
        d[idx < 0] = np.inf
        order = np.argsort(d, axis=1, kind="stable")
        dists[lo : lo + block] = np.take_along_axis(d, order, axis=1)
        ids[lo : lo + block] = np.where(np.isfinite(dists[lo : lo + block]), np.take_along_axis(idx, order, 1), -1)
    return dists, ids


def kde(index, features: np.ndarray, rows: np.ndarray, sigma: float, k: int, block: int = 1024) -> tuple:
    """KDE densities ρ of ``rows`` of the pool, ``Σ max(0, 1 − ‖x − x′‖²/σ²)`` over their k nearest candidates.

    Streams the rows in blocks (memory: ``block × k``). ρ counts the row itself, so ρ ≥ 1.

    Returns:
        ``(rho (len(rows),), near_duplicates (len(rows),))``: the number of other candidates within σ.
    """
    rho = np.empty(len(rows), dtype=np.float64)
    near = np.zeros(len(rows), dtype=np.int64)
    saturated = 0
    for lo in range(0, len(rows), block):
        dists, ids = search(index, features[rows[lo : lo + block]], k)
        kernel = np.where(ids >= 0, np.clip(1.0 - dists**2 / sigma**2, 0.0, None), 0.0)
        rho[lo : lo + block] = np.maximum(kernel.sum(axis=1), 1.0)
        positive = (kernel > 0).sum(axis=1)
        near[lo : lo + block] = np.maximum(positive - 1, 0)
        saturated += int((positive >= kernel.shape[1]).sum()) if kernel.shape[1] < index.ntotal else 0
    if saturated:
        logger.warning(
            "%d candidates have all their %d KDE neighbours within sigma: their density is truncated; raise kde_k.",
            saturated,
            k,
        )
    return rho, near
