"""Datastore: projected per-example features on disk, keyed by content, built once and reused for any target.

It stores; it does not compute: features come from :class:`less_hf.gradients.GradientFeaturizer`.
"""

from .build import Datastore, build_datastore
from .manifest import Manifest
from .shards import merge_shards
from .store import FeatureWriter, open_features
from .targets import TargetFeatures, build_target_features, load_target_features
from .write import write_features

__all__ = [
    "Datastore",
    "FeatureWriter",
    "Manifest",
    "TargetFeatures",
    "build_datastore",
    "build_target_features",
    "load_target_features",
    "merge_shards",
    "open_features",
    "write_features",
]
