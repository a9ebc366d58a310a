"""Selection: one interface (`Selector.select`) over every method, and a name → class registry."""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from .base import Selector
from .baselines import BM25Selector, DSIRSelector, RandomSelector, RDSSelector
from .less import LESSSelector
from .tsds import TSDSSelector

SELECTORS: dict[str, type[Selector]] = {
    "less": LESSSelector,
    "tsds": TSDSSelector,
    "random": RandomSelector,
    "bm25": BM25Selector,
    "dsir": DSIRSelector,
    "rds": RDSSelector,
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
    "RDSSelector",
    "RandomSelector",
    "Selector",
    "TSDSSelector",
    "get_selector",
]
