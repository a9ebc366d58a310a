"""On-disk feature arrays: ``.npy`` memmaps written in a ``.part`` folder with a done-mask, renamed when complete.

A crash loses at most the rows since the last flush; a restart picks up the rows not marked done.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .distributed import Shard

DONE_FILE = "done.npy"


def feature_file(directory: Path, dim: int) -> Path:
    return directory / f"d{dim}.npy"


STORAGE_DTYPES = ("float16", "float32", "int8")


def check_storage_dtype(dtype: str) -> str:
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype={dtype!r}; choose one of {STORAGE_DTYPES}.")
    return dtype


def quantize_rows(values: np.ndarray) -> np.ndarray:
    """int8 with one scale per row (absmax → 127). The scale is dropped: LESS scores are cosines, which ignore a row's
    scale, so a row's direction is all that needs storing (half the bytes of fp16)."""
    values = np.asarray(values, dtype=np.float32)
    absmax = np.abs(values).max(axis=1, keepdims=True)
    return np.rint(values * (127.0 / np.where(absmax > 0, absmax, 1.0))).astype(np.int8)


class FeatureWriter:
    """Writes ``(n_rows, dim)`` features for one (split, checkpoint) into ``directory``, resumably.

    Under `accelerate launch` every process makes its own writer for the same folder: the main process creates the
    arrays, each process writes only the rows its :class:`~less_hf.datastore.distributed.Shard` owns and records them
    in its own done-mask, and :meth:`finalize` (called by all) merges the masks and renames the folder once.

    Args:
        directory: the final folder; work happens in ``directory.part`` until :meth:`finalize`.
        n_rows: rows in the split.
        dims: projection dimensions (one ``d{dim}.npy`` each).
        dtype: storage dtype (``float16`` or ``float32``).
        shard: this process's share of the rows (default: the whole job).
    """

    def __init__(
        self, directory: Path, n_rows: int, dims: list[int], dtype: str = "float16", shard: Shard | None = None
    ) -> None:
        self.directory = Path(directory)
        self.part = self.directory.with_name(self.directory.name + ".part")
        self.shard = shard or Shard()
        self.complete = self.directory.is_dir()
        self.n_rows, self.dims = n_rows, dims
        check_storage_dtype(dtype)
        if self.complete:
            return
        if self.shard.is_main:
            self.part.mkdir(parents=True, exist_ok=True)
            for dim in dims:
                if self._open(dim, dtype) is None:
                    np.lib.format.open_memmap(
                        feature_file(self.part, dim), mode="w+", dtype=dtype, shape=(n_rows, dim)
                    )
                    for done_file in self.part.glob("done*.npy"):  # rows of a recreated array are not done
                        done_file.unlink()
        self.shard.barrier()
        self.arrays = {dim: self._open(dim, dtype) for dim in dims}
        self.done = np.zeros(n_rows, dtype=bool)
        for done_file in self.part.glob("done*.npy"):
            mask = np.load(done_file)
            if mask.shape == (n_rows,):
                self.done |= mask
        self.shard.barrier()  # every process has read the masks before anyone writes its own

    def _open(self, dim: int, dtype: str) -> np.ndarray | None:
        """The ``.part`` array of ``dim`` if it exists whole with the right shape and dtype, else None."""
        path = feature_file(self.part, dim)
        if not path.exists():
            return None
        try:
            array = np.lib.format.open_memmap(path, mode="r+")
        except ValueError:  # torn header from a crash: start this file again
            return None
        if array.shape != (self.n_rows, dim) or array.dtype != np.dtype(dtype):
            return None
        return array

    @property
    def _done_file(self) -> Path:
        return self.part / (DONE_FILE if self.shard.world_size == 1 else f"done.rank{self.shard.rank}.npy")

    def pending(self) -> np.ndarray:
        """Row indices this process still has to compute."""
        if self.complete:
            return np.zeros(0, dtype=np.int64)
        return self.shard.owns(np.flatnonzero(~self.done))

    def write(self, rows: np.ndarray, features: dict[int, np.ndarray]) -> None:
        """Store ``features[dim]`` (``(len(rows), dim)``) at ``rows``; marks them done at the next flush."""
        for dim, values in features.items():
            array = self.arrays[dim]
            self.arrays[dim][rows] = quantize_rows(values) if array.dtype == np.int8 else values
        self.done[rows] = True

    def flush(self) -> None:
        """Make written rows durable: flush the arrays, then record them as done (atomic rename)."""
        if self.complete:
            return
        for array in self.arrays.values():
            array.flush()
        tmp = self._done_file.with_name(f".{self._done_file.name}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, self.done)
        os.replace(tmp, self._done_file)

    def finalize(self) -> None:
        """Once every row is done (by every process), rename the ``.part`` folder to its final name."""
        if self.complete:
            return
        self.flush()
        self.arrays = {}
        self.shard.barrier()
        if self.shard.is_main:
            done = np.zeros(self.n_rows, dtype=bool)
            for done_file in self.part.glob("done*.npy"):
                done |= np.load(done_file)
            if not done.all():
                raise RuntimeError(f"{self.part}: {int((~done).sum())} rows still missing; cannot finalize.")
            np.save(self.part / DONE_FILE, done)
            for done_file in self.part.glob("done.rank*.npy"):
                done_file.unlink()
            os.replace(self.part, self.directory)
        self.shard.barrier()
        self.complete = True


def existing_feature_file(directory: Path, dim: int) -> Path:
    """Path of a finished ``(n_rows, dim)`` feature array; a clear error listing the built dims when missing."""
    path = feature_file(Path(directory), dim)
    if not path.exists():
        raise FileNotFoundError(
            f"No features of dim {dim} at {directory}; dims built: "
            f"{sorted(p.stem for p in Path(directory).glob('d[0-9]*.npy'))}"
        )
    return path


def open_features(directory: Path, dim: int) -> np.ndarray:
    """Read-only memmap of a finished ``(n_rows, dim)`` feature array."""
    return np.load(existing_feature_file(directory, dim), mmap_mode="r")


class BlockReader:
    """Reads row blocks of a finished ``.npy`` with plain file reads instead of a memory map.

    A memory map keeps every page it has touched in the process's resident set, so scanning a 16 GB array grows RSS to
    16 GB; reading block by block keeps it at one block whatever the file size (the OS page cache still helps).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        version = np.lib.format.read_magic(self._file)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(self._file)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(self._file)
        if fortran or len(shape) != 2:
            raise ValueError(f"{path} is not a C-ordered 2-D feature array.")
        self.shape, self.dtype, self._offset = shape, np.dtype(dtype), self._file.tell()

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` as a new array."""
        self._file.seek(self._offset + lo * self.shape[1] * self.dtype.itemsize)
        out = np.fromfile(self._file, dtype=self.dtype, count=(hi - lo) * self.shape[1])
        if out.size != (hi - lo) * self.shape[1]:
            raise ValueError(f"{self.path} is truncated: rows {lo}:{hi} are not all there. Rebuild this part.")
        return out.reshape(hi - lo, self.shape[1])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
