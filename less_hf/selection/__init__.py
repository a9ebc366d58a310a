"""Selection: one interface (`Selector.select`) over every method, and a name → class registry."""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from .base import Selector
from .baselines import BM25Selector, DSIRSelector, RandomSelector, RDSSelector
from .length import LongestSelector
from .less import LESSSelector
from .rds_plus import RDSPlusSelector
from .tsds import TSDSSelector

SELECTORS: dict[str, type[Selector]] = {
    "less": LESSSelector,
    "tsds": TSDSSelector,
    "random": RandomSelector,
    "bm25": BM25Selector,
    "dsir": DSIRSelector,
    "rds": RDSSelector,
    "rds_plus": RDSPlusSelector,
    "longest": LongestSelector,
}
"""Every selection method by name (what the CLI's ``--method`` accepts)."""


def get_selector(name: str, *args: Any, **kwargs: Any) -> Selector:
    """Build a selector by name, e.g. ``get_selector("tsds", "warmup_out")`` or ``get_selector("bm25")``."""
    key = name.lower()
    if key not in SELECTORS:
        raise InputError(f"Unknown selection method {name!r}; choose one of {sorted(SELECTORS)}.")
    return SELECTORS[key](*args, **kwargs)


__all__ = [
    "SELECTORS",
    "BM25Selector",
    "DSIRSelector",
    "LESSSelector",
    "LongestSelector",
    "RDSPlusSelector",
    "RDSSelector",
    "RandomSelector",
    "Selector",
    "TSDSSelector",
    "get_selector",
]
