"""Gradients: completion-only per-example losses, batched exact per-example gradients, optimizer transforms."""

from .batching import collate, length_sorted_batches
from .losses import per_example_loss
from .per_example import PerExampleGradients, trainable_linear_modules
from .transforms import TRANSFORMS, apply_transform, get_transform

__all__ = [
    "TRANSFORMS",
    "PerExampleGradients",
    "apply_transform",
    "collate",
    "get_transform",
    "length_sorted_batches",
    "per_example_loss",
    "trainable_linear_modules",
]
