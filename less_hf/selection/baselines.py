"""The LESS paper's baselines behind the same interface: random, BM25, DSIR and RDS."""

from __future__ import annotations

import os
import re
import zlib
from typing import Any

import numpy as np
from transformers.utils import logging

from .base import Selector, as_target_dict
from .features import MeanPoolEncoder, dataset_texts, subtask_labels, subtask_max_of_means

logger = logging.get_logger(__name__)


def gumbel_top_k(log_weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices sampled without replacement with probability ∝ exp(log_weights) (Gumbel top-k), in draw order."""
    finite = np.flatnonzero(np.isfinite(log_weights))
    keys = log_weights[finite] + rng.gumbel(size=len(finite))
    k = min(k, len(finite))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-keys, k - 1)[:k] if k < len(finite) else np.arange(len(finite))
    return finite[top[np.argsort(-keys[top], kind="stable")]]


class RandomSelector(Selector):
    samples = True

    """Uniform random rows (without replacement), seeded by ``select(..., seed=)``; the score is 1/N for every row."""

    score_column = "random_score"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(self, pool, targets: Any) -> dict[str, np.ndarray]:
        named, _ = as_target_dict(targets)
        return {name: np.full(len(pool), 1.0 / len(pool)) for name in named}

    def pick(self, scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(scores), size=min(k, len(scores)), replace=False)


class BM25Selector(Selector):
    """BM25 (Lucene variant, via ``bm25s``) of each pool row against each target example as a query.

    A row's score is the mean over a subtask's queries, max over subtasks (the same matching LESS uses).

    Args:
        k1, b: BM25 parameters (defaults 1.5 and 0.75).
        stopwords: ``bm25s`` stop-word list (``"en"``) or ``None``.
    """

    score_column = "bm25_score"

    def __init__(self, k1: float = 1.5, b: float = 0.75, stopwords: str | None = "en") -> None:
        self.k1, self.b, self.stopwords = k1, b, stopwords

    def score(self, pool, targets: Any) -> dict[str, np.ndarray]:
        try:
            import bm25s
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("BM25Selector needs `pip install bm25s` (or `pip install 'less-hf[tsds]'`).") from exc
        named, _ = as_target_dict(targets)
        corpus = bm25s.tokenize(dataset_texts(pool), stopwords=self.stopwords, show_progress=False)
        retriever = bm25s.BM25(k1=self.k1, b=self.b)
        retriever.index(corpus, show_progress=False)
        scores = {}
        for name, target in named.items():
            queries = bm25s.tokenize(
                dataset_texts(target), stopwords=self.stopwords, return_ids=False, show_progress=False
            )
            sims = np.stack([retriever.get_scores(q) if q else np.zeros(len(pool)) for q in queries], axis=1)
            scores[name] = subtask_max_of_means(sims.astype(np.float64), subtask_labels(target, name))
        return scores


_WORD = re.compile(r"\w+")


def hashed_ngrams(text: str, buckets: int) -> np.ndarray:
    """Bucket ids of a text's lower-cased unigrams and bigrams (crc32 hashing, stable across runs)."""
    words = _WORD.findall(text.lower())
    grams = words + [a + " " + b for a, b in zip(words, words[1:])]
    return np.fromiter((zlib.crc32(g.encode()) % buckets for g in grams), dtype=np.int64, count=len(grams))


def ngram_counts(texts: list[str], buckets: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Total bucket counts over ``texts`` and each text's bucket ids."""
    ids = [hashed_ngrams(t, buckets) for t in texts]
    total = np.bincount(np.concatenate(ids) if ids else np.zeros(0, np.int64), minlength=buckets)
    return total.astype(np.float64), ids


class DSIRSelector(Selector):
    """DSIR (Xie et al. 2023): importance resampling with hashed n-gram bag-of-words models.

    Fits a smoothed categorical model over ``buckets`` hashed unigrams and bigrams on the target examples and on the
    pool; a row's score is its log importance weight ``Σ (log p_target − log p_pool)`` over its n-grams. ``select``
    then resamples k rows without replacement with probability ∝ the weight (Gumbel top-k, seeded).

    Args:
        buckets: hash buckets (DSIR uses 10,000).
        smoothing: add-λ smoothing of both models.
    """

    samples = True

    score_column = "dsir_score"

    def __init__(self, buckets: int = 10_000, smoothing: float = 1.0, seed: int = 0) -> None:
        self.buckets, self.smoothing, self.seed = buckets, smoothing, seed

    def _log_probs(self, counts: np.ndarray) -> np.ndarray:
        smoothed = counts + self.smoothing
        return np.log(smoothed / smoothed.sum())

    def score(self, pool, targets: Any) -> dict[str, np.ndarray]:
        named, _ = as_target_dict(targets)
        pool_counts, pool_ids = ngram_counts(dataset_texts(pool), self.buckets)
        log_pool = self._log_probs(pool_counts)
        scores = {}
        for name, target in named.items():
            log_ratio = self._log_probs(ngram_counts(dataset_texts(target), self.buckets)[0]) - log_pool
            scores[name] = np.array([log_ratio[ids].sum() for ids in pool_ids])
        return scores

    def pick(self, scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        return gumbel_top_k(scores, k, rng)


class RDSSelector(Selector):
    """RDS (representation similarity): cosine of the model's final-layer hidden states, mean over tokens.

    Rows are rendered with the chat template, as in training. A row's score is the mean cosine to a subtask's
    examples, max over subtasks (the LESS reference code matches representation features like gradient features).

    Args:
        model: the selection model (a folder or Hub id), e.g. the base model of the LESS warmup.
        max_length: tokens per row; batch_size: rows per forward pass; device: default CUDA when available.
    """

    score_column = "rds_score"

    def __init__(
        self, model: str | os.PathLike, max_length: int = 512, batch_size: int = 16, device: str | None = None
    ) -> None:
        self.encoder = MeanPoolEncoder(model, chat=True, max_length=max_length, batch_size=batch_size, device=device)

    def settings(self) -> dict[str, Any]:
        """The plain settings plus the encoder's model, pooling and max_length."""
        encoder = self.encoder
        return {
            **super().settings(),
            "model": encoder.model_path,
            "pooling": encoder.pooling,
            "max_length": encoder.max_length,
        }

    def score(self, pool, targets: Any) -> dict[str, np.ndarray]:
        named, _ = as_target_dict(targets)
        pool_features = self.encoder(pool)
        scores = {}
        for name, target in named.items():
            sims = pool_features @ self.encoder(target).T
            scores[name] = subtask_max_of_means(sims.astype(np.float64), subtask_labels(target, name))
        return scores
