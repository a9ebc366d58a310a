"""Selection: one interface (`Selector.select`) over every method."""

from .base import Selector
from .less import LESSSelector

__all__ = ["LESSSelector", "Selector"]
