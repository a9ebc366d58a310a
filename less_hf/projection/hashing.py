"""Counter-based hashing: random signs and buckets that depend only on (seed, parameter name, index).

Everything is computed in int64 on 32-bit values with multipliers below 2³¹, so no product overflows and CPU and
CUDA give bit-identical results. Seeds are derived from parameter names, so every rank and device agrees on the
projection without sharing state, and the parameter order does not matter.
"""

from __future__ import annotations

import zlib

import torch

MASK32 = 0xFFFFFFFF
_M1 = 0x7FEB352D
_M2 = 0x2C1B3C6D


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (xorshift-multiply) applied elementwise to an int64 tensor of values < 2³²."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = (x * _M1) & MASK32
    x = x ^ (x >> 15)
    x = (x * _M2) & MASK32
    return x ^ (x >> 16)


def hash32_int(value: int) -> int:
    """:func:`hash32` for one Python int."""
    return int(hash32(torch.tensor([value & MASK32], dtype=torch.long))[0])


def parameter_seed(seed: int, name: str, salt: int = 0) -> int:
    """A 32-bit seed for one parameter, from the global seed, the parameter's canonical name and a salt."""
    return hash32_int(hash32_int(seed) ^ zlib.crc32(name.encode()) ^ hash32_int(salt + 0x9E3779B9))
