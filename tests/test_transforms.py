"""Optimizer transforms: the Adam update variants against float64 hand formulas and a real AdamW step."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from less_hf.capture import OptimizerMoments, find_checkpoints
from less_hf.capture.optimizer_state import CAPTURE_DIR
from less_hf.gradients import TRANSFORMS, apply_transform, get_transform

from reference.adam import adam_update, torch_adamw_direction

VARIANTS = ["adam", "adam_reference", "adam_torch", "sgd"]


def random_state(seed: int, step: int, betas=(0.8, 0.95), eps=1e-6, batch=3):
    """Gradients (B, 7, 5) and (B, 4) plus moments whose v spans many magnitudes, so eps matters somewhere."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"layer.lora_A.weight": (7, 5), "layer.lora_B.weight": (4,)}
    grads, m, v = {}, {}, {}
    for name, shape in shapes.items():
        grads[name] = torch.randn((batch, *shape), generator=g) * 10 ** torch.empty((batch, *shape)).uniform_(
            -5, 0, generator=g
        )
        m[name] = torch.randn(shape, generator=g) * 1e-3
        v[name] = torch.rand(shape, generator=g) * 10 ** torch.empty(shape).uniform_(-14, -4, generator=g)
    return grads, OptimizerMoments(m, v, step=step, betas=betas, eps=eps)


def test_transform_names():
    assert sorted(TRANSFORMS) == sorted(VARIANTS)
    with pytest.raises(ValueError, match="adam_reference"):
        get_transform("adamw")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "step,betas,eps", [(0, (0.9, 0.999), 1e-8), (7, (0.8, 0.95), 1e-6), (1000, (0.9, 0.999), 1e-8)]
)
def test_matches_float64_formula(variant, step, betas, eps):
    grads, moments = random_state(seed=step, step=step, betas=betas, eps=eps)
    copies = {k: g.clone() for k, g in grads.items()}
    out = apply_transform(variant, copies, moments)
    assert set(out) == set(grads)
    for name, g in grads.items():
        for b in range(g.shape[0]):
            expected = adam_update(
                g[b].numpy(),
                moments.exp_avg[name].numpy(),
                moments.exp_avg_sq[name].numpy(),
                step,
                betas,
                eps,
                variant,
            )
            got = out[name][b].double().numpy()
            scale = np.abs(expected).max()
            np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6 * scale)


def test_variants_are_distinguishable():
    """On these inputs the variants really differ, so matching the formula above pins each one down."""
    grads, moments = random_state(seed=3, step=4)
    outs = {
        v: torch.cat([t.flatten() for _, t in sorted(apply_transform(v, dict(grads), moments).items())])
        for v in VARIANTS
    }
    for a, b in itertools.combinations(VARIANTS, 2):
        ua, ub = outs[a] / outs[a].norm(), outs[b] / outs[b].norm()
        assert (ua - ub).norm() > 1e-2, (a, b)


@pytest.mark.parametrize("step,betas,eps", [(0, (0.9, 0.999), 1e-8), (5, (0.8, 0.95), 1e-6), (123, (0.9, 0.99), 1e-8)])
def test_adam_torch_is_a_real_adamw_step(step, betas, eps):
    grads, moments = random_state(seed=10 + step, step=step, betas=betas, eps=eps)
    out = apply_transform("adam_torch", dict(grads), moments)
    for name, g in grads.items():
        for b in range(g.shape[0]):
            direction = torch_adamw_direction(
                g[b], moments.exp_avg[name], moments.exp_avg_sq[name], step, betas, eps, lr=1e-3
            )
            torch.testing.assert_close(
                out[name][b].double(), direction, rtol=1e-5, atol=1e-6 * float(direction.abs().max())
            )


def test_adam_torch_from_a_warmup_checkpoint(warmup_dir):
    """The same on the moments the warmup really saved (its step count, betas, eps)."""
    checkpoint = find_checkpoints(warmup_dir)[-1]
    moments = OptimizerMoments.load(checkpoint.path / CAPTURE_DIR)
    assert moments.step > 0
    g = torch.Generator().manual_seed(0)
    grads = {n: torch.randn((2, *m.shape), generator=g) * 1e-2 for n, m in moments.exp_avg.items()}
    out = apply_transform("adam_torch", dict(grads), moments)
    for name in list(grads)[:6]:
        for b in range(2):
            direction = torch_adamw_direction(
                grads[name][b],
                moments.exp_avg[name],
                moments.exp_avg_sq[name],
                moments.step,
                moments.betas,
                moments.eps,
            )
            torch.testing.assert_close(
                out[name][b].double(), direction, rtol=1e-5, atol=1e-6 * float(direction.abs().max())
            )


def test_sgd_is_the_gradient_and_needs_no_moments():
    grads, _ = random_state(seed=0, step=0)
    out = apply_transform("sgd", dict(grads), None)
    for name in grads:
        assert torch.equal(out[name], grads[name])


@pytest.mark.parametrize("variant", ["adam", "adam_reference", "adam_torch"])
def test_adam_needs_moments(variant):
    grads, _ = random_state(seed=0, step=0)
    with pytest.raises(ValueError, match="moments"):
        apply_transform(variant, grads, None)


def test_apply_transform_unknown_name():
    grads, moments = random_state(seed=0, step=0)
    with pytest.raises(ValueError, match="Unknown"):
        apply_transform("adagrad", grads, moments)


def test_eps_inside_vs_outside_the_root():
    """A tiny gradient on a coordinate with empty moments: ε inside the root (adam) floors the denominator at √ε and
    damps the update to ≈ g/√ε; ε outside (adam_torch) keeps it ≈ sign(g)."""
    g = torch.full((1, 1), 1e-6)
    moments = OptimizerMoments({"w": torch.zeros(1)}, {"w": torch.zeros(1)}, step=0, betas=(0.9, 0.999), eps=1e-8)
    inside = apply_transform("adam", {"w": g.clone()}, moments)["w"].item()
    outside = apply_transform("adam_torch", {"w": g.clone()}, moments)["w"].item()
    assert inside == pytest.approx(1e-6 / (1e-12 + 1e-8) ** 0.5, rel=1e-4)  # ≈ 0.01
    assert outside == pytest.approx(1e-6 / (1e-6 + 1e-8), rel=1e-4)  # ≈ 0.99
