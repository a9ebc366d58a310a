"""Projection: seeded random maps to d dims, identical on every device, never a full D×d matrix."""

from .base import PROJECTORS, Projector, build_projector, from_config
from .dense import DenseProjector
from .sparse import SparseProjector

__all__ = ["PROJECTORS", "DenseProjector", "Projector", "SparseProjector", "build_projector", "from_config"]
