"""On-disk feature arrays: ``.npy`` memmaps written in a ``.part`` folder with a done-mask, renamed when complete.

A crash loses at most the rows since the last flush; a restart picks up the rows not marked done. A finished folder
holds ``checksums.json`` (size and CRC-32 of every file, written before the rename), so a corrupted or truncated
file is caught when it is read.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, InputError, MissingFileError, NonFiniteFeaturesError
from .atomic import fsync_dir, remove_tree, save_npy_atomic, write_json_atomic
from .distributed import Shard
from .packed import PACKED_BITS, check_packed_dims, dequantize, pack_rows, packed_width, scales_file_name

DONE_FILE = "done.npy"
CHECKSUMS_FILE = "checksums.json"
KEY_FILE = "key.json"
_CHUNK = 16 << 20

# done-mask states: a row is pending, done, or done but its features were not finite (stored as zeros, never selected)
PENDING, DONE, NONFINITE = 0, 1, 2


def feature_file(directory: Path, dim: int) -> Path:
    return directory / f"d{dim}.npy"


STORAGE_DTYPES = ("float16", "float32", "int8", *PACKED_BITS)


def check_storage_dtype(dtype: str, dims: list[int] | None = None) -> str:
    if dtype not in STORAGE_DTYPES:
        raise InputError(f"storage_dtype={dtype!r}; choose one of {STORAGE_DTYPES}.")
    check_packed_dims(dtype, dims or [])
    return dtype


def stored_layout(storage_dtype: str, dim: int) -> tuple[np.dtype, int]:
    """``(numpy dtype, columns)`` of the ``d<dim>.npy`` array of a storage dtype (packed formats: uint8 bytes)."""
    if storage_dtype in PACKED_BITS:
        return np.dtype(np.uint8), packed_width(dim, PACKED_BITS[storage_dtype])
    return np.dtype(storage_dtype), dim


def row_bytes(storage_dtype: str, dims: list[int]) -> int:
    """Bytes one row takes on disk over all ``dims`` (packed formats include their 4-byte scale)."""
    total = 0
    for dim in dims:
        dtype, columns = stored_layout(storage_dtype, dim)
        total += columns * dtype.itemsize + (4 if storage_dtype in PACKED_BITS else 0)
    return total


def quantize_rows(values: np.ndarray) -> np.ndarray:
    """int8 with one scale per row (absmax → 127). The scale is dropped: LESS scores are cosines, which ignore a row's
    scale, so a row's direction is all that needs storing (half the bytes of fp16)."""
    values = np.asarray(values, dtype=np.float32)
    absmax = np.abs(values).max(axis=1, keepdims=True)
    return np.rint(values * (127.0 / np.where(absmax > 0, absmax, 1.0))).astype(np.int8)


def file_checksum(path: Path) -> dict[str, int | str]:
    """``{"bytes": size, "crc32": "xxxxxxxx"}`` of a file, read in 16 MB chunks."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return {"bytes": path.stat().st_size, "crc32": f"{crc:08x}"}


def rebuild_hint(path: Path) -> str:
    """How to rebuild just the part of a datastore that ``path`` belongs to."""
    folder = path.parent
    if (folder / CHECKSUMS_FILE).exists() or folder.name.startswith("checkpoint-"):
        return (
            f"Delete {folder} and run the same command again: the build recomputes only that checkpoint's features "
            "and reuses the rest."
        )
    return f"Delete {path} and run the same command again: the build rewrites it and reuses the features."


def check_size(path: Path, expected: dict | None) -> None:
    """Cheap check: the file exists and has the recorded size."""
    if expected is None:
        return
    if not path.exists():
        raise CorruptFileError(f"{path} is missing from the datastore. {rebuild_hint(path)}")
    size = path.stat().st_size
    if size != expected["bytes"]:
        raise CorruptFileError(
            f"{path} has {size} bytes but {expected['bytes']} were written: it is truncated or corrupted. "
            f"{rebuild_hint(path)}"
        )


def verify_file(path: Path, expected: dict | None) -> None:
    """Full check: size and CRC-32 against what was recorded (no-op when nothing was recorded)."""
    if expected is None:
        return
    check_size(path, expected)
    _raise_if_crc_differs(path, file_checksum(path)["crc32"], expected["crc32"])


def _raise_if_crc_differs(path: Path, got: str, recorded: str) -> None:
    if got != recorded:
        raise CorruptFileError(
            f"{path} is corrupted: its CRC-32 is {got}, {recorded} was recorded when it was written. "
            f"{rebuild_hint(path)}"
        )


def recorded_checksums(directory: Path) -> dict[str, dict]:
    """The ``checksums.json`` of a finished feature folder (``{}`` for folders written before checksums existed)."""
    path = Path(directory) / CHECKSUMS_FILE
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text())["files"])
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptFileError(f"{path} is unreadable ({err}). {rebuild_hint(path)}") from err


def _allocate(path: Path) -> None:
    """Reserve the file's blocks now, so a full disk fails here with a clear error instead of a SIGBUS later when a
    memory-mapped page is written (a sparse file only takes space when written)."""
    size = path.stat().st_size
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, size)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            path.unlink(missing_ok=True)
            free = shutil.disk_usage(path.parent).free
            raise OSError(
                err.errno,
                f"Not enough disk space for {path} ({size / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free): free some "
                "space or choose another output dir, then run the same command again (finished parts are kept).",
            ) from err
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


class FeatureWriter:
    """Writes ``(n_rows, dim)`` features for one (split, checkpoint) into ``directory``, resumably.

    Under `accelerate launch` every process makes its own writer for the same folder: the main process creates the
    arrays, each process writes the rows it computes and records them in its own done-mask, and :meth:`finalize`
    (called by all) merges the masks, records checksums and renames the folder once.

    Rows whose features are not finite (NaN/inf, e.g. from an overflow) are stored as zeros and marked
    :data:`NONFINITE` in the done-mask; :meth:`finalize` reports them so they are never selected.

    Args:
        directory: the final folder; work happens in ``directory.part`` until :meth:`finalize`.
        n_rows: rows in the split.
        dims: projection dimensions (one ``d{dim}.npy`` each).
        dtype: storage dtype (``float16``, ``float32``, ``int8``, or packed ``int4``/``int2``/``int1``, see
            :mod:`less_hf.datastore.packed`).
        shard: this process's place in the job (default: alone).
    """

    def __init__(
        self,
        directory: Path,
        n_rows: int,
        dims: list[int],
        dtype: str = "float16",
        shard: Shard | None = None,
        key: dict | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.part = self.directory.with_name(self.directory.name + ".part")
        self.shard = shard or Shard()
        self.complete = self.directory.is_dir()
        self.n_rows, self.dims, self.key, self.dtype = n_rows, dims, key, dtype
        check_storage_dtype(dtype, dims)
        if self.complete:
            self.state = np.full(n_rows, DONE, dtype=np.uint8)
            return
        if self.shard.is_main:
            if self.part.is_dir() and read_key(self.part) != key:
                remove_tree(self.part)  # partial rows computed from other inputs can never be completed: start over
            self.part.mkdir(parents=True, exist_ok=True)
            if key is not None and not (self.part / KEY_FILE).exists():
                write_json_atomic(self.part / KEY_FILE, key)
            for dim in dims:
                if self._open(dim, dtype) is None:
                    for path, (file_dtype, columns) in self._files(dim, dtype).items():
                        np.lib.format.open_memmap(path, mode="w+", dtype=file_dtype, shape=(n_rows, columns))
                        _allocate(path)
                    for done_file in self.part.glob("done*.npy"):  # rows of a recreated array are not done
                        done_file.unlink()
        self.shard.barrier()
        self.arrays = {dim: self._open(dim, dtype) for dim in dims}
        self.state = self._merged_state()
        self.shard.barrier()  # every process has read the masks before anyone writes its own

    def _merged_state(self) -> np.ndarray:
        """The done-masks on disk (one per process) merged; a torn or mis-shaped mask counts as nothing done."""
        state = np.zeros(self.n_rows, dtype=np.uint8)
        for done_file in self.part.glob("done*.npy"):
            try:
                mask = np.load(done_file)
            except ValueError:  # cannot happen with the atomic rename; treat as nothing done
                continue
            if mask.shape == (self.n_rows,):
                state = np.maximum(state, mask.astype(np.uint8))
        return state

    def _files(self, dim: int, dtype: str) -> dict[Path, tuple[np.dtype, int]]:
        """The ``.part`` files of ``dim`` with their dtype and columns: the features (and a packed format's scales)."""
        files = {feature_file(self.part, dim): stored_layout(dtype, dim)}
        if dtype in PACKED_BITS:
            files[self.part / scales_file_name(dim)] = (np.dtype(np.float32), 1)
        return files

    def _open(self, dim: int, dtype: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """``(features, scales or None)`` of ``dim`` in ``.part`` if they exist whole with the right shapes and
        dtypes, else None."""
        arrays = []
        for path, (file_dtype, columns) in self._files(dim, dtype).items():
            if not path.exists():
                return None
            try:
                array = np.lib.format.open_memmap(path, mode="r+")
            except ValueError:  # torn header from a crash: start this file again
                return None
            if array.shape != (self.n_rows, columns) or array.dtype != file_dtype:
                return None
            arrays.append(array)
        return arrays[0], (arrays[1] if len(arrays) > 1 else None)

    @property
    def done(self) -> np.ndarray:
        """Rows finished (by this process or found finished on disk)."""
        return self.state != PENDING

    @property
    def _done_file(self) -> Path:
        return self.part / (DONE_FILE if self.shard.world_size == 1 else f"done.rank{self.shard.rank}.npy")

    def pending(self) -> np.ndarray:
        """Row indices not finished yet."""
        if self.complete:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(~self.done)

    def write(self, rows: np.ndarray, features: dict[int, np.ndarray]) -> None:
        """Store ``features[dim]`` (``(len(rows), dim)``) at ``rows``; marks them done at the next flush."""
        rows = np.asarray(rows)
        finite = np.ones(len(rows), dtype=bool)
        for values in features.values():
            finite &= np.isfinite(np.asarray(values)).all(axis=1)
        for dim, values in features.items():
            array, scales = self.arrays[dim]
            values = np.where(finite[:, None], values, 0) if not finite.all() else values
            if scales is not None:
                array[rows], scales[rows] = pack_rows(values, PACKED_BITS[self.dtype])
            else:
                array[rows] = quantize_rows(values) if array.dtype == np.int8 else values
        self.state[rows] = np.where(finite, DONE, NONFINITE)

    def flush(self) -> None:
        """Make written rows durable: flush the arrays, then record them as done (atomic rename)."""
        if self.complete:
            return
        for array, scales in self.arrays.values():
            array.flush()
            if scales is not None:
                scales.flush()
        save_npy_atomic(self._done_file, self.state)

    def finalize(self, expect_finite: np.ndarray | None = None) -> list[int]:
        """Once every row is done (by every process), record checksums and rename ``.part`` to the final name.

        Args:
            expect_finite: rows that should have finite features (those with a supervised token). When every one of
                them came out non-finite, nothing is kept: the ``.part`` folder is deleted and
                :class:`~less_hf.errors.NonFiniteFeaturesError` is raised, so a broken checkpoint never leaves a
                finished folder that a later run would trust.

        Returns:
            The rows whose features were not finite (stored as zeros).
        """
        if self.complete:
            return nonfinite_rows(self.directory)
        self.flush()
        if self.shard.separate:  # one shard of a split build: merge_shards finalises the combined folder
            return np.flatnonzero(self.state == NONFINITE).tolist()
        self.arrays = {}
        self.shard.barrier()
        message = ""
        state = self._merged_state() if self.shard.is_main else None
        if state is not None:
            expected = np.flatnonzero(expect_finite) if expect_finite is not None else np.zeros(0, dtype=np.int64)
            if len(expected) and (state[expected] == NONFINITE).all():
                remove_tree(self.part)
                message = (
                    f"Every row's features at {self.directory.name} are NaN/inf: the model or this checkpoint's "
                    "adapter/optimizer state overflows (a diverged warmup, or fp16). Nothing was kept for it; fix or "
                    "delete that checkpoint (or use --dtype fp32), then run the same command again."
                )
        message = self.shard.broadcast_from_main(message)
        if message:
            raise NonFiniteFeaturesError(message)
        if state is not None:
            if (state == PENDING).any():
                raise RuntimeError(
                    f"{self.part}: {int((state == PENDING).sum())} rows still missing; cannot finalize."
                )
            save_npy_atomic(self.part / DONE_FILE, state)
            for done_file in self.part.glob("done.rank*.npy"):
                done_file.unlink()
            files = {p.name: file_checksum(p) for p in sorted(self.part.glob("*.npy"))}
            record = {"files": files, "nonfinite_rows": np.flatnonzero(state == NONFINITE).tolist(), "key": self.key}
            write_json_atomic(self.part / CHECKSUMS_FILE, record)
            fsync_dir(self.part)
            os.replace(self.part, self.directory)
            fsync_dir(self.directory.parent)
        self.shard.barrier()
        self.complete = True
        return nonfinite_rows(self.directory)


def read_key(directory: Path) -> dict | None:
    """The key a feature folder was made under: ``checksums.json``'s ``key`` in a finished folder, ``key.json`` in a
    ``.part`` folder (None when absent or unreadable: such a folder is never reused)."""
    directory = Path(directory)
    try:
        if (directory / CHECKSUMS_FILE).exists():
            return json.loads((directory / CHECKSUMS_FILE).read_text()).get("key")
        return json.loads((directory / KEY_FILE).read_text())
    except (OSError, ValueError, AttributeError):
        return None


def nonfinite_rows(directory: Path) -> list[int]:
    """Rows of a finished feature folder whose features were not finite."""
    path = Path(directory) / CHECKSUMS_FILE
    if not path.exists():
        return []
    try:
        return [int(i) for i in json.loads(path.read_text()).get("nonfinite_rows", [])]
    except (ValueError, AttributeError, TypeError) as err:
        raise CorruptFileError(f"{path} is unreadable ({err}). {rebuild_hint(path)}") from None


def existing_feature_file(directory: Path, dim: int) -> Path:
    """Path of a finished ``(n_rows, dim)`` feature array; a clear error listing the built dims when missing."""
    path = feature_file(Path(directory), dim)
    if not path.exists():
        raise MissingFileError(
            f"No features of dim {dim} at {directory}; dims built: "
            f"{sorted(p.stem for p in Path(directory).glob('d[0-9]*.npy') if p.stem[1:].isdigit())}"
        )
    return path


def open_features(directory: Path, dim: int, verify: bool = True, storage_dtype: str | None = None) -> np.ndarray:
    """A finished ``(n_rows, dim)`` feature array, checked against its recorded checksums first (one sequential read
    of each file; pass ``verify=False`` to skip): a read-only memmap for float16/float32/int8, the dequantised float32
    values (read whole) for a packed format. ``storage_dtype`` (the datastore's) is checked against the file's layout;
    without it the layout says which format the folder holds."""
    path = existing_feature_file(directory, dim)
    scales_path = Path(directory) / scales_file_name(dim)
    packed = scales_path.exists()
    if verify:
        recorded = recorded_checksums(Path(directory))
        for file in (path, scales_path) if packed else (path,):
            verify_file(file, recorded.get(file.name))
    try:
        array = np.load(path, mmap_mode="r")
        scales = np.load(scales_path) if packed else None
    except (ValueError, OSError, EOFError) as err:
        raise CorruptFileError(f"{path} is not a readable .npy array ({err}). {rebuild_hint(path)}") from None
    found = _layout_name(array, dim, packed)
    if found is None or (storage_dtype is not None and found != storage_dtype):
        raise CorruptFileError(
            f"{path} holds a {array.dtype} {array.shape} array, not {storage_dtype or 'a feature array'} features of "
            f"dim {dim}. {rebuild_hint(path)}"
        )
    if not packed:
        return array
    if scales is None or scales.shape != (array.shape[0], 1) or scales.dtype != np.float32:
        raise CorruptFileError(f"{scales_path} is not a ({array.shape[0]}, 1) float32 array. {rebuild_hint(path)}")
    return dequantize(array, scales, PACKED_BITS[found])


def _layout_name(array: np.ndarray, dim: int, packed: bool) -> str | None:
    """The storage dtype whose layout ``array`` has (None when none does)."""
    for name in STORAGE_DTYPES:
        if (name in PACKED_BITS) == packed and (array.dtype, array.shape[-1]) == stored_layout(name, dim):
            return name if array.ndim == 2 else None
    return None
