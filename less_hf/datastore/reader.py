"""A built datastore, opened for reading: features, valid mask, row ids, each checked against its recorded checksum."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, LessHFError
from .blocks import FeatureReader
from .manifest import Manifest
from .packed import PACKED_BITS, scales_file_name
from .store import check_size, existing_feature_file, open_features, rebuild_hint, verify_file


class IncompleteDatastoreError(LessHFError, RuntimeError):
    """The datastore's build has not finished."""


VALID_FILE = "valid.npy"
ROW_IDS_FILE = "row_ids.json"


@dataclass
class Datastore:
    """A built gradient datastore on disk (``manifest.json``, ``valid.npy``, ``pool/<checkpoint>/d<dim>.npy``).

    Every file's size and CRC-32 are recorded in the manifest: :meth:`open` checks the sizes; the CRC of each file is
    checked once per :class:`Datastore` object — by :meth:`verify` (everything, up front), or by the first read of the
    file (:meth:`pool_reader` as the blocks stream by, :meth:`pool_features` before mapping it) — and remembered, so a
    second scoring pass reads at full speed. A mismatch raises :class:`~less_hf.errors.CorruptFileError` naming the
    file and the part to delete so that rerunning the same command rebuilds only that part.
    """

    directory: Path
    manifest: Manifest

    def __post_init__(self) -> None:
        self._verified: set[str] = set()

    @classmethod
    def open(cls, directory: str | os.PathLike) -> Datastore:
        directory = Path(directory)
        manifest = Manifest.load(directory)
        if manifest.status != "complete":
            raise IncompleteDatastoreError(
                f"Datastore {directory} is incomplete (status {manifest.status!r}); run the build again to resume it."
            )
        store = cls(directory, manifest)
        store.check_sizes()
        return store

    def check_sizes(self) -> None:
        """Cheap check: every recorded file is there with its recorded size."""
        for name, expected in self.manifest.files.items():
            check_size(self.directory / name, expected)

    def missing_parts(self) -> list[str]:
        """Recorded pool checkpoint folders that are gone (deleted to be rebuilt)."""
        folders = {Path(name).parent for name in self.manifest.files if name.startswith("pool/")}
        return sorted(str(f) for f in folders if not (self.directory / f).is_dir())

    def verify(self) -> None:
        """Full check: the CRC-32 of every recorded file not checked yet by this object (reads them once)."""
        for name in self.manifest.files:
            self._checked(name)

    def _checked(self, name: str) -> Path:
        path = self.directory / name
        if name not in self._verified:
            verify_file(path, self.manifest.files.get(name))
            self._verified.add(name)
        return path

    @property
    def valid(self) -> np.ndarray:
        """Rows with at least one supervised token and finite features (others are never selected)."""
        path = self._checked(VALID_FILE)
        try:
            valid = np.load(path)
        except (ValueError, OSError, EOFError) as err:
            raise CorruptFileError(f"{path} is unreadable ({err}). {rebuild_hint(path)}") from None
        if valid.shape != (self.manifest.n_rows,) or valid.dtype != np.bool_:
            raise CorruptFileError(f"{path} is not a ({self.manifest.n_rows},) bool mask. {rebuild_hint(path)}")
        return valid

    @property
    def row_ids(self) -> list[str]:
        path = self._checked(ROW_IDS_FILE)
        try:
            return list(json.loads(path.read_text()))
        except (ValueError, OSError, TypeError) as err:
            raise CorruptFileError(f"{path} is unreadable ({err}). {rebuild_hint(path)}") from None

    @property
    def weights(self) -> np.ndarray:
        return np.asarray([c.weight for c in self.manifest.checkpoints])

    def _feature_files(self, checkpoint: str, dim: int) -> list[str]:
        """Names (relative to the datastore) of a checkpoint's feature file and, packed, its scales file."""
        path = existing_feature_file(self.directory / "pool" / checkpoint, dim)
        names = [str(path.relative_to(self.directory))]
        if self.manifest.storage_dtype in PACKED_BITS:
            names.append(str(path.with_name(scales_file_name(dim)).relative_to(self.directory)))
        return names

    def pool_features(self, checkpoint: str, dim: int) -> np.ndarray:
        """A checkpoint's pool features, checksum-verified once per :class:`Datastore` (for random access; scoring
        streams with :meth:`pool_reader`): a memory map for dense formats, the dequantised float32 array (read whole)
        for packed ones."""
        for name in self._feature_files(checkpoint, dim):
            self._checked(name)
        path = self.directory / "pool" / checkpoint
        return open_features(path, dim, verify=False, storage_dtype=self.manifest.storage_dtype)

    def pool_reader(self, checkpoint: str, dim: int) -> FeatureReader:
        """Block reader of a checkpoint's pool features (flat memory for any pool size). A file whose CRC-32 this
        object has not checked yet is checked when it is read through from first row to last (and then remembered);
        one already checked only has its size checked."""
        names = self._feature_files(checkpoint, dim)
        expected = {}
        for name in names:
            record = self.manifest.files.get(name)
            check_size(self.directory / name, record)
            expected[Path(name).name] = None if name in self._verified else record
        return FeatureReader(
            self.directory / names[0],
            self.manifest.storage_dtype,
            dim,
            self.manifest.n_rows,
            expected,
            on_verified=lambda path: self._verified.add(str(Path(path).relative_to(self.directory))),
        )
