"""less_hf logs and shows progress the Hugging Face way.

The ``less_hf`` logger (parent of every ``less_hf.*`` module logger) follows transformers' verbosity:
``transformers.utils.logging.set_verbosity_info()`` / ``set_verbosity_error()`` and ``TRANSFORMERS_VERBOSITY`` apply
to less_hf as they do to transformers, unless its level is set explicitly (``logging.getLogger("less_hf")
.setLevel(...)``). Its records go to transformers' handler (stderr) and, like transformers', do not propagate to the
root logger (set ``logging.getLogger("less_hf").propagate = True`` to route them through your own logging setup).
Progress bars obey ``transformers.utils.logging.disable_progress_bar()`` (and ``TQDM_DISABLE``).
"""

from __future__ import annotations

import logging

from tqdm.auto import tqdm
from transformers.utils import logging as hf_logging

__all__ = ["progress"]

ROOT = "less_hf"


class _FollowTransformers(logging.Logger):
    """A logger whose level, unless set explicitly, is transformers' current verbosity (read on every check, so
    ``set_verbosity_*`` applies at once: transformers clears every logger's level cache when it changes)."""

    @property  # type: ignore[override]
    def level(self) -> int:
        return self.__dict__.get("_own_level", 0) or hf_logging.get_verbosity()

    @level.setter
    def level(self, value: int) -> None:
        self.__dict__["_own_level"] = value


def _configure() -> None:
    root = logging.getLogger(ROOT)
    if isinstance(root, _FollowTransformers):
        return
    own = root.__dict__.pop("level", 0)
    root.__class__ = _FollowTransformers
    root.level = own
    for handler in hf_logging._get_library_root_logger().handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.propagate = False
    logging.getLogger().manager._clear_cache()


def progress(iterable=None, **kwargs):
    """``tqdm`` that is off when transformers' progress bars are disabled (or the caller disables it)."""
    disable = kwargs.pop("disable", False) or not hf_logging.is_progress_bar_enabled()
    return tqdm(iterable, disable=disable, **kwargs)


_configure()
