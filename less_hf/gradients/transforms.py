"""How a per-example gradient becomes a LESS feature: the Adam update variants, or the plain gradient.

Each Adam variant first takes one Adam step of the captured moments with the row's gradient g:
m′ = β₁m + (1 − β₁)g, v′ = β₂v + (1 − β₂)g², then (t = step + 1, m̂ = m′/(1 − β₁ᵗ), v̂ = v′/(1 − β₂ᵗ)):

=================  ======================  =================  ================================================
name               Γ                       bias correction    ε
=================  ======================  =================  ================================================
``adam``           m̂ / √(v̂ + ε)           yes                inside the root: the denominator is ≥ √ε
                                                              (1e-4 at ε = 1e-8); the LESS paper's formula
``adam_reference`` m′ / √(v′ + ε)          no                 inside the root (princeton-nlp/LESS code)
``adam_torch``     m̂ / (√v̂ + ε)           yes                outside the root: the denominator is ≥ ε
                                                              (1e-8); torch.optim.AdamW's step direction
``sgd``            g                       —                  —
=================  ======================  =================  ================================================

With ε inside the root, coordinates whose v̂ is far below ε are damped (their update is ≈ m̂/√ε instead of
≈ ±1); with ε outside, such rarely-updated coordinates keep a full-size update. So ``adam`` and ``adam_torch`` rank a
pool differently wherever many v̂ are small.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..capture.optimizer_state import OptimizerMoments
from ..errors import InputError

Transform = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, tuple[float, float], float], torch.Tensor]


def _moments(g, m, v, betas):
    b1, b2 = betas
    return b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g


def adam_paper(g, m, v, step, betas, eps):
    """The LESS paper's formula (``adam``): bias-corrected m̂, v̂ at t = step + 1, Γ = m̂ / √(v̂ + ε), ε *inside* the
    root (the denominator never falls below √ε)."""
    m1, v1 = _moments(g, m, v, betas)
    t = step + 1
    return (m1 / (1 - betas[0] ** t)) / torch.sqrt(v1 / (1 - betas[1] ** t) + eps)


def adam_reference(g, m, v, step, betas, eps):
    """The LESS reference code (``adam_reference``): no bias correction, Γ = m′ / √(v′ + ε), ε *inside* the root."""
    m1, v1 = _moments(g, m, v, betas)
    return m1 / torch.sqrt(v1 + eps)


def adam_torch(g, m, v, step, betas, eps):
    """torch's AdamW step direction (``adam_torch``): bias-corrected, Γ = m̂ / (√v̂ + ε), ε *outside* the root (the
    denominator never falls below ε)."""
    m1, v1 = _moments(g, m, v, betas)
    t = step + 1
    return (m1 / (1 - betas[0] ** t)) / (torch.sqrt(v1 / (1 - betas[1] ** t)) + eps)


def sgd(g, m, v, step, betas, eps):
    """The plain gradient (target rows, or an SGD-style pool feature)."""
    return g


TRANSFORMS: dict[str, Transform] = {
    "adam": adam_paper,
    "adam_reference": adam_reference,
    "adam_torch": adam_torch,
    "sgd": sgd,
}


def get_transform(name: str) -> Transform:
    """Look a transform up by name; unknown names get a clear error listing the choices."""
    if name not in TRANSFORMS:
        raise InputError(f"Unknown optimizer_transform {name!r}; choose one of {sorted(TRANSFORMS)}.")
    return TRANSFORMS[name]


def apply_transform(
    name: str, grads: dict[str, torch.Tensor], moments: OptimizerMoments | None
) -> dict[str, torch.Tensor]:
    """Turn ``{param: (B, ...) gradient}`` into ``{param: (B, ...) feature}`` (in place where possible)."""
    fn = get_transform(name)
    if name == "sgd":
        return grads
    if moments is None:
        raise InputError(f"optimizer_transform={name!r} needs the checkpoint's Adam moments.")
    out = {}
    for pname, g in grads.items():
        m = moments.exp_avg[pname].to(device=g.device, dtype=torch.float32)
        v = moments.exp_avg_sq[pname].to(device=g.device, dtype=torch.float32)
        out[pname] = fn(g, m, v, moments.step, moments.betas, moments.eps)
    return out
