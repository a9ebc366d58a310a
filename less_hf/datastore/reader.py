"""A built datastore, opened for reading: features, valid mask, row ids, each checked against its recorded checksum."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, LessHFError
from .manifest import Manifest
from .store import BlockReader, check_size, existing_feature_file, open_features, rebuild_hint, verify_file


class IncompleteDatastoreError(LessHFError, RuntimeError):
    """The datastore's build has not finished."""


VALID_FILE = "valid.npy"
ROW_IDS_FILE = "row_ids.json"


@dataclass
class Datastore:
    """A built gradient datastore on disk (``manifest.json``, ``valid.npy``, ``pool/<checkpoint>/d<dim>.npy``).

    Every file's size and CRC-32 are recorded in the manifest: :meth:`open` checks the sizes, reads check the CRC
    (:meth:`pool_reader` as the blocks stream by, :meth:`pool_features` before mapping the file), and :meth:`verify`
    checks everything. A mismatch raises :class:`~less_hf.datastore.store.CorruptFileError` naming the file and the
    part to delete so that rerunning the same command rebuilds only that part.
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
        """Full check: the CRC-32 of every recorded file (reads the whole datastore once)."""
        for name, expected in self.manifest.files.items():
            verify_file(self.directory / name, expected)

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

    def pool_features(self, checkpoint: str, dim: int) -> np.ndarray:
        """Memory map of a checkpoint's pool features, checksum-verified once per :class:`Datastore` (for random
        access; scoring streams with :meth:`pool_reader`)."""
        path = existing_feature_file(self.directory / "pool" / checkpoint, dim)
        self._checked(str(path.relative_to(self.directory)))
        return open_features(path.parent, dim, verify=False)

    def pool_reader(self, checkpoint: str, dim: int) -> BlockReader:
        """Block reader of a checkpoint's pool features (flat memory for any pool size; verifies the CRC-32 when the
        file is read through from first row to last)."""
        path = existing_feature_file(self.directory / "pool" / checkpoint, dim)
        return BlockReader(path, self.manifest.files.get(str(path.relative_to(self.directory))))
