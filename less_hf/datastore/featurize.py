"""Turn tokenized rows into projected per-example features at one warmup checkpoint (the model is loaded once and
each checkpoint's LoRA weights and Adam moments are swapped in)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..capture.checkpoints import CheckpointInfo
from ..capture.optimizer_state import CAPTURE_DIR, OptimizerMoments, moments_from_hf_checkpoint
from ..config import GradientConfig
from ..gradients import PerExampleGradients, apply_transform, collate, get_transform, length_sorted_batches
from ..modeling import (
    base_model_of,
    load_peft_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    swap_adapter_weights,
)
from ..projection import Projector
from ..tokenization import tokenize_dataset
from .distributed import current_shard
from .store import FeatureWriter


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
        self._plans: dict[Any, list[np.ndarray]] = {}

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

    def batch_plan(self, tokenized) -> list[np.ndarray]:
        """All rows with a supervised token cut into length-sorted batches: one global plan, the same for 1 or N
        processes and for a first run or a resume, so every row is always computed in the same batch (same padding,
        same kernels, same bits)."""
        key = getattr(tokenized, "_fingerprint", None) or id(tokenized)
        if key not in self._plans:
            counts = np.asarray(tokenized["num_supervised"])
            rows = np.flatnonzero(counts > 0)
            lengths = [len(x) for x in tokenized.select(rows.tolist())["input_ids"]] if len(rows) else []
            self._plans = {key: [rows[b] for b in length_sorted_batches(lengths, self.config.batch_size)]}
        return self._plans[key]

    def featurize(
        self,
        checkpoint: CheckpointInfo,
        tokenized,
        writer: FeatureWriter,
        transform: str,
        desc: str = "Gradients",
        flush_every: int | None = None,
    ) -> None:
        """Compute features for the batches of ``tokenized`` that ``writer`` still misses and this process owns (rows
        with no supervised token get zeros; callers mask them out with the valid mask)."""
        get_transform(transform)
        flush_every = flush_every or self.config.flush_every
        if len(writer.pending()) == 0:
            return
        done = writer.done
        counts = np.asarray(tokenized["num_supervised"])
        plan = self.batch_plan(tokenized)
        mine = [b for k, b in enumerate(plan) if k % self.shard.world_size == self.shard.rank and not done[b].all()]
        empty = np.flatnonzero((counts == 0) & ~done) if self.shard.is_main else np.zeros(0, dtype=np.int64)
        if len(empty):
            writer.write(empty, {p.dim: np.zeros((len(empty), p.dim), dtype=np.float32) for p in self.projectors})
        if not mine:
            writer.flush()
            return
        self.load(checkpoint)
        pad_id = self.tokenizer.pad_token_id
        bar = tqdm(
            total=sum(len(b) for b in mine),
            desc=f"{desc} [{checkpoint.name}]",
            unit="row",
            dynamic_ncols=True,
            disable=not self.shard.is_main,
        )
        for n_batch, rows in enumerate(mine):
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
