"""Explicit projection matrices, built entry by entry, for small parameter sets.

The projected feature of a dict of per-parameter features is ``concat(features in sorted-name order) @ M``.
"""

from __future__ import annotations

import math

import torch


def dense_matrix(projector, sizes: dict[str, int]) -> torch.Tensor:
    """(D, d) float64 matrix of a DenseProjector: entry (row, col) = signs(name, j, j+1)[0, col] / sqrt(d)."""
    d = projector.dim
    total = sum(sizes.values())
    matrix = torch.zeros(total, d, dtype=torch.float64)
    offset = 0
    for name in sorted(sizes):
        for j in range(sizes[name]):
            row = projector.signs(name, j, j + 1)[0]
            for c in range(d):
                s = int(row[c])
                assert s in (-1, 1), s
                matrix[offset + j, c] = s / math.sqrt(d)
        offset += sizes[name]
    return matrix


def sparse_matrix(projector, sizes: dict[str, int]) -> torch.Tensor:
    """(D, d) float64 matrix of a SparseProjector from its buckets(): each input coordinate j of a parameter has
    ``sparsity`` entries sign_k(j) / sqrt(s) at column dims_k(j), one in each block of d/s columns."""
    d, s = projector.dim, projector.sparsity
    total = sum(sizes.values())
    matrix = torch.zeros(total, d, dtype=torch.float64)
    offset = 0
    for name in sorted(sizes):
        dims, signs = projector.buckets(name, sizes[name])
        for j in range(sizes[name]):
            for k in range(s):
                col = int(dims[k, j])
                assert k * (d // s) <= col < (k + 1) * (d // s)
                assert float(signs[k, j]) in (-1.0, 1.0)
                matrix[offset + j, col] += float(signs[k, j]) / math.sqrt(s)
        offset += sizes[name]
    return matrix


def hash32_python(value: int) -> int:
    """The documented 32-bit mixer on Python ints (arbitrary precision, so no overflow can hide)."""
    x = value & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    return x ^ (x >> 16)
