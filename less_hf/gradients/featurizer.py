"""Model + checkpoint adapters + optimizer transform + projection → projected per-example features.

The model is loaded once; each checkpoint's LoRA weights and Adam moments are swapped in. :meth:`features` yields
``(row indices, {dim: (rows, dim) float32})`` batch by batch and never touches a file: the datastore stores what it
yields (:func:`less_hf.datastore.write_features`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .._logging import progress
from ..capture.checkpoints import CheckpointInfo, load_moments
from ..config import GradientConfig
from ..modeling import (
    base_model_of,
    load_peft_model,
    load_tokenizer,
    resolve_device,
    resolve_dtype,
    swap_adapter_weights,
)
from ..projection import Projector
from ..tokenization import TokenizedRows
from .batching import BatchPlan, collate
from .per_example import PerExampleGradients
from .transforms import apply_transform, get_transform

__all__ = ["GradientFeaturizer", "batch_features"]


def batch_features(
    per_example: PerExampleGradients,
    batch: dict[str, torch.Tensor],
    transform: str,
    moments,
    projectors: list[Projector],
) -> dict[int, torch.Tensor]:
    """One collated batch through the build's pipeline: exact per-example gradients, the optimizer transform, each
    projection. Returns ``{dim: (B, dim) float32}`` on the batch's device (the build copies them to the CPU)."""
    return batch_features_multi(per_example, batch, (transform,), moments, projectors)[transform]


def batch_features_multi(
    per_example: PerExampleGradients,
    batch: dict[str, torch.Tensor],
    transforms: tuple[str, ...],
    moments,
    projectors: list[Projector],
) -> dict[str, dict[int, torch.Tensor]]:
    """:func:`batch_features` for several transforms from one gradient pass: ``{transform: {dim: (B, dim)}}``.

    The per-example gradient (the forward and backward pass) is computed once; each transform and projection is
    applied to it, so every transform's features are exactly those :func:`batch_features` gives for it alone.
    """
    with torch.enable_grad():
        grads, _, _ = per_example(batch)
    out = {}
    for transform in sorted(transforms, key=lambda t: t == "sgd"):  # 'sgd' returns the gradient itself: last
        feats = apply_transform(transform, grads, moments)
        out[transform] = {p.dim: p.project(feats) for p in projectors}
        del feats
    del grads
    return out


class GradientFeaturizer:
    """Loads the warmup model once, swaps checkpoints, and turns tokenized rows into projected features.

    Args:
        checkpoints: the warmup checkpoints (see :func:`~less_hf.capture.find_checkpoints`).
        config: gradient settings.
        projectors: one projector per output dim.
        base_model: base model path/name (default: recorded in the checkpoint).
        shard: this process's share of the rows under `accelerate launch` (default: the running job's).
    """

    def __init__(
        self,
        checkpoints: list[CheckpointInfo],
        config: GradientConfig,
        projectors: list[Projector],
        base_model: str | None = None,
        shard=None,
    ) -> None:
        from ..datastore.distributed import current_shard

        self.checkpoints = checkpoints
        self.config = config
        self.projectors = projectors
        self.base_model = base_model or base_model_of(checkpoints[0].path)
        self.shard = shard or current_shard()
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self._tokenizer = None
        self._model = None
        self._per_example: PerExampleGradients | None = None
        self._loaded: str | None = None
        self._moments = None
        self._plan: tuple[TokenizedRows, BatchPlan] | None = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.base_model)
        return self._tokenizer

    def settings(self) -> dict[str, Any]:
        """The settings of this featurizer that change feature bits (part of every feature key)."""
        return {
            "max_length": self.config.max_length,
            "truncation": self.config.truncation,
            "batch_size": self.config.batch_size,
            "model_dtype": str(self.dtype).removeprefix("torch."),
            "device_type": self.device.type,
            "projectors": [p.spec() for p in self.projectors],
        }

    def load(self, checkpoint: CheckpointInfo) -> None:
        """Make ``checkpoint``'s LoRA weights and Adam moments current."""
        if self._loaded == checkpoint.path.name and self._model is not None:
            return
        if self._model is None:
            self._model = load_peft_model(self.base_model, checkpoint.path, self.device, self.dtype)
            self._per_example = PerExampleGradients(self._model)
        else:
            swap_adapter_weights(self._model, checkpoint.path)
        self._moments = load_moments(checkpoint, self._model, self._per_example.shapes)  # type: ignore[union-attr]
        self._loaded = checkpoint.path.name

    @property
    def num_params(self) -> int:
        """D, the number of trainable LoRA parameters (0 before the first :meth:`load`)."""
        return self._per_example.num_params if self._per_example else 0

    def tokenize(self, dataset, desc: str = "Tokenizing") -> TokenizedRows:
        """Token counts of every row of ``dataset`` (one streaming pass; the tokens are made again per batch when
        :meth:`features` needs them, so a pool of any size costs a few bytes per row)."""
        return TokenizedRows(dataset, self.tokenizer, self.config.max_length, self.config.truncation, desc=desc)

    def batch_plan(self, tokenized: TokenizedRows) -> BatchPlan:
        """All rows with a supervised token cut into length-sorted batches: one global plan, the same for 1 or N
        processes and for a first run or a resume, so every row is always computed in the same batch (same padding,
        same kernels, same bits)."""
        if self._plan is None or self._plan[0] is not tokenized:
            rows = np.flatnonzero(tokenized.num_supervised > 0)
            self._plan = (tokenized, BatchPlan(rows, tokenized.lengths[rows], self.config.batch_size))
        return self._plan[1]

    def features(
        self,
        checkpoint: CheckpointInfo,
        tokenized: TokenizedRows,
        done: np.ndarray,
        transform: str,
        desc: str = "Gradients",
    ) -> Iterator[tuple[np.ndarray, dict[int, np.ndarray]]]:
        """Yield ``(rows, {dim: features})`` for the rows of ``tokenized`` not ``done`` that this process owns.

        Rows with no supervised token get zeros (from the main process; callers mask them out with the valid mask).
        """
        for rows, out in self.features_multi(checkpoint, tokenized, done, (transform,), desc):
            yield rows, out[transform]

    def features_multi(
        self,
        checkpoint: CheckpointInfo,
        tokenized: TokenizedRows,
        done: np.ndarray,
        transforms: tuple[str, ...],
        desc: str = "Gradients",
    ) -> Iterator[tuple[np.ndarray, dict[str, dict[int, np.ndarray]]]]:
        """:meth:`features` for several transforms from one gradient pass: ``(rows, {transform: {dim: features}})``.

        Each row's per-example gradient is computed once and every transform is applied to it (the gradient costs
        the forward and backward pass; a transform and a projection are cheap), so the features of each transform
        are exactly those :meth:`features` yields for it alone.
        """
        for transform in transforms:
            get_transform(transform)
        counts = tokenized.num_supervised
        plan = self.batch_plan(tokenized)
        shard = self.shard
        mine = plan.pending(done, shard.rank, shard.world_size)
        empty = np.flatnonzero((counts == 0) & ~done) if shard.rank == 0 else np.zeros(0, dtype=np.int64)
        if len(empty):
            zeros = {p.dim: np.zeros((len(empty), p.dim), dtype=np.float32) for p in self.projectors}
            yield empty, {t: {d: z.copy() for d, z in zeros.items()} for t in transforms}
        if not len(mine):
            return
        self.load(checkpoint)
        pad_id = self.tokenizer.pad_token_id
        bar = progress(
            total=sum(len(plan[k]) for k in mine),
            desc=f"{desc} [{checkpoint.path.name}]",
            unit="row",
            dynamic_ncols=True,
            disable=not shard.is_main,
        )
        try:
            for k in mine:
                rows = plan[int(k)]
                batch = collate(tokenized.rows(rows), pad_id, self.device)
                projected = batch_features_multi(self._per_example, batch, transforms, self._moments, self.projectors)  # type: ignore[arg-type]
                out = {t: {dim: y.cpu().numpy() for dim, y in by_dim.items()} for t, by_dim in projected.items()}
                del projected
                yield rows, out
                bar.update(len(rows))
        finally:
            bar.close()
