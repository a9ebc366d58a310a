"""Packed low-bit feature storage: 4, 2 or 1 bit per value with one float32 scale per row.

Format (``storage_dtype`` ``"int4"``, ``"int2"``, ``"int1"``): each row is quantised on its own to ``2**bits``
symmetric levels at the odd multiples of the row's scale, ``(2k - 2**bits + 1) * scale`` for the code ``k`` — ±1 for
1 bit (the sign), ±1, ±3 for 2 bits, ±1 … ±15 for 4 bits; there is no zero level, so every code carries information.
The step is fitted to the row's RMS, at the step that minimises the squared error for a Gaussian row (random
projections of a gradient are close to Gaussian): 0.996·RMS for 2 bits and 0.335·RMS for 4 bits (Max 1960); values
beyond the outer levels are clipped. The stored scale is then the least-squares one for the chosen codes
(``⟨x, level⟩ / ⟨level, level⟩``; for 1 bit that is ``mean |x|``), so ``level * scale`` is the best decode of the row
its codes allow. An all-zero row (the features of a row with no supervised token, or not finite) gets scale 0 and
decodes to zeros.

QLESS (Ananta et al. 2025) quantises with one absmax (or absmean) scale per tensor and ``2**(bits-1) - 1`` levels on
each side of zero (so 2 bits is ternary) and 1 bit as the sign; per-row scales make rows independent of each other,
and the zero-free levels use all ``2**bits`` codes. Cosine scores ignore a row's scale (``cos(s·l, t) = cos(l, t)``
for ``s > 0``), but the scale is stored so the features decode to their values and zero rows stay zero.

Layout: ``d<dim>.npy`` is a ``(n_rows, dim * bits / 8)`` uint8 array, the codes of consecutive values packed from the
low bits of each byte up (value ``j`` of a row is in byte ``j // (8 // bits)`` at bit ``bits * (j % (8 // bits))``);
``d<dim>.scales.npy`` is ``(n_rows, 1)`` float32. Both are checksummed like every feature file. ``dim`` must be a
multiple of 8.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["PACKED_BITS", "decode_levels", "dequantize", "pack_rows", "packed_width", "scales_file_name"]

PACKED_BITS = {"int4": 4, "int2": 2, "int1": 1}
"""Bits per value of each packed storage dtype."""

# Gaussian MSE-optimal step of a uniform 2**bits-level quantiser, in units of the RMS (Max 1960, Table II).
_STEP = {2: 0.9957, 4: 0.3352}


def packed_width(dim: int, bits: int) -> int:
    """Bytes per row of a packed ``dim``-dimensional feature."""
    return dim * bits // 8


def check_packed_dims(storage_dtype: str, dims: list[int]) -> None:
    """Packed formats need whole bytes per row: every dim a multiple of 8."""
    bad = [d for d in dims if d % 8]
    if storage_dtype in PACKED_BITS and bad:
        raise ConfigError(
            f"storage_dtype={storage_dtype!r} packs 8 // bits values per byte and needs dims that are multiples of 8; "
            f"got {bad}. Choose such dims (--dims) or another --storage_dtype."
        )


def scales_file_name(dim: int) -> str:
    return f"d{dim}.scales.npy"


def _levels(bits: int) -> np.ndarray:
    """The odd-integer level of each code: ``2k - 2**bits + 1``."""
    return (2 * np.arange(2**bits) - (2**bits - 1)).astype(np.float32)


def quantize_codes(values: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(codes (n, d) uint8 in [0, 2**bits), scales (n,) float32)`` of float rows (see the module docstring)."""
    x = np.asarray(values, dtype=np.float32)
    if bits == 1:
        codes = (x > 0).astype(np.uint8)
    else:
        rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=1, keepdims=True)).astype(np.float32)
        step = _STEP[bits] * np.where(rms > 0, rms, 1.0)
        half = 2 ** (bits - 1)
        codes = np.clip(np.floor(x / step) + half, 0, 2**bits - 1).astype(np.uint8)
    level = _levels(bits)[codes]
    # least-squares scale for these codes, in float64 (exact enough for any d); 0 for an all-zero row
    scales = np.einsum("ij,ij->i", x.astype(np.float64), level) / np.einsum("ij,ij->i", level, level, dtype=np.float64)
    return codes, np.maximum(scales, 0).astype(np.float32)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``(n, d)`` codes into ``(n, d * bits / 8)`` bytes, low bits first."""
    per_byte = 8 // bits
    n, d = codes.shape
    grouped = codes.reshape(n, d // per_byte, per_byte)
    packed = np.zeros((n, d // per_byte), dtype=np.uint8)
    for i in range(per_byte):
        packed |= grouped[:, :, i] << np.uint8(bits * i)
    return packed


def pack_rows(values: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantise and pack float rows: ``(packed (n, d * bits / 8) uint8, scales (n, 1) float32)``."""
    codes, scales = quantize_codes(values, bits)
    return pack_codes(codes, bits), scales[:, None]


_LUTS: dict[int, np.ndarray] = {}


def level_table(bits: int) -> np.ndarray:
    """``(256, 8 // bits)`` float32: the levels of the values packed in each byte value."""
    if bits not in _LUTS:
        per_byte, byte = 8 // bits, np.arange(256)
        codes = np.stack([(byte >> (bits * i)) & (2**bits - 1) for i in range(per_byte)], axis=1)
        _LUTS[bits] = _levels(bits)[codes]
    return _LUTS[bits]


def decode_levels(packed: np.ndarray, bits: int, out: np.ndarray | None = None) -> np.ndarray:
    """``(n, d)`` float32 levels (odd integers, not yet scaled) of ``(n, W)`` packed rows, into ``out`` if given."""
    n, width = packed.shape
    per_byte = 8 // bits
    if out is None:
        out = np.empty((n, width * per_byte), dtype=np.float32)
    np.take(level_table(bits), packed, axis=0, out=out.reshape(n, width, per_byte))
    return out


def dequantize(packed: np.ndarray, scales: np.ndarray, bits: int) -> np.ndarray:
    """Float32 values of packed rows: ``level * scale``."""
    return decode_levels(packed, bits) * np.asarray(scales, dtype=np.float32).reshape(-1, 1)
