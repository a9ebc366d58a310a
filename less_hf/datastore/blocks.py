"""Streaming reads of finished feature files: row blocks with plain file reads (flat memory for any file size), the
CRC-32 checked as the blocks stream by, and the storage format (dense or packed) behind one reader."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError
from .packed import PACKED_BITS, dequantize, scales_file_name
from .store import _raise_if_crc_differs, check_size, rebuild_hint, stored_layout

__all__ = ["BlockReader", "FeatureReader"]


class BlockReader:
    """Reads row blocks of a finished ``.npy`` with plain file reads instead of a memory map.

    A memory map keeps every page it has touched in the process's resident set, so scanning a 16 GB array grows RSS to
    16 GB; reading block by block keeps it at one block whatever the file size (the OS page cache still helps). A
    block can be read into a buffer the caller reuses, so a scan allocates nothing per block.

    With ``expected`` (the file's recorded size and CRC-32), the size is checked on open and, when the blocks are read
    in order from the first row to the last, the CRC-32 of what was read is compared at the last block: a corrupted
    file raises :class:`CorruptFileError` before its scores can be used; ``on_verified`` is called once it matched.
    """

    def __init__(
        self, path: Path, expected: dict | None = None, on_verified: Callable[[Path], None] | None = None
    ) -> None:
        self.path = Path(path)
        check_size(self.path, expected)
        self.expected, self.on_verified = expected, on_verified
        self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        try:
            version = np.lib.format.read_magic(self._file)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(self._file)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(self._file)
        except (ValueError, OSError, EOFError, SyntaxError) as err:
            self._file.close()
            raise CorruptFileError(
                f"{path} has a damaged .npy header ({str(err)[:120]}). {rebuild_hint(self.path)}"
            ) from None
        if fortran or len(shape) != 2:
            self._file.close()
            raise CorruptFileError(f"{path} is not a C-ordered 2-D feature array. {rebuild_hint(self.path)}")
        self.shape, self.dtype, self._offset = shape, np.dtype(dtype), self._file.tell()
        self._file.seek(0)
        self._crc = zlib.crc32(self._file.read(self._offset))
        self._next_row = 0  # the CRC covers rows [0, _next_row) while reads are sequential; None once they are not

    def read(self, lo: int, hi: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``lo:hi``, as a new array or into the first ``hi - lo`` rows of ``out`` (returned)."""
        columns = self.shape[1]
        if out is None:
            out = np.empty((hi - lo, columns), dtype=self.dtype)
        view = out[: hi - lo]
        if view.shape != (hi - lo, columns) or view.dtype != self.dtype or not view.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {self.dtype} buffer of >= {hi - lo} x {columns}")
        self._file.seek(self._offset + lo * columns * self.dtype.itemsize)
        buffer, done = memoryview(view).cast("B"), 0
        while done < len(buffer):  # one large read; a loop only for reads the OS splits
            got = self._file.readinto(buffer[done:])
            if not got:
                raise CorruptFileError(
                    f"{self.path} is truncated: rows {lo}:{hi} are not all there. {rebuild_hint(self.path)}"
                )
            done += got
        if self.expected is not None and self._next_row is not None:
            if lo == self._next_row:
                self._crc = zlib.crc32(buffer, self._crc)
                self._next_row = hi
                if hi == self.shape[0]:
                    self._check_crc()
            else:
                self._next_row = None
        return view

    def _check_crc(self) -> None:
        tail = self._file.read()  # nothing after the last row in a file we wrote
        _raise_if_crc_differs(self.path, f"{zlib.crc32(tail, self._crc):08x}", self.expected["crc32"])  # type: ignore[index]
        if self.on_verified is not None:
            self.on_verified(self.path)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FeatureReader:
    """Row blocks of one ``(n_rows, dim)`` feature array in any storage dtype (see
    :data:`~less_hf.datastore.store.STORAGE_DTYPES`): dense arrays as stored, packed ones as bytes + scales
    (:meth:`read_raw`, what the scorer decodes chunk by chunk) or dequantised (:meth:`read`).

    The file's dtype and shape must be the layout of ``storage_dtype``: a file of another format or bit width (same
    bytes, other meaning) is refused with :class:`CorruptFileError`, never decoded as this one.

    Args:
        path: the ``d<dim>.npy`` file (a packed format's ``d<dim>.scales.npy`` sits next to it).
        storage_dtype: the datastore's storage dtype.
        dim: the feature dimension.
        n_rows: rows the array must have.
        expected: recorded ``{"bytes", "crc32"}`` of each file by name (missing: not checked).
        on_verified: called with a file's path once its CRC-32 matched on a full sequential read.
    """

    def __init__(
        self,
        path: Path,
        storage_dtype: str,
        dim: int,
        n_rows: int,
        expected: dict[str, dict | None] | None = None,
        on_verified: Callable[[Path], None] | None = None,
    ) -> None:
        path = Path(path)
        expected = expected or {}
        self.storage_dtype, self.dim, self.n_rows = storage_dtype, dim, n_rows
        self.bits = PACKED_BITS.get(storage_dtype)
        dtype, columns = stored_layout(storage_dtype, dim)
        self.data = BlockReader(path, expected.get(path.name), on_verified)
        self.scales: BlockReader | None = None
        try:
            _check_layout(self.data, (n_rows, columns), dtype, storage_dtype)
            if self.bits is not None:
                scales_path = path.with_name(scales_file_name(dim))
                self.scales = BlockReader(scales_path, expected.get(scales_path.name), on_verified)
                _check_layout(self.scales, (n_rows, 1), np.dtype(np.float32), "scales")
        except Exception:
            self.close()
            raise

    @property
    def row_bytes(self) -> int:
        """Bytes one row takes on disk (with its scale for a packed format)."""
        return self.data.shape[1] * self.data.dtype.itemsize + (4 if self.scales is not None else 0)

    def read_raw(
        self, lo: int, hi: int, out: np.ndarray | None = None, scales_out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows ``lo:hi`` as stored: ``(features or packed bytes, (hi - lo, 1) float32 scales or None)``, into the
        given buffers when passed."""
        data = self.data.read(lo, hi, out)
        scales = self.scales.read(lo, hi, scales_out) if self.scales is not None else None
        return data, scales

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi``: the stored array for dense formats, the dequantised float32 values for packed ones."""
        data, scales = self.read_raw(lo, hi)
        return data if self.bits is None else dequantize(data, scales, self.bits)

    def close(self) -> None:
        self.data.close()
        if self.scales is not None:
            self.scales.close()

    def __enter__(self) -> FeatureReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_layout(reader: BlockReader, shape: tuple[int, int], dtype: np.dtype, what: str) -> None:
    if tuple(reader.shape) != shape or reader.dtype != dtype:
        raise CorruptFileError(
            f"{reader.path} holds a {reader.dtype} {tuple(reader.shape)} array, not the {dtype} {shape} of "
            f"{what} features this datastore records. {rebuild_hint(reader.path)}"
        )
