"""Output: the selected subset as a `datasets.Dataset` with scores."""

from .dataset import subset_with_scores, top_indices
from .publish import export, push_to_hub, report

__all__ = ["export", "push_to_hub", "report", "subset_with_scores", "top_indices"]
