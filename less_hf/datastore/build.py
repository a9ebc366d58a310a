"""Build the gradient datastore: per checkpoint, per-example features of every pool row, projected, on disk."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from ..capture.checkpoints import CheckpointInfo, checkpoint_weights, find_checkpoints
from ..capture.optimizer_state import CAPTURE_DIR, OptimizerMoments, moments_from_hf_checkpoint
from ..config import GradientConfig, ProjectionConfig
from ..gradients import PerExampleGradients, apply_transform, collate, get_transform, length_sorted_batches
from ..modeling import (
    base_model_of,
    load_peft_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    swap_adapter_weights,
)
from ..projection import Projector, build_projector
from ..tokenization import tokenize_dataset
from .distributed import current_shard
from .manifest import CheckpointEntry, Manifest, save_npy_atomic, write_json_atomic
from .store import BlockReader, FeatureWriter, check_storage_dtype, existing_feature_file, open_features

logger = logging.get_logger(__name__)

VALID_FILE = "valid.npy"
ROW_IDS_FILE = "row_ids.json"


def dataset_fingerprint(dataset) -> str:
    """The `datasets` fingerprint (changes with any transform of the data), or a content hash as fallback."""
    fingerprint = getattr(dataset, "_fingerprint", None)
    if fingerprint:
        return str(fingerprint)
    from datasets.fingerprint import Hasher

    return Hasher.hash(dataset.to_dict())


def row_ids(dataset) -> list[str]:
    """Row ids: the dataset's ``id`` column when it has one, else the row index."""
    if "id" in dataset.column_names:
        return [str(i) for i in dataset["id"]]
    return [str(i) for i in range(len(dataset))]


class GradientFeaturizer:
    """Loads the warmup model once, swaps checkpoints, and turns tokenized rows into projected features.

    Args:
        checkpoints: the warmup checkpoints (see :func:`~less_hf.capture.find_checkpoints`).
        config: gradient settings.
        projectors: one projector per output dim.
        base_model: base model path/name (default: recorded in the checkpoint).
    """

    def __init__(
        self,
        checkpoints: list[CheckpointInfo],
        config: GradientConfig,
        projectors: list[Projector],
        base_model: str | None = None,
    ) -> None:
        self.checkpoints = checkpoints
        self.config = config
        self.projectors = projectors
        self.base_model = base_model or base_model_of(checkpoints[0].path)
        self.shard = current_shard()
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.tokenizer = load_tokenizer(self.base_model)
        self._model = None
        self._per_example: PerExampleGradients | None = None
        self._loaded: str | None = None
        self._moments: OptimizerMoments | None = None

    def load(self, checkpoint: CheckpointInfo) -> None:
        """Make ``checkpoint``'s LoRA weights and Adam moments current."""
        if self._loaded == checkpoint.name:
            return
        if self._model is None:
            self._model = load_peft_model(self.base_model, checkpoint.path, self.device, self.dtype)
            self._per_example = PerExampleGradients(self._model)
        else:
            swap_adapter_weights(self._model, checkpoint.path)
        if checkpoint.captured:
            moments = OptimizerMoments.load(checkpoint.path / CAPTURE_DIR)
        else:
            moments = moments_from_hf_checkpoint(checkpoint.path, self._model)
        moments.check_matches(self._per_example.shapes)  # type: ignore[union-attr]
        self._moments, self._loaded = moments, checkpoint.name

    @property
    def num_params(self) -> int:
        return self._per_example.num_params if self._per_example else 0

    def tokenize(self, dataset, desc: str = "Tokenizing") -> Any:
        return tokenize_dataset(dataset, self.tokenizer, self.config.max_length, self.config.truncation, desc=desc)

    def featurize(
        self,
        checkpoint: CheckpointInfo,
        tokenized,
        writer: FeatureWriter,
        transform: str,
        desc: str = "Gradients",
        flush_every: int = 20,
    ) -> None:
        """Compute features for the rows of ``tokenized`` that ``writer`` still misses (rows with no supervised
        token get zeros; callers mask them out with the valid mask)."""
        get_transform(transform)
        pending = writer.pending()
        if len(pending) == 0:
            return
        self.load(checkpoint)
        counts = np.asarray(tokenized["num_supervised"])
        empty = pending[counts[pending] == 0]
        if len(empty):
            writer.write(empty, {p.dim: np.zeros((len(empty), p.dim), dtype=np.float32) for p in self.projectors})
        todo = pending[counts[pending] > 0]
        lengths = [len(x) for x in tokenized.select(todo.tolist())["input_ids"]] if len(todo) else []
        pad_id = self.tokenizer.pad_token_id
        bar = tqdm(
            total=len(todo),
            desc=f"{desc} [{checkpoint.name}]",
            unit="row",
            dynamic_ncols=True,
            disable=not self.shard.is_main,
        )
        for n_batch, batch_pos in enumerate(length_sorted_batches(lengths, self.config.batch_size)):
            rows = todo[batch_pos]
            batch = collate([tokenized[int(i)] for i in rows], pad_id, self.device)
            with torch.enable_grad():
                grads, _, _ = self._per_example(batch)  # type: ignore[misc]
            feats = apply_transform(transform, grads, self._moments)
            del grads
            writer.write(rows, {p.dim: p.project(feats).cpu().numpy() for p in self.projectors})
            del feats
            bar.update(len(rows))
            if (n_batch + 1) % flush_every == 0:
                writer.flush()
        bar.close()
        writer.flush()


@dataclass
class Datastore:
    """A built gradient datastore on disk (``manifest.json``, ``valid.npy``, ``pool/<checkpoint>/d<dim>.npy``)."""

    directory: Path
    manifest: Manifest

    @classmethod
    def open(cls, directory: str | os.PathLike) -> Datastore:
        directory = Path(directory)
        manifest = Manifest.load(directory)
        if manifest.status != "complete":
            raise RuntimeError(
                f"Datastore {directory} is incomplete (status {manifest.status!r}); run the build again to resume it."
            )
        return cls(directory, manifest)

    @property
    def valid(self) -> np.ndarray:
        """Rows with at least one supervised token (others are never selected)."""
        return np.load(self.directory / VALID_FILE)

    @property
    def row_ids(self) -> list[str]:
        return json.loads((self.directory / ROW_IDS_FILE).read_text())

    @property
    def weights(self) -> np.ndarray:
        return np.asarray([c.weight for c in self.manifest.checkpoints])

    def pool_features(self, checkpoint: str, dim: int) -> np.ndarray:
        """Memory map of a checkpoint's pool features (for random access; scoring streams with :meth:`pool_reader`)."""
        return open_features(self.directory / "pool" / checkpoint, dim)

    def pool_reader(self, checkpoint: str, dim: int) -> BlockReader:
        """Block reader of a checkpoint's pool features (flat memory for any pool size)."""
        return BlockReader(existing_feature_file(self.directory / "pool" / checkpoint, dim))

    def checkpoint_infos(self) -> list[CheckpointInfo]:
        return [
            CheckpointInfo(Path(c.path), c.step, c.mean_lr, (Path(c.path) / CAPTURE_DIR).exists())
            for c in self.manifest.checkpoints
        ]


def make_projectors(config: ProjectionConfig) -> list[Projector]:
    kwargs = {"sparsity": config.sparsity} if config.kind == "sparse" else {}
    return [build_projector(config.kind, dim, config.seed, **kwargs) for dim in sorted(set(config.dims))]


def build_datastore(
    warmup_dir: str | os.PathLike,
    pool,
    output_dir: str | os.PathLike,
    gradient_config: GradientConfig | None = None,
    projection_config: ProjectionConfig | None = None,
    base_model: str | None = None,
    featurizer: GradientFeaturizer | None = None,
) -> Datastore:
    """Build (or resume, or reuse) the pool's gradient datastore.

    Args:
        warmup_dir: the warmup's output dir holding ``checkpoint-N`` folders.
        pool: the candidate rows (`datasets.Dataset` in a TRL format).
        output_dir: where the datastore lives. An existing complete datastore with the same build key is reused; a
            partial one is resumed; a different one is refused.
        gradient_config, projection_config: settings (defaults: the paper's Adam update, sparse JL to 8192 dims).
        base_model: override the base model recorded in the checkpoints.
        featurizer: reuse an already loaded model (the selector passes its own).

    Returns:
        The :class:`Datastore`.
    """
    gradient_config = gradient_config or GradientConfig()
    projection_config = projection_config or ProjectionConfig()
    check_storage_dtype(projection_config.storage_dtype)
    output_dir = Path(output_dir)
    checkpoints = find_checkpoints(warmup_dir)
    weights = checkpoint_weights(checkpoints)
    projectors = featurizer.projectors if featurizer else make_projectors(projection_config)
    if gradient_config.optimizer_transform == "sgd":
        logger.warning("Pool features use the plain gradient (optimizer_transform='sgd'), not LESS's Adam update.")
    manifest = Manifest(
        base_model=base_model or base_model_of(checkpoints[0].path),
        checkpoints=[
            CheckpointEntry(c.name, str(c.path.resolve()), c.step, float(w), c.mean_lr)
            for c, w in zip(checkpoints, weights)
        ],
        transform=gradient_config.optimizer_transform,
        projectors=[p.spec() for p in projectors],
        storage_dtype=projection_config.storage_dtype,
        max_length=gradient_config.max_length,
        truncation=gradient_config.truncation,
        n_rows=len(pool),
        dataset_fingerprint=dataset_fingerprint(pool),
    )
    from .. import __version__

    manifest.less_hf_version = __version__
    if (output_dir / "manifest.json").exists():
        existing = Manifest.load(output_dir)
        if existing.build_key() != manifest.build_key():
            diff = [k for k, v in manifest.build_key().items() if existing.build_key()[k] != v]
            raise ValueError(
                f"{output_dir} already holds a datastore built differently ({', '.join(diff)} differ). Use another "
                "output dir, or delete it to rebuild."
            )
        if existing.status == "complete":
            logger.info("Reusing complete datastore at %s", output_dir)
            return Datastore(output_dir, existing)
        manifest.created = existing.created
        logger.info("Resuming datastore build at %s", output_dir)
    featurizer = featurizer or GradientFeaturizer(checkpoints, gradient_config, projectors, base_model)
    shard = featurizer.shard
    ids = row_ids(pool)
    if shard.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        manifest.save(output_dir)
        write_json_atomic(output_dir / ROW_IDS_FILE, ids)
    tokenized = featurizer.tokenize(pool, desc="Tokenizing pool")
    counts = np.asarray(tokenized["num_supervised"])
    valid = counts > 0
    if not valid.all() and shard.is_main:
        bad = [ids[i] for i in np.flatnonzero(~valid)[:5]]
        logger.warning(
            "%d pool rows have no supervised token after truncation to %d tokens (e.g. %s); they will "
            "never be selected.",
            int((~valid).sum()),
            gradient_config.max_length,
            bad,
        )
    if shard.is_main:
        save_npy_atomic(output_dir / VALID_FILE, valid)
    shard.barrier()
    for checkpoint in checkpoints:
        writer = FeatureWriter(
            output_dir / "pool" / checkpoint.name, len(pool), manifest.dims, projection_config.storage_dtype, shard
        )
        featurizer.featurize(checkpoint, tokenized, writer, gradient_config.optimizer_transform, desc="Pool")
        writer.finalize()
    manifest.num_params = featurizer.num_params or manifest.num_params
    manifest.status = "complete"
    if shard.is_main:
        manifest.save(output_dir)
    shard.barrier()
    return Datastore(output_dir, manifest)
