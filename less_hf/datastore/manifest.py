"""The datastore manifest: what was built, from what, how — enough to reuse it or refuse a mismatch."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"


def write_atomic(path: Path, write: Callable[[IO[Any]], None], mode: str = "wb") -> None:
    """Write ``path`` through a temp file, fsync and a rename, so readers never see half a file.

    ``write`` receives the open temp file. A failed write (a full disk, an exception, Ctrl-C) leaves the previous
    file as it was and no temp file behind.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON with :func:`write_atomic`."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    write_atomic(path, lambda f: f.write(text), mode="w")


def save_npy_atomic(path: Path, array) -> None:
    """``np.save`` with :func:`write_atomic`."""
    import numpy as np

    write_atomic(path, lambda f: np.save(f, array))


@dataclass
class CheckpointEntry:
    name: str
    path: str
    step: int
    weight: float
    mean_lr: float


@dataclass
class Manifest:
    """Provenance of a gradient datastore (``manifest.json``).

    ``files`` maps each file's path (relative to the datastore) to its ``bytes`` and ``crc32``, recorded when the build
    completes; ``invalid_rows`` counts (and lists the first ids of) rows never selected, by reason
    (``no_supervised_token``, ``nonfinite_features``).
    """

    base_model: str
    checkpoints: list[CheckpointEntry]
    transform: str
    projectors: list[dict[str, Any]]
    storage_dtype: str
    max_length: int
    truncation: str
    n_rows: int
    dataset_fingerprint: str
    num_params: int = 0
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    invalid_rows: dict[str, Any] = field(default_factory=dict)
    status: str = "building"
    schema_version: int = SCHEMA_VERSION
    less_hf_version: str = ""
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    @property
    def dims(self) -> list[int]:
        return [p["dim"] for p in self.projectors]

    def save(self, directory: Path) -> None:
        write_json_atomic(directory / MANIFEST_FILE, asdict(self))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Manifest:
        path = Path(directory) / MANIFEST_FILE
        if not path.exists():
            raise FileNotFoundError(f"{directory} is not a less_hf datastore (no {MANIFEST_FILE}).")
        data = json.loads(path.read_text())
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"{path} has schema_version {data.get('schema_version')}, this less_hf reads {SCHEMA_VERSION}: "
                "rebuild the datastore."
            )
        data["checkpoints"] = [CheckpointEntry(**c) for c in data["checkpoints"]]
        return cls(**data)

    def build_key(self) -> dict[str, Any]:
        """The fields that must match for an existing datastore to be reused or resumed."""
        return {
            "base_model": self.base_model,
            "checkpoints": [(c.name, c.step) for c in self.checkpoints],
            "transform": self.transform,
            "projectors": self.projectors,
            "storage_dtype": self.storage_dtype,
            "max_length": self.max_length,
            "truncation": self.truncation,
            "n_rows": self.n_rows,
            "dataset_fingerprint": self.dataset_fingerprint,
        }
