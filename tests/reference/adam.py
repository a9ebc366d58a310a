"""The Adam update variants of SPEC.md, by hand in float64 numpy, and a real ``torch.optim.AdamW`` step."""

from __future__ import annotations

import numpy as np
import torch


def adam_update(g, m, v, step: int, betas: tuple[float, float], eps: float, variant: str) -> np.ndarray:
    """Γ for one gradient ``g`` from the saved moments ``m``, ``v`` at optimizer step ``step`` (float64).

    - ``adam`` (the seeds): m̂ / sqrt(v̂ + eps), bias correction at t = step + 1
    - ``adam_reference`` (LESS code): m' / sqrt(v' + eps), no bias correction
    - ``adam_torch`` (torch's AdamW): m̂ / (sqrt(v̂) + eps)
    - ``sgd``: g
    """
    g, m, v = (np.asarray(a, dtype=np.float64) for a in (g, m, v))
    b1, b2 = float(betas[0]), float(betas[1])
    if variant == "sgd":
        return g.copy()
    m1 = b1 * m + (1.0 - b1) * g
    v1 = b2 * v + (1.0 - b2) * g * g
    t = step + 1
    mhat = m1 / (1.0 - b1**t)
    vhat = v1 / (1.0 - b2**t)
    if variant == "adam":
        return mhat / np.sqrt(vhat + eps)
    if variant == "adam_reference":
        return m1 / np.sqrt(v1 + eps)
    if variant == "adam_torch":
        return mhat / (np.sqrt(vhat) + eps)
    raise ValueError(variant)


def torch_adamw_direction(
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: int,
    betas: tuple[float, float],
    eps: float,
    lr: float = 1e-3,
) -> torch.Tensor:
    """(θ_before − θ_after) / lr for one real AdamW step (weight_decay=0) from the given state, in float64."""
    theta = torch.nn.Parameter(torch.randn(g.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    before = theta.detach().clone()
    opt = torch.optim.AdamW([theta], lr=lr, betas=betas, eps=eps, weight_decay=0.0, foreach=False)
    opt.state[theta] = {
        "step": torch.tensor(float(step)),
        "exp_avg": m.double().clone(),
        "exp_avg_sq": v.double().clone(),
    }
    theta.grad = g.double().clone()
    opt.step()
    return (before - theta.detach()) / lr
