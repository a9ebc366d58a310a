"""LESSSelector.select: the returned datasets, budgets, targets, round trips, and that it selects on-task rows."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from datasets import Dataset, load_from_disk

from less_hf import GradientConfig, LESSSelector, ProjectionConfig, SelectionConfig
from less_hf.errors import BudgetError
from less_hf.output import subset_with_scores, top_indices
from less_hf.selection.base import budget

from conftest import make_pool

GRAD = GradientConfig(max_length=64, batch_size=16)
PROJ = ProjectionConfig(dims=[256])


@pytest.fixture(scope="module")
def selector(warmup_dir, tmp_path_factory):
    return LESSSelector(
        warmup_dir, datastore_dir=tmp_path_factory.mktemp("sel") / "ds", gradient_config=GRAD, projection_config=PROJ
    )


@pytest.fixture(scope="module")
def targets():
    tp = make_pool(12, seed=100)
    return {kind: tp.filter(lambda r, kind=kind: r["source"] == kind) for kind in ("add", "capital", "reverse")}


@pytest.fixture(scope="module")
def add_selection(selector, pool, targets):
    selected = selector.select(pool, targets["add"], fraction=0.25)
    return selected, selector.scores_["target"].copy()


def check_selection(selected, pool, scores, k, column="less_score"):
    assert isinstance(selected, Dataset)
    assert len(selected) == k
    assert selected.column_names == pool.column_names + [column, f"{column}_rank"]
    assert selected[f"{column}_rank"] == list(range(k))
    got = np.asarray(selected[column])
    assert (np.diff(got) <= 0).all(), "best first"
    ids = pool["id"]
    index = [ids.index(i) for i in selected["id"]]
    assert len(set(index)) == k
    for row, i in zip(selected, index):  # the user's own rows, every column intact
        assert {c: row[c] for c in pool.column_names} == pool[i]
    np.testing.assert_allclose(got, scores[index], rtol=1e-6)
    # top-k: nothing left out scores higher than anything kept
    rest = np.setdiff1d(np.arange(len(pool)), index)
    if len(rest):
        assert scores[rest].max() <= got.min()


def test_single_target_returns_a_dataset(add_selection, pool):
    selected, scores = add_selection
    assert scores.shape == (len(pool),) and np.isfinite(scores).all()
    check_selection(selected, pool, scores, k=12)  # round(0.25 * 48)


def test_add_target_selects_add_rows(add_selection):
    """Checked beforehand over 3 model seeds × 3 warmup seeds × 3 target draws: the 'add' share of the top 25% was
    0.75-1.0 (random: 1/3), and 4-5 of the top 5 were 'add'."""
    selected, _ = add_selection
    sources = selected["source"]
    assert sources.count("add") / len(sources) >= 0.6, sources
    assert sources[:5].count("add") >= 3, sources


def test_n(selector, pool, targets, add_selection):
    selected = selector.select(pool, targets["add"], n=5)
    check_selection(selected, pool, selector.scores_["target"], k=5)
    assert selected["id"] == add_selection[0]["id"][:5]
    assert len(selector.select(pool, targets["add"], n=len(pool))) == len(pool)
    with pytest.raises(ValueError, match="larger than the pool"):
        selector.select(pool, targets["add"], n=1000)


@pytest.mark.parametrize("fraction,k", [(0.1, 5), (0.05, 2), (0.01, 1), (1.0, 48)])
def test_fraction_rounding(selector, pool, targets, fraction, k):
    assert len(selector.select(pool, targets["add"], fraction=fraction)) == k


def test_dict_targets_return_a_dict(selector, pool, targets, add_selection):
    selected = selector.select(pool, targets, fraction=0.25)
    assert isinstance(selected, dict) and sorted(selected) == ["add", "capital", "reverse"]
    for name, subset in selected.items():
        check_selection(subset, pool, selector.scores_[name], k=12)
    # the same target scores the same whether alone or with others
    np.testing.assert_allclose(selector.scores_["add"], add_selection[1], rtol=1e-6, atol=1e-7)
    assert selected["add"]["id"] == add_selection[0]["id"]
    assert selected["add"]["id"] != selected["reverse"]["id"]


def test_budget_errors(selector, pool, targets):
    with pytest.raises(ValueError, match="fraction or n"):
        selector.select(pool, targets["add"], fraction=0.1, n=3)
    for fraction in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            selector.select(pool, targets["add"], fraction=fraction)
    with pytest.raises(ValueError, match="n must"):
        selector.select(pool, targets["add"], n=0)
    with pytest.raises(ValueError, match="empty"):
        selector.select(pool, {}, fraction=0.1)


def test_budget():
    assert budget(48, None, None) == 2  # default 5%
    assert budget(48, 0.25, None) == 12
    assert budget(10, 0.01, None) == 1
    assert budget(48, None, 7) == 7
    with pytest.raises(ValueError, match="larger than the pool"):
        budget(5, None, 7)


def test_save_and_load_round_trip(add_selection, tmp_path):
    selected, _ = add_selection
    selected.save_to_disk(str(tmp_path / "subset"))
    loaded = load_from_disk(str(tmp_path / "subset"))
    assert loaded.column_names == selected.column_names
    assert loaded.to_list() == selected.to_list()


def test_datastore_is_reused_across_selections(selector, pool, targets):
    selector.select(pool, targets["add"], n=3)
    files = sorted((selector.datastore_dir / "pool").rglob("*.npy"))
    assert files
    before = {p: p.stat().st_mtime_ns for p in files}
    selector.select(pool, {"cap": targets["capital"]}, n=3)
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_selection_config(warmup_dir, pool, targets, selector, tmp_path):
    selector.select(pool, targets["add"], n=1)  # make sure the datastore exists
    configured = LESSSelector(
        warmup_dir,
        datastore_dir=selector.datastore_dir,
        gradient_config=GRAD,
        projection_config=PROJ,
        selection_config=SelectionConfig(n=4, score_column="s"),
    )
    selected = configured.select(pool, targets["add"])
    assert len(selected) == 4 and selected.column_names[-2:] == ["s", "s_rank"]
    by_fraction = LESSSelector(
        warmup_dir,
        datastore_dir=selector.datastore_dir,
        gradient_config=GRAD,
        projection_config=PROJ,
        selection_config=SelectionConfig(fraction=0.5),
    )
    assert len(by_fraction.select(pool, targets["add"])) == 24
    assert len(by_fraction.select(pool, targets["add"], n=3)) == 3  # an explicit budget wins
    default = LESSSelector(
        warmup_dir, datastore_dir=selector.datastore_dir, gradient_config=GRAD, projection_config=PROJ
    )
    assert len(default.select(pool, targets["add"])) == 2  # 5% of 48


def test_pool_with_score_column_is_refused(selector, pool, targets):
    scored = pool.add_column("less_score", [0.0] * len(pool))
    with pytest.raises(ValueError, match="less_score"):
        subset_with_scores(scored, np.array([0]), np.zeros(len(pool)))


def test_rows_without_supervised_token_are_never_selected(warmup_dir, pool, targets, tmp_path, caplog):
    rows = pool.to_list()
    bad = [
        {"id": "bad-1", "source": "add", "messages": [{"role": "user", "content": "what is 1 plus 1 ?"}]},
        {"id": "bad-2", "source": "add", "messages": [{"role": "user", "content": "what is 2 plus 2 ?"}]},
    ]
    with_bad = Dataset.from_list(bad[:1] + rows + bad[1:])
    selector = LESSSelector(warmup_dir, datastore_dir=tmp_path / "ds", gradient_config=GRAD, projection_config=PROJ)
    with caplog.at_level(logging.WARNING, logger="less_hf"):
        with pytest.raises(BudgetError, match=r"asks for 50 rows but only 48 of 50 .* 2 short.*allow_fewer"):
            selector.select(with_bad, targets["add"], n=len(with_bad))
    selected = selector.select(with_bad, targets["add"], n=len(with_bad), allow_fewer=True)
    reports = [r.getMessage() for r in caplog.records if "no supervised token" in r.getMessage()]
    assert len(reports) == 1 and "bad-1" in reports[0] and reports[0].startswith("2 pool rows")
    assert len(selected) == len(pool)
    assert not {"bad-1", "bad-2"} & set(selected["id"])
    scores = selector.scores_["target"]
    assert scores[0] == -np.inf and scores[-1] == -np.inf
    assert np.isfinite(scores[1:-1]).all()
    assert not selector.datastore.valid[[0, -1]].any()


def test_top_indices():
    scores = np.array([0.5, -np.inf, 0.9, 0.5, np.nan, 0.1, 0.9])
    assert top_indices(scores, 3).tolist() == [2, 6, 0]  # ties: row order
    assert top_indices(scores, 10).tolist() == [2, 6, 0, 3, 5]  # never -inf / nan
    assert top_indices(scores, 0).tolist() == []


def test_empty_pool_or_target_is_a_clear_error(warmup_dir, pool, tmp_path):
    from less_hf import LESSSelector

    selector = LESSSelector(warmup_dir, tmp_path / "ds")
    with pytest.raises(ValueError, match="pool is empty"):
        selector.select(pool.select([]), pool)
    with pytest.raises(ValueError, match="has no rows"):
        selector.select(pool, {"empty": pool.select([])})


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s, pool, t: s.select(pool.to_list(), t), r"pool must be a datasets.Dataset, got list.*from_list"),
        (lambda s, pool, t: s.select(pool, {"a": t.to_list()}), r"target 'a' must be a datasets.Dataset"),
        (lambda s, pool, t: s.select(pool, {1: t}), "target names must be strings"),
        (lambda s, pool, t: s.select(pool, t, fraction="0.05"), "fraction must be in"),
        (lambda s, pool, t: s.select(pool, t, n="5"), "n must be a whole number"),
    ],
)
def test_wrong_types_are_clear_errors(pool, call, match):
    from less_hf import BM25Selector, LessHFError

    with pytest.raises(LessHFError, match=match):
        call(BM25Selector(), pool, pool.select([0, 3]))
