"""Pools larger than memory: streaming top-k equals a full sort, the selection maps the pool's rows without copying
them, and the datastore build reads Arrow-backed (memory-mapped) pools exactly as in-memory ones."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset, IterableDataset, load_from_disk

from less_hf.output import subset_with_scores, top_indices


def full_sort(scores: np.ndarray) -> np.ndarray:
    """The obvious reference: every finite score, sorted by descending value then row, in float64."""
    rows = [i for i in range(len(scores)) if np.isfinite(scores[i])]
    return np.asarray(sorted(rows, key=lambda i: (-float(scores[i]), i)), dtype=np.int64)


def random_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = rng.integers(3)
    if kind == 0:  # heavy ties
        scores = rng.integers(-3, 4, size=n).astype(np.float64)
    elif kind == 1:
        scores = rng.standard_normal(n).astype(np.float32)
    else:
        scores = np.round(rng.standard_normal(n), 1)
    special = rng.random(n)
    scores[special < 0.1] = -np.inf
    scores[(special >= 0.1) & (special < 0.15)] = np.nan
    scores[(special >= 0.15) & (special < 0.17)] = np.inf
    scores[(special >= 0.17) & (special < 0.2)] = -0.0
    return scores


@pytest.mark.parametrize("seed", range(40))
def test_streaming_top_k_equals_full_sort(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    scores = random_scores(rng, n)
    reference = full_sort(scores)
    block = int(rng.choice([1, 3, 7, 64, 1000]))  # blocks that do not divide n, one row, more than n
    for k in {1, 2, int(rng.integers(1, n + 1)), n, n + 5}:
        assert top_indices(scores, k, block=block).tolist() == reference[:k].tolist(), (k, block)
        lowest = top_indices(scores, k, block=block, lowest=True)
        assert lowest.tolist() == reference[::-1][:k].tolist(), (k, block)


def test_top_k_edge_cases():
    assert top_indices(np.array([np.nan, -np.inf]), 3).tolist() == []
    assert top_indices(np.zeros(0), 3).tolist() == []
    assert top_indices(np.array([0.0, -0.0, 0.0]), 2, block=1).tolist() == [0, 1]  # -0.0 ties with 0.0
    assert top_indices(np.array([3, 1, 3]), 2).tolist() == [0, 2]  # integer scores
    with pytest.raises(ValueError, match="one-dimensional"):
        top_indices(np.zeros((2, 2)), 1)


def test_subset_maps_the_pool_without_copying(tmp_path):
    pool = Dataset.from_dict({"id": [f"r{i}" for i in range(50)], "text": [f"row {i}" for i in range(50)]})
    pool.save_to_disk(str(tmp_path / "pool"))
    on_disk = load_from_disk(str(tmp_path / "pool"))
    scores = np.random.default_rng(0).standard_normal(50).astype(np.float32)
    indices = top_indices(scores, 7)
    for source in (pool, on_disk, pool.select(range(50)[::-1])):  # in memory, memory-mapped, an index mapping
        subset = subset_with_scores(source, indices, scores, "s")
        assert subset["id"] == [source[int(i)]["id"] for i in indices]
        assert subset["s"] == [float(scores[i]) for i in indices]
        assert subset["s_rank"] == list(range(7))
        assert subset.column_names == [*source.column_names, "s", "s_rank"]
    subset = subset_with_scores(on_disk, indices, scores, "s")
    assert subset._indices is not None and subset.cache_files == on_disk.cache_files  # rows are not copied
    assert not list((tmp_path / "pool").glob("cache-*"))  # nothing written beside the user's data
    saved = tmp_path / "subset"
    subset.save_to_disk(str(saved))
    assert load_from_disk(str(saved)).to_list() == subset.to_list()
    scores[indices[0]] = 99.0  # later changes to the caller's array do not leak into the returned dataset
    assert subset[0]["s"] != 99.0
    contiguous = subset_with_scores(on_disk, np.array([3, 4, 5]), scores, "s")
    assert contiguous["id"] == ["r3", "r4", "r5"]
