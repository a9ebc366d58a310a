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


# ------------------------------------------------------------------------------------------- the datastore build


def test_content_key_is_the_same_in_memory_and_from_disk(pool, tmp_path):
    from less_hf.data_sources import load_data
    from less_hf.datastore.keys import dataset_digest

    columns = ["messages", "id"]
    pool.save_to_disk(str(tmp_path / "saved"))
    pool.to_json(str(tmp_path / "pool.jsonl"))
    expected = dataset_digest(pool, columns)
    assert dataset_digest(load_from_disk(str(tmp_path / "saved")), columns) == expected
    assert dataset_digest(load_data(tmp_path / "pool.jsonl"), columns) == expected
    generated = Dataset.from_generator(lambda: (yield from pool), features=pool.features)
    assert dataset_digest(generated, columns) == expected


def test_iterable_pool_is_a_clear_error(warmup_dir, pool, tmp_path):
    from less_hf import build_datastore
    from less_hf.errors import InputError
    from less_hf.selection.base import check_dataset

    iterable = pool.to_iterable_dataset()
    assert isinstance(iterable, IterableDataset)
    with pytest.raises(InputError, match=r"IterableDataset.*Dataset\.from_generator"):
        build_datastore(warmup_dir, iterable, tmp_path / "ds")
    with pytest.raises(InputError, match=r"IterableDataset.*Dataset\.from_generator"):
        check_dataset(iterable, "pool")
    assert not (tmp_path / "ds").exists()


def test_build_from_an_arrow_backed_pool_equals_in_memory(warmup_dir, pool, tmp_path):
    from less_hf import Datastore, GradientConfig, ProjectionConfig, build_datastore
    from less_hf.datastore.atomic import write_json_atomic

    grad, proj = GradientConfig(max_length=64, batch_size=4), ProjectionConfig(kind="dense", dims=[16], seed=5)
    small = pool.select(range(6))
    small.save_to_disk(str(tmp_path / "saved"))
    on_disk = load_from_disk(str(tmp_path / "saved"))
    assert on_disk.cache_files  # memory-mapped, not in RAM
    in_memory = build_datastore(warmup_dir, Dataset.from_list(small.to_list()), tmp_path / "a", grad, proj)
    mapped = build_datastore(warmup_dir, on_disk, tmp_path / "b", grad, proj)
    assert mapped.manifest.key == in_memory.manifest.key
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "pool").rglob("d*.npy"))
    assert files
    for name in [*files, "row_ids.json", "valid.npy"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    write_json_atomic(tmp_path / "ids.json", list(small["id"]))  # the streamed file is byte-identical to the plain one
    assert (tmp_path / "b" / "row_ids.json").read_bytes() == (tmp_path / "ids.json").read_bytes()
    assert Datastore.open(tmp_path / "b").row_ids == list(small["id"])


def test_tokenized_rows_match_tokenize_dataset(pool, tokenizer):
    from less_hf.tokenization import TokenizedRows, tokenize_dataset

    reference = tokenize_dataset(pool, tokenizer, max_length=24)  # short: some rows are truncated
    lazy = TokenizedRows(pool, tokenizer, max_length=24, batch_size=7)  # batches that do not divide the pool
    assert lazy.lengths.tolist() == [len(x) for x in reference["input_ids"]]
    assert lazy.num_supervised.tolist() == list(reference["num_supervised"])
    assert lazy.n_truncated == sum(list(reference["truncated"])) > 0
    rows = [5, 0, 47, 5]
    assert lazy.rows(rows) == [reference[i] for i in rows]


def test_unique_ids_and_streamed_row_ids(tmp_path):
    from less_hf.datastore.rows import check_unique_ids, write_row_ids
    from less_hf.errors import InputError
    from less_hf.tokenization import iter_row_ids

    ids = [f"r{i}" for i in range(100)]
    check_unique_ids(Dataset.from_dict({"id": ids, "text": ids}))
    check_unique_ids(Dataset.from_dict({"text": ["same"] * 5}))  # row numbers
    dup = ids[:40] + ["r3"] + ids[40:70] + ["r50", "r3"]
    with pytest.raises(InputError, match=r"'r3' \(rows 3 and 40\), 'r50' \(rows 51 and 71\), 'r3' \(rows 3 and 72\)"):
        check_unique_ids(Dataset.from_dict({"id": dup, "text": dup}))
    with pytest.raises(InputError, match=r"'7' \(rows 0 and 1\)"):
        check_unique_ids(Dataset.from_dict({"id": [7, 7], "text": ["a", "b"]}))  # int ids, compared as strings
    numbered = Dataset.from_dict({"text": ["x"] * 5})
    assert [i for b in iter_row_ids(numbered, batch_size=2) for i in b] == ["0", "1", "2", "3", "4"]
    write_row_ids(tmp_path / "ids.json", Dataset.from_dict({"id": ['a"b', "é"], "text": ["x", "y"]}))
    assert (tmp_path / "ids.json").read_text() == '[\n  "a\\"b",\n  "\\u00e9"\n]'


def test_batch_plan_is_the_length_sorted_order():
    from less_hf.gradients.batching import BatchPlan

    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(1000, size=301, replace=False))
    lengths = rng.integers(1, 6, size=301)
    plan = BatchPlan(rows, lengths, 8)
    expected = sorted(range(301), key=lambda j: (-lengths[j], rows[j]))  # longest first, ties by row
    assert np.concatenate(list(plan)).tolist() == rows[expected].tolist()
    assert len(plan) == 38 and len(plan[37]) == 5
    done = np.zeros(1000, dtype=bool)
    done[plan[0]] = True
    done[plan[3][:2]] = True  # a partly done batch is computed again, whole
    assert plan.pending(done).tolist() == [k for k in range(38) if k != 0]
    assert plan.pending(done, rank=1, world_size=2).tolist() == list(range(1, 38, 2))
