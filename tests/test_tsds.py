"""TSDS: water-filling against a direct LP, faiss -1 guard, KDE near-duplicates, sampling modes, LESS features."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from less_hf import GradientConfig, ProjectionConfig, TSDSConfig, TSDSSelector
from less_hf.selection.tsds_math import build_index, kde, scatter_mass, search, water_fill

from reference.tsds_lp import tsds_lp

pytest.importorskip("faiss")


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cloud(n=160, m=8, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    x = unit(rng.normal(size=(n, dim)))
    q = unit(rng.normal(size=(m, dim)) + 0.5 * x[:m])
    return x, q


@pytest.mark.parametrize(
    ("sigma", "alpha", "C"), [(0.0, 0.5, 5.0), (0.75, 0.5, 5.0), (0.5, 0.2, 1.0), (1.0, 0.9, 0.5)]
)
def test_water_filling_matches_direct_lp(sigma, alpha, C):
    x, q = cloud(seed=int(sigma * 10))
    n = len(x)
    index = build_index(x)
    dists, ids = search(index, q, n)
    rho = kde(index, x, np.arange(n), sigma, n)[0] if sigma else np.ones(n)
    solution = water_fill(dists, rho[ids], alpha, C)
    p = scatter_mass(solution.mass, ids, n)
    full = np.sqrt(np.clip(2 - 2 * q @ x.T, 0, None))
    p_ref, objective = tsds_lp(full, rho, alpha, C)
    np.testing.assert_allclose(p, p_ref, atol=1e-9)
    gamma = np.zeros_like(full)
    np.put_along_axis(gamma, ids, solution.mass, axis=1)
    ours = alpha / C * (gamma * full).sum() + (1 - alpha) * len(q) * (gamma * rho).max()
    assert ours == pytest.approx(objective, rel=1e-9)
    np.testing.assert_allclose(solution.mass.sum(axis=1), 1 / len(q))


def test_short_neighbour_lists_keep_mass_inside_and_flag_the_cap():
    x, q = cloud()
    index = build_index(x)
    dists, ids = search(index, q, 3)
    solution = water_fill(dists, np.ones_like(dists), alpha=0.01, C=5.0)  # wants to spread far beyond 3
    assert solution.capped
    np.testing.assert_allclose(solution.mass.sum(axis=1), 1 / len(q))
    assert scatter_mass(solution.mass, ids, len(x))[np.setdiff1d(np.arange(len(x)), ids)].sum() == 0


def test_faiss_missing_neighbours_are_guarded():
    x, q = cloud(n=600, m=5, dim=4)
    index = build_index(x, exact_max_rows=0, nprobe=1)  # IVF, one probed cell: fewer rows than k
    dists, ids = search(index, q, 300)
    assert (ids == -1).any(), "the test needs faiss to return missing neighbours"
    assert np.isinf(dists[ids == -1]).all()
    solution = water_fill(dists, np.ones_like(dists), alpha=0.05, C=1.0)
    assert (solution.mass[ids == -1] == 0).all()
    p = scatter_mass(solution.mass, ids, len(x))
    assert p.sum() == pytest.approx(1.0) and (p >= 0).all()


def vector_pool(n_copies=6, seed=0):
    rng = np.random.default_rng(seed)
    base = unit(rng.normal(size=(60, 8)))
    vecs = np.concatenate([base, np.repeat(base[:1], n_copies, axis=0) + 1e-4])  # row 0 + near-duplicates
    pool = Dataset.from_dict(
        {"id": [f"r{i}" for i in range(len(vecs))], "vec": vecs.tolist(), "text": ["x"] * len(vecs)}
    )
    target = Dataset.from_dict({"vec": unit(base[:1] + 0.05 * rng.normal(size=(3, 8))).tolist(), "text": ["t"] * 3})
    return pool, target


def featurize(ds):
    return np.asarray(ds["vec"], dtype=np.float32)


def test_kde_counts_near_duplicates_and_makes_them_share_mass():
    pool, target = vector_pool()
    plain = TSDSSelector(config=TSDSConfig(sigma=0.0, sampling="top"), featurizer=featurize)
    plain.select(pool, target, n=10)
    with_kde = TSDSSelector(config=TSDSConfig(sigma=0.1, sampling="top"), featurizer=featurize)
    with_kde.select(pool, target, n=10)
    assert with_kde.stats_["target"]["near_duplicates"] >= 7  # row 0 and its 6 copies all see each other
    assert plain.stats_["target"]["near_duplicates"] == 0
    dup = [0] + list(range(60, 66))
    share_plain = plain.scores_["target"][dup].sum()
    share_kde = with_kde.scores_["target"][dup].sum()
    assert share_kde < share_plain, "the KDE regulariser must move mass away from the duplicate cluster"


@pytest.mark.parametrize("sampling", ["with_replacement", "without_replacement", "top"])
def test_sampling_modes(sampling):
    pool, target = vector_pool(n_copies=0)
    selector = TSDSSelector(config=TSDSConfig(sampling=sampling, alpha=0.05), featurizer=featurize, seed=3)
    selected = selector.select(pool, target, n=8)
    p = selector.scores_["target"]
    assert p.sum() == pytest.approx(1.0)
    assert selected.column_names == pool.column_names + ["tsds_score", "tsds_score_rank", "tsds_count"]
    idx = [pool["id"].index(i) for i in selected["id"]]
    assert all(p[i] > 0 for i in idx)
    np.testing.assert_allclose(selected["tsds_score"], p[idx])
    assert list(np.diff(selected["tsds_score"]) <= 0) == [True] * (len(idx) - 1)
    if sampling == "with_replacement":
        assert len(selected) == 8
        assert sum(c for _, c in set(zip(selected["id"], selected["tsds_count"]))) == 8
    else:
        assert len(set(idx)) == len(idx) == min(8, int((p > 0).sum()))
        assert set(selected["tsds_count"]) == {1}
    if sampling == "top":
        assert set(idx) == set(np.argsort(-p, kind="stable")[: len(idx)])
    again = TSDSSelector(config=TSDSConfig(sampling=sampling, alpha=0.05), featurizer=featurize).select(
        pool, target, n=8, seed=3
    )
    assert again["id"] == selected["id"], "same seed, same selection"


def test_tsds_on_less_features(warmup_dir, pool, tmp_path):
    from conftest import make_pool

    target = make_pool(6, seed=100).filter(lambda r: r["source"] == "add")
    selector = TSDSSelector(
        warmup_dir,
        config=TSDSConfig(sampling="without_replacement", k=40, kde_k=20),
        datastore_dir=tmp_path / "ds",
        gradient_config=GradientConfig(max_length=64, batch_size=16),
        projection_config=ProjectionConfig(dims=[256]),
    )
    selected = selector.select(pool, {"add": target, "capital": make_pool(6, seed=7)}, n=6)
    assert set(selected) == {"add", "capital"}
    for name, subset in selected.items():
        assert 0 < len(subset) <= 6
        assert selector.scores_[name].sum() == pytest.approx(1.0)
    combined = selector.select(pool, {"add": target, "capital": make_pool(6, seed=7)}, n=6, mode="combined")
    np.testing.assert_allclose(
        selector.scores_["combined"], (selector.scores_["add"] + selector.scores_["capital"]) / 2
    )
    assert len(combined) <= 6


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="warmup_dir"):
        TSDSSelector()
    with pytest.raises(ValueError, match="sampling"):
        TSDSSelector(config=TSDSConfig(sampling="best"), featurizer=featurize)
    with pytest.raises(ValueError, match="alpha"):
        water_fill(np.zeros((1, 2)), np.ones((1, 2)), alpha=1.0, C=1.0)
