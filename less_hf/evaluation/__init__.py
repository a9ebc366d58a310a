"""Does a selection help? Fine-tune briefly on it, score held-out rows, and say how sure the difference is."""

from .choices import evaluate, gold_loss, has_options
from .finetune import FinetuneConfig, finetune
from .stats import difference_se, distinguishable_from_best, mean_se

__all__ = [
    "FinetuneConfig",
    "difference_se",
    "distinguishable_from_best",
    "evaluate",
    "finetune",
    "gold_loss",
    "has_options",
    "mean_se",
]
