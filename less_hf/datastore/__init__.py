"""Datastore: projected per-example features on disk, with a manifest, built once and reused for any target."""

from .build import Datastore, GradientFeaturizer, build_datastore
from .manifest import Manifest
from .store import FeatureWriter, open_features
from .targets import TargetFeatures, build_target_features, load_target_features

__all__ = [
    "Datastore",
    "FeatureWriter",
    "GradientFeaturizer",
    "Manifest",
    "TargetFeatures",
    "build_datastore",
    "build_target_features",
    "load_target_features",
    "open_features",
]
