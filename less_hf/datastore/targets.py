"""Target (validation) features: plain per-example gradients at each checkpoint, with subtask labels."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers.utils import logging

from .featurize import GradientFeaturizer, dataset_fingerprint, row_ids
from .lock import WriterLock
from .manifest import write_json_atomic
from .reader import Datastore
from .store import FeatureWriter, open_features

logger = logging.get_logger(__name__)

META_FILE = "meta.json"


@dataclass
class TargetFeatures:
    """One target task's features in a datastore (``targets/<name>-<fingerprint>/``)."""

    name: str
    directory: Path
    subtasks: list[str]
    valid: np.ndarray

    def features(self, checkpoint: str, dim: int) -> np.ndarray:
        return open_features(self.directory / checkpoint, dim)


def build_target_features(
    datastore: Datastore, name: str, dataset, featurizer: GradientFeaturizer, subtask_column: str = "subtask"
) -> TargetFeatures:
    """Compute (or reuse) a target task's gradient features at every checkpoint of ``datastore``.

    Args:
        datastore: the pool's datastore (gives the checkpoints, dims and projection seed).
        name: the task's name (e.g. ``"mmlu"``).
        dataset: the task's few-shot examples, in a TRL format; an optional ``subtask_column`` groups them (the
            score is the max over subtasks). Without it the task is one group.
        featurizer: a featurizer built with the datastore's projectors.
    """
    if len(dataset) == 0:
        raise ValueError(f"Target {name!r} has no rows.")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    directory = datastore.directory / "targets" / f"{safe}-{dataset_fingerprint(dataset)[:12]}"
    checkpoints = datastore.checkpoint_infos()
    if (directory / META_FILE).exists() and all((directory / c.name).is_dir() for c in checkpoints):
        return load_target_features(directory)  # built before: reading needs no lock
    shard = featurizer.shard
    with WriterLock(datastore.directory, shard):
        return _build_target(directory, datastore, checkpoints, name, dataset, featurizer, subtask_column)


def _build_target(directory, datastore, checkpoints, name, dataset, featurizer, subtask_column) -> TargetFeatures:
    shard = featurizer.shard
    if shard.is_main:
        directory.mkdir(parents=True, exist_ok=True)
    tokenized = featurizer.tokenize(dataset, desc=f"Tokenizing {name}")
    counts = np.asarray(tokenized["num_supervised"])
    valid = counts > 0
    if not valid.any():
        raise ValueError(
            f"No row of target {name!r} keeps a supervised token within max_length={featurizer.config.max_length}: "
            "raise max_length or shorten the examples."
        )
    if not valid.all() and shard.is_main:
        logger.warning("Target %r: %d rows have no supervised token and are ignored.", name, int((~valid).sum()))
    subtasks = (
        [str(s) for s in dataset[subtask_column]] if subtask_column in dataset.column_names else [name] * len(dataset)
    )
    nonfinite: set[int] = set()
    for checkpoint in checkpoints:
        writer = FeatureWriter(
            directory / checkpoint.name, len(dataset), datastore.manifest.dims, datastore.manifest.storage_dtype, shard
        )
        featurizer.featurize(checkpoint, tokenized, writer, "sgd", desc=f"Target {name}")
        nonfinite.update(writer.finalize())
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
        if not valid.any():
            raise ValueError(f"Every row of target {name!r} has a non-finite gradient: check the model and data.")
    if shard.is_main:  # written last: its presence means every checkpoint is done
        meta = {"name": name, "subtasks": subtasks, "ids": row_ids(dataset), "valid": valid.tolist()}
        write_json_atomic(directory / META_FILE, meta)
    shard.barrier()
    return TargetFeatures(name, directory, subtasks, valid)


def load_target_features(directory: str | Path) -> TargetFeatures:
    """Open target features written by :func:`build_target_features`."""
    directory = Path(directory)
    meta = json.loads((directory / META_FILE).read_text())
    return TargetFeatures(meta["name"], directory, meta["subtasks"], np.asarray(meta["valid"], dtype=bool))
