"""less_hf: targeted data selection (LESS) for instruction tuning, as a Hugging Face Trainer plugin.

Public API::

    from less_hf import GradientCaptureCallback, LESSSelector, warmup
"""

__version__ = "0.1.0"

from .capture import GradientCaptureCallback, OptimizerMoments, find_checkpoints  # noqa: E402
from .config import (  # noqa: E402
    GradientConfig,
    ProjectionConfig,
    SelectionConfig,
    TokenizationConfig,
    WarmupConfig,
)
from .datastore import Datastore, build_datastore  # noqa: E402
from .projection import DenseProjector, SparseProjector, build_projector  # noqa: E402
from .selection import LESSSelector, Selector  # noqa: E402
from .tokenization import tokenize_dataset  # noqa: E402
from .warmup import warmup  # noqa: E402

__all__ = [
    "Datastore",
    "DenseProjector",
    "GradientCaptureCallback",
    "GradientConfig",
    "LESSSelector",
    "OptimizerMoments",
    "ProjectionConfig",
    "SelectionConfig",
    "Selector",
    "SparseProjector",
    "TokenizationConfig",
    "WarmupConfig",
    "__version__",
    "build_datastore",
    "build_projector",
    "find_checkpoints",
    "tokenize_dataset",
    "warmup",
]
