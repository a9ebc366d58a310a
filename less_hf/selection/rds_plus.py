"""RDS+ (Ivison et al. 2025): position-weighted mean-pooled hidden states, cosine similarity, round-robin over the
target examples."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..output import top_indices
from .base import as_target_dict
from .baselines import RDSSelector
from .features import MeanPoolEncoder
from .policies import round_robin

AGGREGATES = ("round_robin", "max")


class RDSPlusSelector(RDSSelector):
    """RDS+ ("Large-Scale Data Selection for Instruction Tuning", Ivison et al. 2025, arXiv 2503.01807).

    The recipe, as in the authors' code (hamishivi/automated-instruction-selection,
    ``minimal_multitask/compute_influence_cosinesim.py`` with ``--pooling weighted_mean`` and
    ``minimal_multitask/get_top_influences.py`` with ``--selection_method max``):

    1. Every pool row and every target example is rendered whole (prompt and response, in the chat format the model
       is trained with) and run through the selection model; the features are the final layer's hidden states (after
       the last norm).
    2. Position-weighted mean pooling: token t (0-based, the row's own tokens only) gets weight ``(t + 1) / Σ(s + 1)``.
    3. Each pooled vector is L2-normalised; a pool row's similarity to a target example is their dot product
       (cosine).
    4. ``per_task`` selection takes the target examples in turn (round-robin), each adding its most similar pool row
       not selected yet, until the budget is filled. A row's reported score (``rds_plus_score``, and the ranking used
       by the ``max`` and ``round_robin`` multi-target policies) is its max cosine over the task's examples, as in the
       authors' multi-task script ``get_top_aggregated_influences.py``.

    Deviations: the model runs in its stored dtype (float32 here; the authors used bf16), rows are batched with
    right padding (the weights count only real tokens, so this equals their batch size 1), rows are rendered with the
    tokenizer's own chat template (the authors hard-code the Tülu format their models are trained with), and a pool
    row another example already took does not use up an example's turn (their script lets it).

    Args:
        model: the selection model (a folder or Hub id); the authors use the base model that is then fine-tuned.
        max_length: tokens per row (right truncation; the authors use 2048).
        batch_size: rows per forward pass; device: default CUDA when available.
        aggregate: ``"round_robin"`` (the paper's per-task selection) or ``"max"`` (top rows by max cosine).

    Every target example is its own query (a ``subtask`` column is not used). The pool × target-example cosines are
    kept in memory until the next ``select`` (N × M × 4 bytes per task).
    """

    score_column = "rds_plus_score"

    def __init__(
        self,
        model: str | os.PathLike,
        max_length: int = 2048,
        batch_size: int = 16,
        device: str | None = None,
        aggregate: str = "round_robin",
    ) -> None:
        if aggregate not in AGGREGATES:
            raise ConfigError(f"aggregate={aggregate!r}; choose one of {AGGREGATES}.")
        self.aggregate = aggregate
        self.encoder = MeanPoolEncoder(
            model, chat=True, max_length=max_length, batch_size=batch_size, device=device, pooling="weighted_mean"
        )
        self._similarity: dict[str, np.ndarray] = {}

    def score(self, pool, targets: Any) -> dict[str, np.ndarray]:
        named, _ = as_target_dict(targets)
        pool_features = self.encoder(pool)
        self._similarity = {}
        scores = {}
        for name, target in named.items():
            sims = pool_features @ self.encoder(target).T  # (N, M) float32 cosines, kept for pick_task
            self._similarity[name] = sims
            scores[name] = sims.max(axis=1).astype(np.float64)
        return scores

    def pick_task(self, name: str, scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        if self.aggregate == "max" or name not in self._similarity:
            return self.pick(scores, k, rng)
        return example_round_robin(self._similarity[name], k)


def example_round_robin(similarity: np.ndarray, k: int) -> np.ndarray:
    """``k`` pool rows from an ``(N, M)`` pool × target-example similarity: each example in turn (in target order)
    adds its most similar row not taken yet (ties: the lower row index first); non-finite similarities are never
    taken."""
    # an example's pointer moves once per own pick or per row taken by another, so its first 2k rows always suffice
    depth = min(similarity.shape[0], 2 * k)
    orders = [top_indices(column, depth) for column in similarity.T]  # best first, ties by row, finite only
    return round_robin(orders, k)[0]
