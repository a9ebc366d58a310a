"""Random projections: reproducible, device- and order-independent, equal to explicit matrices, JL-faithful."""

from __future__ import annotations

import math

import pytest
import torch

from less_hf.projection import PROJECTORS, DenseProjector, SparseProjector, build_projector
from less_hf.projection.hashing import hash32, hash32_int, parameter_seed

from reference.dense_matrix import dense_matrix, hash32_python, sparse_matrix

SIZES = {"layers.0.q_proj.lora_A.weight": 24, "layers.0.q_proj.lora_B.weight": 16, "layers.1.o_proj.lora_A.weight": 9}


def random_features(sizes: dict[str, int], batch: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, size, generator=g) for name, size in sizes.items()}


def concat(features: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([features[n].flatten(start_dim=1) for n in sorted(features)], dim=1)


def make(kind: str, dim: int, seed: int = 0, **kwargs):
    return build_projector(kind, dim, seed, **kwargs)


def test_registry_and_errors():
    assert set(PROJECTORS) == {"dense", "sparse"}
    assert isinstance(make("dense", 8), DenseProjector)
    assert isinstance(make("sparse", 8, sparsity=4), SparseProjector)
    with pytest.raises(ValueError, match="Unknown projector"):
        build_projector("gaussian", 8)
    with pytest.raises(ValueError):
        DenseProjector(0)
    with pytest.raises(ValueError):
        make("dense", 8).project({})


@pytest.mark.parametrize("dim,sparsity", [(30, 4), (7, 2), (8, 0)])
def test_sparse_rejects_dim_not_divisible_by_sparsity(dim, sparsity):
    with pytest.raises(ValueError, match="multiple"):
        SparseProjector(dim, sparsity=sparsity)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_reproducible_and_seeded(kind):
    x = random_features(SIZES)
    a = make(kind, 64, seed=3).project(x)
    b = make(kind, 64, seed=3).project(x)  # a fresh projector object: nothing kept between them
    assert a.shape == (5, 64) and a.dtype == torch.float32
    assert torch.equal(a, b)
    c = make(kind, 64, seed=4).project(x)
    assert not torch.allclose(a, c, rtol=1e-2, atol=1e-2)
    # and a different parameter name gets a different block
    renamed = {k.replace("layers.0", "layers.9"): v for k, v in x.items()}
    assert not torch.allclose(a, make(kind, 64, seed=3).project(renamed), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_parameter_order_does_not_matter(kind):
    x = random_features(SIZES)
    reversed_x = dict(reversed(list(x.items())))
    assert list(reversed_x) != list(x)
    torch.testing.assert_close(make(kind, 32).project(x), make(kind, 32).project(reversed_x), rtol=1e-6, atol=1e-6)


def test_dense_equals_explicit_matrix():
    projector = DenseProjector(16, seed=5, chunk_elements=16 * 5)  # several chunks per parameter
    matrix = dense_matrix(projector, SIZES)
    assert set(matrix.abs().unique().tolist()) == {1 / math.sqrt(16)}
    x = random_features(SIZES, batch=4)
    expected = concat(x).double() @ matrix
    torch.testing.assert_close(projector.project(x).double(), expected, rtol=1e-5, atol=1e-5)
    # entry by entry: a sign does not depend on which rows are generated with it
    block = projector.signs("layers.0.q_proj.lora_B.weight", 0, 16)
    for j in (0, 7, 15):
        assert torch.equal(block[j], projector.signs("layers.0.q_proj.lora_B.weight", j, j + 1)[0])
    # roughly balanced signs
    big = projector.signs("p", 0, 4096).float()
    assert abs(big.mean()) < 0.02
    # rows are not all equal / columns differ (no degenerate structure)
    assert torch.unique(big[:64], dim=0).shape[0] == 64


def test_sparse_equals_explicit_matrix():
    projector = SparseProjector(24, seed=2, sparsity=4)
    matrix = sparse_matrix(projector, SIZES)
    x = random_features(SIZES, batch=4)
    expected = concat(x).double() @ matrix
    torch.testing.assert_close(projector.project(x).double(), expected, rtol=1e-3, atol=1e-3)
    # every input coordinate has exactly `sparsity` non-zeros (no collisions inside a block by construction)
    assert ((matrix != 0).sum(dim=1) == 4).all()


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_linearity(kind):
    projector = make(kind, 64, seed=1)
    x, y = random_features(SIZES, seed=1), random_features(SIZES, seed=2)
    a, b = 0.7, -2.5
    combo = {n: a * x[n] + b * y[n] for n in x}
    torch.testing.assert_close(
        projector.project(combo), a * projector.project(x) + b * projector.project(y), rtol=1e-4, atol=1e-4
    )
    # additivity across parameters: projecting each parameter alone and summing is the same map
    parts = sum(projector.project({n: x[n]}) for n in x)
    torch.testing.assert_close(projector.project(x), parts, rtol=1e-5, atol=1e-5)


def correlated_pairs(n_pairs: int, size: int, seed: int, heavy_tail: bool):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n_pairs, size, generator=g)
    if heavy_tail:  # gradient-like: a few large coordinates
        base = base * torch.exp(2 * torch.randn(n_pairs, size, generator=g))
    rho = torch.rand(n_pairs, 1, generator=g) * 2 - 1
    other = rho * base + torch.sqrt(1 - rho**2) * torch.randn(n_pairs, size, generator=g) * base.abs().mean()
    return base, other


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("heavy_tail", [False, True])
def test_johnson_lindenstrauss(kind, heavy_tail):
    d, size = 1024, 3000
    projector = make(kind, d, seed=0)  # the sparse projector at its default sparsity (4)
    x, y = correlated_pairs(64, size, seed=1, heavy_tail=heavy_tail)
    sizes = {"a.lora_A.weight": 1000, "b.lora_B.weight": 2000}

    def split(t):
        return {"a.lora_A.weight": t[:, :1000], "b.lora_B.weight": t[:, 1000:]}

    px, py = projector.project(split(x)), projector.project(split(y))
    assert sum(sizes.values()) == size
    cos = torch.nn.functional.cosine_similarity(x.double(), y.double())
    pcos = torch.nn.functional.cosine_similarity(px.double(), py.double())
    errors = (cos - pcos).abs()
    assert errors.mean() < 1.5 / math.sqrt(d), errors.mean()  # observed ~0.5/sqrt(d); the bound asked is 3/sqrt(d)
    assert errors.max() < 12 / math.sqrt(d), errors.max()
    ratio = px.double().norm(dim=1) / x.double().norm(dim=1)
    assert (ratio - 1).abs().mean() < 0.04, ratio
    assert (ratio - 1).abs().max() < 0.15, ratio
    # inner products: error relative to the product of norms
    ip = (x.double() * y.double()).sum(1) / (x.double().norm(dim=1) * y.double().norm(dim=1))
    pip = (px.double() * py.double()).sum(1) / (x.double().norm(dim=1) * y.double().norm(dim=1))
    assert (ip - pip).abs().mean() < 3 / math.sqrt(d)


def test_dense_cached_and_uncached_agree():
    x = random_features(SIZES, batch=3, seed=7)
    cached = DenseProjector(32, seed=9)
    uncached = DenseProjector(32, seed=9, cache_bytes=0, chunk_elements=64)
    first = cached.project(x)
    assert cached._cache, "small blocks should be cached"
    second = cached.project(x)  # served from the cache
    assert not uncached._cache
    third = uncached.project(x)
    torch.testing.assert_close(first, second, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(first, third, rtol=1e-5, atol=1e-5)


def test_sparse_cache_consistent():
    x = random_features(SIZES, batch=3, seed=7)
    projector = SparseProjector(32, seed=9, sparsity=4)
    torch.testing.assert_close(projector.project(x), projector.project(x), rtol=0, atol=0)


def test_hash_bits_match_python_integers():
    g = torch.Generator().manual_seed(0)
    values = torch.cat(
        [
            torch.randint(0, 2**32, (2000,), generator=g, dtype=torch.long),
            torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1]),
        ]
    )
    hashed = hash32(values)
    assert hashed.dtype == torch.long
    assert ((hashed >= 0) & (hashed < 2**32)).all()
    assert hashed.tolist() == [hash32_python(int(v)) for v in values]
    assert torch.equal(hash32(values.clone()), hashed)  # identical bits for identical inputs
    assert hash32_int(12345) == hash32_python(12345)
    # every output bit is used about half the time (the sign bit used by the dense projector included)
    bits = torch.stack([(hashed >> b) & 1 for b in range(32)]).float().mean(dim=1)
    assert ((bits - 0.5).abs() < 0.06).all()


def test_parameter_seed():
    assert parameter_seed(0, "a") == parameter_seed(0, "a")
    seeds = {parameter_seed(s, n, salt) for s in range(3) for n in ("a", "b", "c") for salt in range(3)}
    assert len(seeds) == 27
    assert all(0 <= s < 2**32 for s in seeds)


def test_spec_records_what_rebuilds_the_projector():
    assert make("dense", 16, seed=3).spec() == {"kind": "dense", "dim": 16, "seed": 3}
    assert make("sparse", 16, seed=3, sparsity=2).spec() == {"kind": "sparse", "dim": 16, "seed": 3, "sparsity": 2}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_same_projection_on_cuda(kind):
    x = random_features(SIZES, batch=4, seed=11)
    cpu = make(kind, 64, seed=2).project(x)
    gpu = make(kind, 64, seed=2).project({n: t.cuda() for n, t in x.items()})
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
    if kind == "dense":
        projector = DenseProjector(64, seed=2)
        assert torch.equal(projector.signs("p", 0, 100, device="cuda").cpu(), projector.signs("p", 0, 100))
    else:
        projector = SparseProjector(64, seed=2)
        dims_cpu, signs_cpu = projector.buckets("p", 100)
        dims_gpu, signs_gpu = projector.buckets("p", 100, device="cuda")
        assert torch.equal(dims_gpu.cpu(), dims_cpu) and torch.equal(signs_gpu.cpu(), signs_cpu)
