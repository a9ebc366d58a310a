"""Names that become paths (targets, subtasks, anything read back from ``selection.json``) are checked here:
one conservative pattern, no separators, no ``.``/``..``, no reserved names, no two names equal ignoring case."""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import UnsafeNameError

__all__ = ["RESERVED_NAMES", "check_name", "check_names"]

_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
RESERVED_NAMES = frozenset(
    {"selection.json", "scores", "report.html", "report.md", "report_files", "hub_export", "data", "readme.md"}
)
_WINDOWS = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)


def check_name(name: object, what: str = "target name") -> str:
    """``name`` if it is safe as one path component of a selection folder, else :class:`UnsafeNameError`."""
    if not isinstance(name, str):
        raise UnsafeNameError(f"{what} {name!r} is a {type(name).__name__}, not a string.")
    if not _PATTERN.match(name) or name.endswith((".part", ".json", ".npy")) or ".." in name:
        raise UnsafeNameError(
            f"{what} {name!r} cannot name a folder: use 1-100 letters, digits, '_', '-' or '.', starting with a "
            "letter or digit (no '/', no spaces, no '..', not ending in .part/.json/.npy), e.g. 'mmlu' or 'bbh_cot'."
        )
    if name.lower() in RESERVED_NAMES or _WINDOWS.match(name):
        raise UnsafeNameError(f"{what} {name!r} is reserved in a selection folder; pick another name.")
    return name


def check_names(names: Iterable[object], what: str = "target name") -> list[str]:
    """:func:`check_name` of each, and no two equal ignoring case (they would share a folder on some disks)."""
    out, seen = [], {}
    for name in names:
        check_name(name, what)
        folded = name.lower()  # type: ignore[union-attr]
        if folded in seen:
            raise UnsafeNameError(f"{what}s {seen[folded]!r} and {name!r} are the same ignoring case; rename one.")
        seen[folded] = name
        out.append(name)  # type: ignore[arg-type]
    return out
