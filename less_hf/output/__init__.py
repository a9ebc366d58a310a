"""Output: the selected subset as a `datasets.Dataset` with scores."""

from .dataset import subset_with_scores, top_indices

__all__ = ["subset_with_scores", "top_indices"]
