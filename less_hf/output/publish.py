"""The Python side of `less-hf report / export / push`: the same folders, from a selection saved with
``selector.save(dir)`` or ``less-hf select``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["export", "push_to_hub", "report"]


def report(selection_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` for a selection folder (default: into it).

    Returns:
        ``{"html": path, "markdown": path}``.
    """
    from .report import write_report

    return write_report(selection_dir, output_dir)


def export(selection_dir: str | os.PathLike, export_dir: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Write a Hub-ready folder: ``data/<target>-00000-of-00001.parquet`` per target and a ``README.md`` card; load a
    target back with ``datasets.load_dataset("parquet", data_files=f"{export_dir}/data/{target}-*.parquet")``
    (``load_dataset(export_dir, name=target)`` works too, but `datasets` caches a local folder by its name, so a
    folder rewritten in place can load stale rows; pass ``cache_dir=`` a fresh folder then)."""
    from .hub import export_selection

    return export_selection(selection_dir, export_dir, repo_id)


def push_to_hub(
    selection_dir: str | os.PathLike,
    repo_id: str,
    private: bool = True,
    export_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
) -> str:
    """Export (to ``export_dir``, default ``<selection_dir>/hub_export``) and upload to a Hub dataset repo; returns
    the repo URL. The token comes from ``HF_TOKEN`` or ``hf auth login``."""
    from .hub import push_selection

    export_dir = export_dir or Path(selection_dir) / "hub_export"
    return push_selection(selection_dir, repo_id, export_dir, private, endpoint)
