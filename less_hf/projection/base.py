"""The projector contract: ``{param: (B, ...) feature}`` → ``(B, d)``, the same matrix on every device."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from ..errors import InputError


class Projector(ABC):
    """A seeded random linear map from the concatenated parameter space (dimension D) to ``dim`` dimensions.

    The map is a sum of per-parameter blocks, each generated from ``(seed, parameter name)`` alone, so it is the
    same for any parameter order, process or device. Subclasses register themselves in :data:`PROJECTORS`.
    """

    kind: str = ""

    def __init__(self, dim: int, seed: int = 0) -> None:
        if dim < 1:
            raise InputError(f"Projection dim must be positive, got {dim}.")
        self.dim = dim
        self.seed = seed

    @abstractmethod
    def project_param(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Project ``(B, D_p)`` features of one parameter to ``(B, dim)``."""

    def project(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Project a dict of per-parameter ``(B, ...)`` features; returns float32 ``(B, dim)``."""
        out = None
        for name in sorted(features):
            x = features[name].flatten(start_dim=1).float()
            y = self.project_param(name, x)
            out = y if out is None else out + y
        if out is None:
            raise InputError("Nothing to project: the feature dict is empty.")
        return out

    def spec(self) -> dict[str, Any]:
        """What the manifest records so the same projector can be rebuilt."""
        return {"kind": self.kind, "dim": self.dim, "seed": self.seed}


PROJECTORS: dict[str, type[Projector]] = {}


def register(cls: type[Projector]) -> type[Projector]:
    PROJECTORS[cls.kind] = cls
    return cls


def build_projector(kind: str, dim: int, seed: int = 0, **kwargs: Any) -> Projector:
    """Build a projector by name (``'sparse'`` or ``'dense'``)."""
    if kind not in PROJECTORS:
        raise InputError(f"Unknown projector {kind!r}; choose one of {sorted(PROJECTORS)}.")
    return PROJECTORS[kind](dim=dim, seed=seed, **kwargs)


def from_config(config) -> list[Projector]:
    """One projector per distinct dim of a :class:`~less_hf.config.ProjectionConfig`, smallest first."""
    kwargs = {"sparsity": config.sparsity} if config.kind == "sparse" else {}
    return [build_projector(config.kind, dim, config.seed, **kwargs) for dim in sorted(set(config.dims))]
