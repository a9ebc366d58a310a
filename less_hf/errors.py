"""One error hierarchy for every failure a user can fix.

Each error's message names the problem, where it is (file, row, field) and how to fix it. The CLI prints
``error: <message>`` and exits with status 2 for any :class:`LessHFError`; anything else is a bug and keeps its
traceback. Every class also derives from the builtin it refines (``ValueError``, ``FileNotFoundError``...), so code
that caught those before keeps working.
"""

from __future__ import annotations

import errno

__all__ = [
    "BudgetError",
    "ConfigError",
    "CorruptFileError",
    "DatastoreLockedError",
    "DatastoreMismatchError",
    "InputError",
    "LessHFError",
    "MissingFileError",
    "NoSpaceError",
    "NonFiniteFeaturesError",
    "OptimizerStateError",
    "SelectionFolderError",
    "UnsafeNameError",
]


class LessHFError(Exception):
    """A failure caused by the user's input, files or settings (not a bug in less_hf)."""


class InputError(LessHFError, ValueError):
    """A dataset, argument or file content that cannot be used as given."""


class ConfigError(InputError):
    """A config field (dataclass, flag, or YAML/JSON key) with a wrong type or value."""


class UnsafeNameError(InputError):
    """A name that would become a path (a target, a subtask) is not a safe single path component."""


class BudgetError(InputError):
    """The requested number of rows cannot be selected (more than the selectable rows, or none)."""


class OptimizerStateError(InputError):
    """A checkpoint's optimizer state is not usable Adam state (another optimizer, AMSGrad, NaN/inf, v < 0...)."""


class MissingFileError(LessHFError, FileNotFoundError):
    """A file or folder the command needs is not there."""


class CorruptFileError(LessHFError, ValueError):
    """A file less_hf wrote does not match the size, checksum or format recorded when it was written."""


class NonFiniteFeaturesError(InputError):
    """Every row's features came out NaN/inf at a checkpoint (nothing was kept for it)."""


class DatastoreMismatchError(LessHFError, ValueError):
    """Existing features were made from other inputs or settings than the ones given now; never reused."""


class SelectionFolderError(LessHFError, ValueError):
    """A selection folder is incomplete, inconsistent, or the output folder holds files less_hf did not write."""


class DatastoreLockedError(LessHFError, RuntimeError):
    """Another process is writing this datastore."""


class NoSpaceError(LessHFError, OSError):
    """The disk is too small for what must be written (finished parts are kept)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.args[1])
