"""`TSDSSelector`: TSDS (Liu, Karbasi, Rekatsinas 2024) on LESS gradient features or sentence embeddings."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging

from ..config import GradientConfig, ProjectionConfig, TSDSConfig
from ..errors import InputError
from ..output import subset_with_scores, top_indices
from ..scoring import normalize_rows
from .base import Selector, as_target_dict
from .baselines import gumbel_top_k
from .features import MeanPoolEncoder
from .tsds_math import build_index, kde, scatter_mass, search, water_fill

logger = logging.get_logger(__name__)

SAMPLING = ("with_replacement", "without_replacement", "top")


class TSDSSelector(Selector):
    """Select a probability distribution over the pool that matches the targets (optimal transport) while staying
    diverse (KDE-weighted max regulariser), then sample n rows from it.

    The score of a row (``tsds_score``) is its probability p. Rows with p = 0 are never selected, so ``top`` and
    ``without_replacement`` may return fewer rows than asked (a warning says so); ``with_replacement`` (the authors')
    returns exactly n rows, repeated draws as repeated rows next to each other, with a ``tsds_count`` column (how
    many times the row was drawn). In ``mode="max"`` (formerly ``combined``) p is the mean of the tasks' distributions
    (each task gets equal mass); in ``mode="round_robin"`` the tasks take turns through their own draws (best p
    first), each row taken once. After ``select``, ``stats_[task]`` holds the support size, the water level, the
    number of near-duplicates found by the KDE, and whether the neighbour lists were too short.

    Example::

        selector = TSDSSelector("warmup_out")                                   # LESS gradient features
        subset = selector.select(pool, {"mmlu": mmlu_dev}, fraction=0.05)["mmlu"]
        TSDSSelector(featurizer=MeanPoolEncoder(minilm_folder, chat=False))    # sentence embeddings

    Args:
        warmup_dir: a LESS warmup's output dir (for ``features="less"``).
        config: :class:`~less_hf.config.TSDSConfig` (α, C, σ, K, sampling…).
        featurizer: any callable ``Dataset -> (rows, d) array``; overrides ``config.features``.
        embedding_model: a sentence-encoder folder for ``features="embeddings"`` (mean-pooled, L2-normalised).
        datastore_dir, gradient_config, projection_config, base_model: as for :class:`LESSSelector`.
    """

    def __init__(
        self,
        warmup_dir: str | os.PathLike | None = None,
        config: TSDSConfig | None = None,
        featurizer: Callable[[Any], np.ndarray] | None = None,
        embedding_model: str | os.PathLike | None = None,
        datastore_dir: str | os.PathLike | None = None,
        gradient_config: GradientConfig | None = None,
        projection_config: ProjectionConfig | None = None,
        base_model: str | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config or TSDSConfig()
        if self.config.sampling not in SAMPLING:
            raise InputError(f"sampling={self.config.sampling!r}; choose one of {SAMPLING}.")
        self.score_column = self.config.score_column
        self.seed = seed
        self.featurizer = featurizer
        self.less = None
        if featurizer is None:
            if self.config.features == "embeddings":
                if embedding_model is None:
                    raise InputError(
                        "features='embeddings' needs embedding_model= (a sentence-encoder folder, e.g. "
                        "less_hf.assets.minilm_path()) or featurizer=."
                    )
                self.featurizer = MeanPoolEncoder(embedding_model, chat=False)
            elif self.config.features == "less":
                if warmup_dir is None:
                    raise InputError(
                        "features='less' needs warmup_dir= (a LESS warmup's output dir); or pass "
                        "featurizer= / config.features='embeddings' with embedding_model=."
                    )
                from .less import LESSSelector

                self.less = LESSSelector(
                    warmup_dir, datastore_dir, gradient_config, projection_config, None, base_model
                )
            else:
                raise InputError(f"features={self.config.features!r}; choose 'less' or 'embeddings'.")
        self.stats_: dict[str, dict[str, Any]] = {}

    @property
    def samples(self) -> bool:  # type: ignore[override]
        return self.config.sampling != "top"

    def settings(self) -> dict[str, Any]:
        """TSDS's config, plus (on LESS features) the warmup's model, checkpoints and projection."""
        settings = super().settings()
        if self.less is not None:
            settings = {**self.less.settings(), **settings}
        return settings

    # ------------------------------------------------------------------------------------------------- features
    def _less_features(self, pool, named: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        from ..scoring.weighted import weighted_features

        datastore, targets = self.less.target_features(pool, named)
        return weighted_features(datastore, targets, self.config.checkpoints)

    def features(self, pool, named: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Unit pool features, which pool rows may be selected, and unit features of each task's examples."""
        if self.less is not None:
            pool_x, valid, targets = self._less_features(pool, named)
        else:
            pool_x, valid = self.featurizer(pool), np.ones(len(pool), dtype=bool)
            targets = {task: self.featurizer(ds) for task, ds in named.items()}
        pool_x = normalize_rows(pool_x)
        valid &= np.isfinite(pool_x).all(axis=1) & (np.linalg.norm(pool_x, axis=1) > 0)
        return pool_x, valid, {task: normalize_rows(t) for task, t in targets.items()}

    # ---------------------------------------------------------------------------------------------------- score
    def score(self, pool, targets: Any) -> dict[str, np.ndarray]:
        """TSDS probabilities p over the pool, one distribution per task."""
        cfg = self.config
        named, _ = as_target_dict(targets)
        pool_x, valid, target_x = self.features(pool, named)
        rows = np.flatnonzero(valid)
        if len(rows) == 0:
            raise InputError("No pool row has a usable feature vector; nothing to select from.")
        x = np.ascontiguousarray(pool_x[rows])
        index = build_index(x, cfg.exact_max_rows, cfg.nprobe, self.seed)
        density = np.full(len(rows), np.nan)  # KDE ρ, computed once per candidate that some target reaches
        near = np.zeros(len(rows), dtype=np.int64)
        scores = {}
        for task, q in target_x.items():
            q = q[np.linalg.norm(q, axis=1) > 0]
            if len(q) == 0:
                raise InputError(f"Target {task!r} has no usable feature vector.")
            dists, ids = search(index, q, min(cfg.k, len(rows)))
            involved = np.unique(ids[ids >= 0])
            near_duplicates = 0
            if cfg.sigma > 0:
                needed = involved[np.isnan(density[involved])]
                if len(needed):
                    density[needed], near[needed] = kde(index, x, needed, cfg.sigma, min(cfg.kde_k, len(rows)))
                kdes = np.where(ids >= 0, density[np.maximum(ids, 0)], 1.0)
                near_duplicates = int((near[involved] > 0).sum())
            else:
                kdes = np.ones_like(dists)
            solution = water_fill(dists, kdes, cfg.alpha, cfg.C)
            if solution.capped and ids.shape[1] < len(rows):
                logger.warning(
                    "TSDS %r: a target ran out of its k=%d neighbours before the optimum; raise TSDSConfig.k.",
                    task,
                    ids.shape[1],
                )
            p_rows = scatter_mass(solution.mass, ids, len(rows))
            p = np.zeros(len(pool))
            p[rows] = p_rows
            scores[task] = p
            self.stats_[task] = {
                "support": int((p > 0).sum()),
                "level": solution.level,
                "capped": solution.capped,
                "near_duplicates": near_duplicates,
                "queries": len(q),
            }
            logger.info(
                "TSDS %r: %d candidates get mass; %d of the candidates reached have near-duplicates (within σ=%g).",
                task,
                self.stats_[task]["support"],
                near_duplicates,
                cfg.sigma,
            )
        return scores

    # ------------------------------------------------------------------------------------------------- sampling
    def combine(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        """Combined mode: the mean of the tasks' distributions (equal mass per task)."""
        return np.mean(np.stack(list(scores.values())), axis=0)

    def pick(self, scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        p = np.asarray(scores, dtype=np.float64)
        support = int((p > 0).sum())
        mode = self.config.sampling
        if mode == "with_replacement":
            counts = rng.multinomial(k, p / p.sum())
            drawn = np.flatnonzero(counts)
            drawn = drawn[np.lexsort((drawn, -p[drawn]))]
            return np.repeat(drawn, counts[drawn])
        if support < k:
            logger.warning(
                "TSDS gives mass to only %d rows, fewer than the %d asked: returning %d (lower alpha or raise k "
                "to spread the mass; or sample with replacement).",
                support,
                k,
                support,
            )
        if mode == "top":
            return top_indices(np.where(p > 0, p, -np.inf), k)
        with np.errstate(divide="ignore"):
            chosen = gumbel_top_k(np.log(p), k, rng)
        return chosen[np.lexsort((chosen, -p[chosen]))]

    def subset(self, pool, indices: np.ndarray, scores: np.ndarray):
        subset = subset_with_scores(pool, indices, scores, self.score_column)
        counts = np.bincount(indices, minlength=len(pool))
        return subset.add_column("tsds_count", counts[indices].tolist())


def minilm_featurizer(path: str | os.PathLike | None = None) -> MeanPoolEncoder:
    """A sentence-embedding featurizer (all-MiniLM-L6-v2 from the offline assets unless ``path`` is given)."""
    if path is None:
        from ..assets.embeddings import minilm_path

        path = minilm_path()
    return MeanPoolEncoder(Path(path), chat=False)
