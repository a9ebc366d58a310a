"""Atomic writes: a temp file (or folder), fsync, then one rename, so a reader never sees half a file."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["fsync_dir", "remove_tree", "save_npy_atomic", "write_atomic", "write_json_atomic"]


def write_atomic(path: Path, write: Callable[[IO[Any]], None], mode: str = "wb") -> None:
    """Write ``path`` through a temp file, fsync and a rename, so readers never see half a file.

    ``write`` receives the open temp file. A failed write (a full disk, an exception, Ctrl-C) leaves the previous
    file as it was and no temp file behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON with :func:`write_atomic`."""
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    write_atomic(path, lambda f: f.write(text), mode="w")


def save_npy_atomic(path: Path, array) -> None:
    """``np.save`` with :func:`write_atomic`."""
    import numpy as np

    write_atomic(path, lambda f: np.save(f, array))


def fsync_dir(directory: Path) -> None:
    """Make renames inside ``directory`` durable (best effort: some filesystems refuse to open a folder)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Delete a folder less_hf wrote, by renaming it to a hidden sibling first: a crash mid-delete never leaves a
    half-deleted folder under the original name."""
    path = Path(path)
    if not path.exists():
        return
    trash = path.with_name(f".{path.name}.deleting-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)
