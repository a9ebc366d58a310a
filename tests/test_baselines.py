"""Every selector through the same interface; BM25/DSIR/RDS sanity; the registry."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from less_hf import (
    SELECTORS,
    BM25Selector,
    DSIRSelector,
    GradientConfig,
    LESSSelector,
    LongestSelector,
    ProjectionConfig,
    RandomSelector,
    RDSPlusSelector,
    RDSSelector,
    TSDSConfig,
    TSDSSelector,
    get_selector,
)
from less_hf.selection.baselines import gumbel_top_k, hashed_ngrams
from less_hf.selection.features import subtask_max_of_means

from conftest import make_pool


@pytest.fixture(scope="module")
def targets():
    tp = make_pool(12, seed=100)
    return {kind: tp.filter(lambda r, kind=kind: r["source"] == kind) for kind in ("add", "capital")}


@pytest.fixture(scope="module")
def selectors(warmup_dir, tiny_model_dir, tmp_path_factory):
    grad, proj = GradientConfig(max_length=64, batch_size=16), ProjectionConfig(dims=[256])
    ds = tmp_path_factory.mktemp("iface")
    return {
        "less": LESSSelector(warmup_dir, ds / "less", grad, proj),
        "tsds": TSDSSelector(
            warmup_dir,
            TSDSConfig(k=40, kde_k=20),
            datastore_dir=ds / "tsds",
            gradient_config=grad,
            projection_config=proj,
        ),
        "random": RandomSelector(),
        "bm25": BM25Selector(),
        "dsir": DSIRSelector(),
        "rds": RDSSelector(tiny_model_dir, max_length=64),
        "rds_plus": RDSPlusSelector(tiny_model_dir, max_length=64),
        "longest": LongestSelector(tiny_model_dir),
    }


@pytest.mark.parametrize("method", sorted(SELECTORS))
def test_every_selector_shares_the_interface(method, selectors, pool, targets):
    selector = selectors[method]
    column = selector.score_column
    assert column == f"{method}_score"
    selected = selector.select(pool, targets, n=5, seed=1)
    assert set(selected) == set(targets)
    for name, subset in selected.items():
        assert isinstance(subset, Dataset)
        assert 0 < len(subset) <= 5
        assert subset.column_names[: len(pool.column_names)] == pool.column_names
        assert {column, f"{column}_rank"} <= set(subset.column_names)
        scores = selector.scores_[name]
        assert scores.shape == (len(pool),)
        idx = [pool["id"].index(i) for i in subset["id"]]
        np.testing.assert_allclose(subset[column], scores[idx], rtol=1e-5)
        for row, i in zip(subset, idx):  # the user's own rows, intact
            assert {c: row[c] for c in pool.column_names} == pool[i]
    single = selector.select(pool, targets["add"], fraction=0.1, seed=1)
    assert isinstance(single, Dataset) and 0 < len(single) <= round(0.1 * len(pool))
    with pytest.warns(FutureWarning, match="deprecated"):
        combined = selector.select(pool, targets, n=4, mode="combined", seed=1)
    assert isinstance(combined, Dataset) and 0 < len(combined) <= 4
    assert "combined" in selector.scores_ and selector.policy_ == "max"
    assert selector.select(pool, targets, n=4, mode="max", seed=1)["id"] == combined["id"]
    rr = selector.select(pool, targets, n=4, mode="round_robin", seed=1)
    assert selector.policy_ == "round_robin" and len(set(rr["id"])) == len(rr) == 4
    assert rr["selected_for"][:2] == list(targets)  # the tasks take turns, in the order given
    for row in rr:  # each row carries the score of the task that took it
        assert row[column] == pytest.approx(selector.scores_[row["selected_for"]][pool["id"].index(row["id"])])
    repeat = selector.select(pool, targets, n=5, seed=1)
    assert all(repeat[k]["id"] == selected[k]["id"] for k in targets), "same seed, same selection"


def test_mode_and_registry_errors(pool, targets):
    with pytest.raises(ValueError, match="mode"):
        RandomSelector().select(pool, targets, n=3, mode="union")
    with pytest.raises(ValueError, match="choose one of"):
        get_selector("bm26")
    assert isinstance(get_selector("BM25"), BM25Selector)


def test_random_depends_on_seed(pool, targets):
    a = RandomSelector().select(pool, targets["add"], n=10, seed=0)["id"]
    b = RandomSelector().select(pool, targets["add"], n=10, seed=1)["id"]
    assert a != b and len(set(a)) == 10


def planted(pool):
    target = Dataset.from_list(
        [
            {
                "messages": [
                    {"role": "user", "content": "translate the zebra quokka sentence into okapi"},
                    {"role": "assistant", "content": "zebra quokka okapi narwhal"},
                ]
            }
        ]
    )
    copy = {"id": "planted", "source": "planted", "messages": target[0]["messages"]}
    rows = list(pool) + [copy]
    return Dataset.from_list(rows), target


@pytest.mark.parametrize("selector", [BM25Selector(), DSIRSelector()], ids=["bm25", "dsir"])
def test_lexical_methods_rank_a_planted_copy_first(selector, pool):
    pool2, target = planted(pool)
    scores = selector.score(pool2, {"t": target})["t"]
    assert int(np.argmax(scores)) == len(pool2) - 1
    if isinstance(selector, BM25Selector):
        assert selector.select(pool2, target, n=1)["id"] == ["planted"]


def test_rds_ranks_an_exact_copy_first(tiny_model_dir, pool):
    pool2, target = planted(pool)
    scores = RDSSelector(tiny_model_dir).score(pool2, {"t": target})["t"]
    assert int(np.argmax(scores)) == len(pool2) - 1
    assert scores[-1] == pytest.approx(1.0, abs=1e-5)


def test_dsir_helpers():
    assert (hashed_ngrams("a b c", 7) == hashed_ngrams("A  b, c", 7)).all()
    assert len(hashed_ngrams("a b c", 7)) == 5  # 3 unigrams + 2 bigrams
    rng = np.random.default_rng(0)
    draws = [gumbel_top_k(np.log(np.array([0.7, 0.2, 0.1, 0.0])), 1, rng)[0] for _ in range(3000)]
    freq = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(freq, [0.7, 0.2, 0.1, 0.0], atol=0.03)


def test_subtask_max_of_means():
    sims = np.array([[1.0, 0.0, 0.2], [0.4, 0.4, 0.9]])
    np.testing.assert_allclose(subtask_max_of_means(sims, np.array(["a", "a", "b"])), [0.5, 0.9])


def test_selectors_import_no_heavy_optional_library():
    import subprocess
    import sys

    code = (
        "import sys, less_hf, less_hf.selection; bad = [m for m in ('faiss', 'bm25s', 'matplotlib', "
        "'less_hf.assets') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
