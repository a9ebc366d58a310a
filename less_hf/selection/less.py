"""`LESSSelector`: LESS (Xia et al. 2024) over a warmup's checkpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging

from ..capture.checkpoints import find_checkpoints
from ..config import GradientConfig, ProjectionConfig, SelectionConfig
from ..datastore import Datastore, TargetFeatures, build_datastore, build_target_features
from ..gradients.featurizer import GradientFeaturizer
from ..projection import from_config
from ..scoring import score_datastore
from .base import Selector, as_target_dict

logger = logging.get_logger(__name__)


class LESSSelector(Selector):
    """Select the pool rows whose Adam update most aligns with the target tasks' gradients.

    For each warmup checkpoint it rebuilds every pool row's Adam update from that checkpoint's moments, projects it,
    stores it (the datastore, built once and reused for any target), then scores
    ``Σᵢ η̄ᵢ · mean cos(target gradient, pool update)`` per subtask and takes the max over subtasks.

    Example::

        selector = LESSSelector("warmup_out")                 # folder with checkpoint-N/ from the warmup
        subset = selector.select(pool, {"mmlu": mmlu_dev}, fraction=0.05)["mmlu"]
        SFTTrainer(model, train_dataset=subset, ...)

    Args:
        warmup_dir: the warmup's output dir (``checkpoint-N`` folders, written with GradientCaptureCallback or a
            plain Trainer checkpoint with ``optimizer.pt``).
        datastore_dir: where to keep the datastore. Default: ``<warmup_dir>/less_datastore/<key digest>``, one folder
            per content key (model, checkpoints, pool, settings), so nothing built from other inputs is ever reused.
            A folder given here is used as is, and refused (with the differing fields) if it holds features made from
            other inputs.
        gradient_config, projection_config, selection_config: settings; see :mod:`less_hf.config`.
        base_model: override the base model recorded in the checkpoints (e.g. a local copy).
    """

    def __init__(
        self,
        warmup_dir: str | os.PathLike,
        datastore_dir: str | os.PathLike | None = None,
        gradient_config: GradientConfig | None = None,
        projection_config: ProjectionConfig | None = None,
        selection_config: SelectionConfig | None = None,
        base_model: str | None = None,
    ) -> None:
        self.warmup_dir = Path(warmup_dir)
        self.checkpoints = find_checkpoints(self.warmup_dir)
        self.datastore_dir = Path(datastore_dir) if datastore_dir else None
        self.gradient_config = gradient_config or GradientConfig()
        self.projection_config = projection_config or ProjectionConfig()
        self.selection_config = selection_config or SelectionConfig()
        self.score_column = self.selection_config.score_column
        self.base_model = base_model
        self._featurizer: GradientFeaturizer | None = None
        self.datastore: Datastore | None = None

    @property
    def featurizer(self) -> GradientFeaturizer:
        if self._featurizer is None:
            self._featurizer = GradientFeaturizer(
                self.checkpoints, self.gradient_config, from_config(self.projection_config), self.base_model
            )
        return self._featurizer

    def build_datastore(self, pool) -> Datastore:
        """Build, resume or reuse the pool's gradient datastore."""
        self.datastore = build_datastore(
            self.warmup_dir,
            pool,
            self.datastore_dir,
            self.gradient_config,
            self.projection_config,
            self.base_model,
            featurizer=self.featurizer,
        )
        return self.datastore

    def target_features(self, pool, targets: dict[str, Any]) -> tuple[Datastore, list[TargetFeatures]]:
        """The pool's datastore and each target's features in it (built or reused)."""
        datastore = self.build_datastore(pool)
        return datastore, [build_target_features(datastore, name, ds, self.featurizer) for name, ds in targets.items()]

    def score(self, pool, targets: Any) -> dict[str, np.ndarray]:
        """LESS scores of every pool row for each target (``-inf`` for rows with no supervised token)."""
        named, _ = as_target_dict(targets)
        datastore, features = self.target_features(pool, named)
        cfg = self.selection_config
        return score_datastore(datastore, features, cfg.dim, cfg.aggregate, cfg.block_rows)

    def settings(self) -> dict[str, Any]:
        """The warmup's model, checkpoints with η̄, the datastore's folder and key, and every config."""
        from ..output.provenance import less_settings

        return less_settings(self)

    def select(
        self,
        pool,
        targets: Any,
        fraction: float | None = None,
        n: int | None = None,
        mode: str = "per_task",
        seed: int | None = None,
        allow_fewer: bool = False,
    ):
        if fraction is None and n is None:
            fraction, n = self.selection_config.fraction, self.selection_config.n
        return super().select(pool, targets, fraction=fraction, n=n, mode=mode, seed=seed, allow_fewer=allow_fewer)
