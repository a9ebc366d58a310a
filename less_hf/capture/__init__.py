"""Capture: what the warmup must keep for LESS (Adam moments by name, learning rates, model metadata)."""

from .callback import GradientCaptureCallback
from .checkpoints import CheckpointInfo, checkpoint_weights, find_checkpoints
from .optimizer_state import OptimizerMoments, moments_from_hf_checkpoint, moments_from_optimizer

__all__ = [
    "CheckpointInfo",
    "GradientCaptureCallback",
    "OptimizerMoments",
    "checkpoint_weights",
    "find_checkpoints",
    "moments_from_hf_checkpoint",
    "moments_from_optimizer",
]
