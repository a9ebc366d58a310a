"""Dense Rademacher projection (the paper's), generated blockwise from a counter-based hash.

Entry ``(j, c)`` of a parameter's block is ``±1/√d`` with the sign from ``hash(seed, name, j, c)``, so the matrix is
identical on every device and never needs to exist whole: rows are generated ``chunk_rows`` at a time. When a
parameter's block fits in ``cache_bytes`` (as int8 signs) it is kept, otherwise regenerated on each call — which is
exact but slow for large D (see MEASUREMENTS.md); the sparse projector is the fast default.
"""

from __future__ import annotations

import math

import torch

from .base import Projector, register
from .hashing import hash32, parameter_seed


@register
class DenseProjector(Projector):
    """Dense ±1/√d projector.

    Args:
        dim: output dimension.
        seed: projection seed.
        chunk_elements: entries generated at once (bounds memory while generating).
        cache_bytes: keep generated int8 sign blocks while their total stays under this many bytes.
    """

    kind = "dense"

    def __init__(self, dim: int, seed: int = 0, chunk_elements: int = 1 << 22, cache_bytes: int = 1 << 30) -> None:
        super().__init__(dim, seed)
        self.chunk_elements = chunk_elements
        self.cache_bytes = cache_bytes
        self._cache: dict[tuple[str, int, str], torch.Tensor] = {}
        self._cached_bytes = 0

    def signs(self, name: str, start: int, stop: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Rows ``start:stop`` of the parameter's ``(D_p, dim)`` sign matrix, as int8 ±1."""
        rows = torch.arange(start, stop, dtype=torch.long, device=device)
        row_keys = hash32(hash32(rows) ^ parameter_seed(self.seed, name))
        col_keys = hash32(torch.arange(self.dim, dtype=torch.long, device=device) + 0x2545F491)
        bits = (hash32(row_keys[:, None] ^ col_keys[None, :]) >> 11) & 1
        return (1 - 2 * bits).to(torch.int8)

    def project_param(self, name: str, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[1]
        key = (name, size, str(x.device))
        scale = 1.0 / math.sqrt(self.dim)
        rows_per_chunk = max(1, self.chunk_elements // self.dim)
        out = torch.zeros(x.shape[0], self.dim, dtype=torch.float32, device=x.device)
        cached = self._cache.get(key)
        store = None
        if cached is None and self._cached_bytes + size * self.dim <= self.cache_bytes:
            store = torch.empty((size, self.dim), dtype=torch.int8, device=x.device)
        for start in range(0, size, rows_per_chunk):  # chunked even when cached: never a float D×d copy
            stop = min(size, start + rows_per_chunk)
            block = cached[start:stop] if cached is not None else self.signs(name, start, stop, device=x.device)
            out += x[:, start:stop] @ block.to(x.dtype)
            if store is not None:
                store[start:stop] = block
        if store is not None:
            self._cache[key] = store
            self._cached_bytes += size * self.dim
        return out * scale
