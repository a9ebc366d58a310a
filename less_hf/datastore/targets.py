"""Target (validation) features: plain per-example gradients at each checkpoint, with subtask labels.

Each target's features live in ``targets/<name>-<key digest>/`` of the pool's datastore, keyed by the target rows'
content, their subtask labels and the datastore's key: a changed example, label, checkpoint or setting gets a new
folder, never the old features. ``meta.json`` is written last, so a target whose build failed is never reused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging

from ..errors import CorruptFileError, InputError
from ..gradients.featurizer import GradientFeaturizer
from ..tokenization import feature_columns, row_ids
from .atomic import remove_tree, write_json_atomic
from .keys import dataset_digest, key_digest, strip_sources
from .lock import WriterLock
from .packed import PACKED_BITS
from .reader import Datastore
from .store import FeatureWriter, open_features, read_key
from .write import write_features

logger = logging.get_logger(__name__)

META_FILE = "meta.json"


@dataclass
class TargetFeatures:
    """One target task's features in a datastore (``targets/<name>-<key digest>/``)."""

    name: str
    directory: Path
    subtasks: list[str]
    valid: np.ndarray

    def features(self, checkpoint: str, dim: int) -> np.ndarray:
        return open_features(self.directory / checkpoint, dim)


def target_storage_dtype(pool_storage_dtype: str) -> str:
    """How a target's features are stored: as the pool's, except that a packed (4/2/1-bit) pool keeps its targets in
    float16 — a few hundred rows, so the bytes do not matter, and scores then only carry the pool's quantisation."""
    return "float16" if pool_storage_dtype in PACKED_BITS else pool_storage_dtype


def target_key(datastore: Datastore, dataset, subtasks: list[str]) -> dict[str, Any]:
    """What a target's features are made from: its rows' content and subtask labels, and the datastore's key (model,
    checkpoints, settings; the pool's content is part of it, harmlessly)."""
    columns = feature_columns(dataset)
    return {
        "datastore": key_digest(strip_sources(datastore.manifest.key)),
        "target": {"rows": len(dataset), "columns": columns, "content": dataset_digest(dataset, columns)},
        "subtasks": key_digest(subtasks),
    }


def _folder_name(name: str, key: dict[str, Any]) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:48] or "target"
    return f"{safe}-{key_digest(key)[:16]}"


def build_target_features(
    datastore: Datastore, name: str, dataset, featurizer: GradientFeaturizer, subtask_column: str = "subtask"
) -> TargetFeatures:
    """Compute (or reuse) a target task's gradient features at every checkpoint of ``datastore``.

    Args:
        datastore: the pool's datastore (gives the checkpoints, dims and projection seed).
        name: the task's name (e.g. ``"mmlu"``).
        dataset: the task's few-shot examples, in a TRL format; an optional ``subtask_column`` groups them (the
            score is the max over subtasks). Without it the task is one group.
        featurizer: the featurizer the datastore was built with (its checkpoints are read from their current
            location, so a moved warmup folder still works).
    """
    if len(dataset) == 0:
        raise InputError(f"Target {name!r} has no rows: pass a few examples of the task.")
    subtasks = (
        [str(s) for s in dataset[subtask_column]] if subtask_column in dataset.column_names else [name] * len(dataset)
    )
    key = target_key(datastore, dataset, subtasks)
    directory = datastore.directory / "targets" / _folder_name(name, key)
    names = [c.name for c in datastore.manifest.checkpoints]
    by_name = {c.name: c for c in featurizer.checkpoints}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise InputError(
            f"The datastore {datastore.directory} was built from checkpoints {missing} that the warmup no longer has."
        )
    checkpoints = [by_name[n] for n in names]
    found = _load_if_complete(directory, key, names)
    if found is not None:
        return found  # built before: reading needs no lock
    with WriterLock(datastore.directory, featurizer.shard):
        return _build_target(directory, key, datastore, checkpoints, name, dataset, subtasks, featurizer)


def _load_if_complete(directory: Path, key: dict[str, Any], checkpoints: list[str]) -> TargetFeatures | None:
    if not (directory / META_FILE).exists():
        return None
    try:
        found = load_target_features(directory)
        meta_key = json.loads((directory / META_FILE).read_text()).get("key")
    except (CorruptFileError, ValueError):
        meta_key = None
    if meta_key != key or not all(
        (directory / c).is_dir() and (read_key(directory / c) or {}).get("target") == key for c in checkpoints
    ):
        logger.warning("Target features at %s do not match their key; rebuilding them.", directory)
        (directory / META_FILE).unlink(missing_ok=True)
        return None
    return found


def _build_target(directory, key, datastore, checkpoints, name, dataset, subtasks, featurizer) -> TargetFeatures:
    shard = featurizer.shard
    manifest = datastore.manifest
    if shard.is_main:
        directory.mkdir(parents=True, exist_ok=True)
        for folder in directory.iterdir():  # finished folders of another key (a damaged target) are not reused
            if folder.is_dir() and not folder.name.endswith(".part") and (read_key(folder) or {}).get("target") != key:
                remove_tree(folder)
    tokenized = featurizer.tokenize(dataset, desc=f"Tokenizing {name}")
    counts = tokenized.num_supervised
    valid = counts > 0
    if not valid.any():
        raise InputError(
            f"No row of target {name!r} keeps a supervised token within max_length={featurizer.config.max_length}: "
            "raise --max_length or shorten the examples."
        )
    if not valid.all() and shard.is_main:
        logger.warning("Target %r: %d rows have no supervised token and are ignored.", name, int((~valid).sum()))
    nonfinite: set[int] = set()
    for checkpoint in checkpoints:
        writer = FeatureWriter(
            directory / checkpoint.name,
            len(dataset),
            manifest.dims,
            target_storage_dtype(manifest.storage_dtype),
            shard,
            key={"target": key, "checkpoint": checkpoint.name},
        )
        batches = featurizer.features(checkpoint, tokenized, writer.done, "sgd", desc=f"Target {name}")
        nonfinite.update(write_features(writer, batches, featurizer.config.flush_every, expect_finite=valid))
    if nonfinite:
        bad = sorted(nonfinite)
        valid[bad] = False
        if shard.is_main:
            logger.warning(
                "Target %r: %d rows have non-finite (NaN/inf) gradients (rows %s) and are ignored.",
                name,
                len(bad),
                bad[:10],
            )
    if shard.is_main:  # written last: its presence means every checkpoint is done
        meta = {"name": name, "subtasks": subtasks, "ids": row_ids(dataset), "valid": valid.tolist(), "key": key}
        write_json_atomic(directory / META_FILE, meta)
    shard.barrier()
    return TargetFeatures(name, directory, subtasks, valid)


def load_target_features(directory: str | Path) -> TargetFeatures:
    """Open target features written by :func:`build_target_features`."""
    directory = Path(directory)
    path = directory / META_FILE
    try:
        meta = json.loads(path.read_text())
        return TargetFeatures(meta["name"], directory, list(meta["subtasks"]), np.asarray(meta["valid"], dtype=bool))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorruptFileError(
            f"{path} is unreadable ({type(err).__name__}: {str(err)[:120]}): delete {directory} and run the same "
            "command again (it rebuilds that target's features)."
        ) from None
