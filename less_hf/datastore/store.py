"""On-disk feature arrays: ``.npy`` memmaps written in a ``.part`` folder with a done-mask, renamed when complete.

A crash loses at most the rows since the last flush; a restart picks up the rows not marked done.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

DONE_FILE = "done.npy"


def feature_file(directory: Path, dim: int) -> Path:
    return directory / f"d{dim}.npy"


class FeatureWriter:
    """Writes ``(n_rows, dim)`` features for one (split, checkpoint) into ``directory``, resumably.

    Args:
        directory: the final folder; work happens in ``directory.part`` until :meth:`finalize`.
        n_rows: rows in the split.
        dims: projection dimensions (one ``d{dim}.npy`` each).
        dtype: storage dtype (``float16`` or ``float32``).
    """

    def __init__(self, directory: Path, n_rows: int, dims: list[int], dtype: str = "float16") -> None:
        self.directory = Path(directory)
        self.part = self.directory.with_name(self.directory.name + ".part")
        self.complete = self.directory.is_dir()
        self.n_rows, self.dims = n_rows, dims
        if self.complete:
            return
        self.part.mkdir(parents=True, exist_ok=True)
        self.arrays = {}
        for dim in dims:
            path = feature_file(self.part, dim)
            array = None
            if path.exists():
                try:
                    array = np.lib.format.open_memmap(path, mode="r+")
                except ValueError:  # torn header from a crash: start this file again
                    array = None
                if array is not None and (array.shape != (n_rows, dim) or array.dtype != np.dtype(dtype)):
                    array = None
            if array is None:
                array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n_rows, dim))
                self._reset_done()
            self.arrays[dim] = array
        done_path = self.part / DONE_FILE
        self.done = np.load(done_path) if done_path.exists() else np.zeros(n_rows, dtype=bool)
        if self.done.shape != (n_rows,):
            self.done = np.zeros(n_rows, dtype=bool)

    def _reset_done(self) -> None:
        (self.part / DONE_FILE).unlink(missing_ok=True)

    def pending(self) -> np.ndarray:
        """Row indices still to compute."""
        if self.complete:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(~self.done)

    def write(self, rows: np.ndarray, features: dict[int, np.ndarray]) -> None:
        """Store ``features[dim]`` (``(len(rows), dim)``) at ``rows``; marks them done at the next flush."""
        for dim, values in features.items():
            self.arrays[dim][rows] = values
        self.done[rows] = True

    def flush(self) -> None:
        """Make written rows durable: flush the arrays, then record them as done (atomic rename)."""
        if self.complete:
            return
        for array in self.arrays.values():
            array.flush()
        tmp = self.part / f".{DONE_FILE}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, self.done)
        os.replace(tmp, self.part / DONE_FILE)

    def finalize(self) -> None:
        """Rename the ``.part`` folder to its final name once every row is done."""
        if self.complete:
            return
        self.flush()
        if not self.done.all():
            raise RuntimeError(f"{self.part}: {int((~self.done).sum())} rows still missing; cannot finalize.")
        for array in self.arrays.values():
            del array
        self.arrays = {}
        os.replace(self.part, self.directory)
        self.complete = True


def open_features(directory: Path, dim: int) -> np.ndarray:
    """Read-only memmap of a finished ``(n_rows, dim)`` feature array."""
    path = feature_file(Path(directory), dim)
    if not path.exists():
        raise FileNotFoundError(f"No features of dim {dim} at {directory}; dims built: "
                                f"{sorted(p.stem for p in Path(directory).glob('d*.npy'))}")
    return np.load(path, mmap_mode="r")


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
