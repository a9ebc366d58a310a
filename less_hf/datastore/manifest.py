"""The datastore manifest: what was built, from what, how — enough to reuse it or refuse a mismatch."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import CorruptFileError, MissingFileError
from .atomic import save_npy_atomic, write_atomic, write_json_atomic

__all__ = [
    "MANIFEST_FILE",
    "SCHEMA_VERSION",
    "CheckpointEntry",
    "Manifest",
    "save_npy_atomic",
    "write_atomic",
    "write_json_atomic",
]

SCHEMA_VERSION = 2
MANIFEST_FILE = "manifest.json"


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

    ``key`` is the content key the datastore was built under (:mod:`less_hf.datastore.keys`): everything that
    changes a feature's numbers. ``files`` maps each file's path (relative to the datastore) to its ``bytes`` and
    ``crc32``, recorded when the build completes; ``invalid_rows`` counts (and lists the first ids of) rows never
    selected, by reason (``no_supervised_token``, ``nonfinite_features``).

    The manifest is a summary, not the only record: every finished feature folder carries its own key and checksums,
    so a lost or damaged manifest is rebuilt from them and never makes features look valid for other inputs.
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
    key: dict[str, Any] = field(default_factory=dict)
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
            raise MissingFileError(f"{directory} is not a less_hf datastore (no {MANIFEST_FILE}).")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise CorruptFileError(
                f"{path} is damaged ({type(err).__name__}: {str(err)[:120]}). Delete it and run the build again: "
                "finished feature folders carry their own keys and are reused only when they match."
            ) from None
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            version = data.get("schema_version") if isinstance(data, dict) else None
            raise CorruptFileError(
                f"{path} has schema_version {version}, this less_hf reads {SCHEMA_VERSION}: delete {directory} and "
                "build it again (older datastores carry no content keys, so they cannot be checked)."
            )
        try:
            data["checkpoints"] = [CheckpointEntry(**c) for c in data["checkpoints"]]
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, KeyError) as err:
            raise CorruptFileError(f"{path} is missing fields ({err}): delete it and run the build again.") from None
