"""less_hf: targeted data selection (LESS) for instruction tuning, as a Hugging Face Trainer plugin.

Public API::

    from less_hf import GradientCaptureCallback, LESSSelector, warmup
"""

from . import _logging  # noqa: F401  (less_hf logs and shows progress the transformers way)
from ._version import __version__
from .capture import GradientCaptureCallback, OptimizerMoments, find_checkpoints  # noqa: E402
from .config import (  # noqa: E402
    GradientConfig,
    ProjectionConfig,
    SelectionConfig,
    TokenizationConfig,
    TSDSConfig,
    WarmupConfig,
)
from .datastore import Datastore, build_datastore  # noqa: E402
from .errors import LessHFError  # noqa: E402
from .evaluation import FinetuneConfig  # noqa: E402
from .evaluation.compare import compare  # noqa: E402
from .output import export, push_to_hub, report  # noqa: E402
from .projection import DenseProjector, SparseProjector, build_projector  # noqa: E402
from .selection import (  # noqa: E402
    SELECTORS,
    BM25Selector,
    DSIRSelector,
    LESSSelector,
    LongestSelector,
    RandomSelector,
    RDSPlusSelector,
    RDSSelector,
    Selector,
    TSDSSelector,
    get_selector,
)
from .tokenization import tokenize_dataset  # noqa: E402
from .warmup import warmup  # noqa: E402

__all__ = [
    "SELECTORS",
    "BM25Selector",
    "DSIRSelector",
    "Datastore",
    "FinetuneConfig",
    "DenseProjector",
    "GradientCaptureCallback",
    "GradientConfig",
    "LESSSelector",
    "LessHFError",
    "LongestSelector",
    "OptimizerMoments",
    "ProjectionConfig",
    "RDSPlusSelector",
    "RDSSelector",
    "RandomSelector",
    "SelectionConfig",
    "Selector",
    "SparseProjector",
    "TSDSConfig",
    "TSDSSelector",
    "TokenizationConfig",
    "WarmupConfig",
    "__version__",
    "build_datastore",
    "build_projector",
    "compare",
    "export",
    "find_checkpoints",
    "get_selector",
    "push_to_hub",
    "report",
    "tokenize_dataset",
    "warmup",
]
