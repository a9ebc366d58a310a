"""Sparse Johnson–Lindenstrauss projection (block count-sketch): fast on CPU and GPU, no D×d matrix.

Output dims are split into ``s`` blocks of ``d/s``; every input coordinate is hashed to one dim in each block with
a random sign and weight ``1/√s``. Inner products are preserved in expectation with the same O(1/√d) error as a
dense Gaussian/Rademacher map (Kane & Nelson 2014), at ``s`` multiply-adds per coordinate instead of ``d``.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from .base import Projector, register
from .hashing import hash32, parameter_seed


@register
class SparseProjector(Projector):
    """Sparse JL projector.

    Args:
        dim: output dimension (a multiple of ``sparsity``).
        seed: projection seed.
        sparsity: non-zeros per input coordinate (``s``).
    """

    kind = "sparse"

    def __init__(self, dim: int, seed: int = 0, sparsity: int = 4) -> None:
        super().__init__(dim, seed)
        if sparsity < 1 or dim % sparsity:
            raise InputError(f"dim ({dim}) must be a positive multiple of sparsity ({sparsity}).")
        self.sparsity = sparsity
        self._cache: dict[tuple[str, int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def spec(self) -> dict:
        return {**super().spec(), "sparsity": self.sparsity}

    def buckets(self, name: str, size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, size)`` output dims (int64) and signs (±1 float32) of one parameter's coordinates."""
        block = self.dim // self.sparsity
        coords = torch.arange(size, dtype=torch.long, device=device)
        dims, signs = [], []
        for k in range(self.sparsity):
            h = hash32(coords ^ parameter_seed(self.seed, name, salt=k))
            h = hash32(h + k)
            dims.append(k * block + h % block)
            signs.append(1.0 - 2.0 * ((hash32(h ^ 0x68E31DA4) >> 13) & 1).float())
        return torch.stack(dims), torch.stack(signs)

    def _tables(self, name: str, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (name, size, str(device))
        if key not in self._cache:
            dims, signs = self.buckets(name, size, device="cpu")
            # int32 dims and fp16 signs (exact for ±1/√s up to rounding of 1/√s) keep the cache at 6 bytes per entry
            self._cache[key] = (dims.to(torch.int32).to(device), (signs / math.sqrt(self.sparsity)).half().to(device))
        return self._cache[key]

    def project_param(self, name: str, x: torch.Tensor) -> torch.Tensor:
        dims, signs = self._tables(name, x.shape[1], x.device)
        out = torch.zeros(x.shape[0], self.dim, dtype=torch.float32, device=x.device)
        for k in range(self.sparsity):
            # int64 indices: index_add_ takes a much slower path with int32 ones (the cache stays int32 to halve it)
            out.index_add_(1, dims[k].long(), x * signs[k])
        return out
