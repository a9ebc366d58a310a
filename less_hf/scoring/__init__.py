"""Scoring: blockwise cosines between pool features and target directions, subtask mean then max."""

from .aggregate import AGGREGATES, normalize_rows, subtask_directions
from .similarity import score_datastore
from .weighted import weighted_features

__all__ = ["AGGREGATES", "normalize_rows", "score_datastore", "subtask_directions", "weighted_features"]
