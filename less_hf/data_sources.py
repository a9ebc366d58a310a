"""Load a dataset from what a user types: a local file, a `datasets` folder, or a Hub dataset name."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError, MissingFileError

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _one_split(data, spec: str, split: str | None):
    from datasets import DatasetDict

    if not isinstance(data, DatasetDict):
        return data
    if split is None:
        if len(data) == 1:
            return next(iter(data.values()))
        split = "train"
    if split not in data:
        raise InputError(f"{spec!r} has splits {sorted(data)}, not {split!r}: write {spec}:SPLIT to pick one.")
    return data[split]


def _load(read, spec: str):
    """Run a `datasets` loader; a malformed file becomes one clear error naming it."""
    try:
        return read()
    except Exception as err:  # noqa: BLE001 - datasets raises many types (DatasetGenerationError, ArrowInvalid...)
        cause = err.__cause__ or err
        first = (str(cause).strip().splitlines() or [""])[0][:200]
        raise InputError(
            f"{spec!r} could not be read as a dataset ({type(cause).__name__}: {first}). Check that it is valid "
            "JSON Lines / JSON / Parquet / CSV with one row per record."
        ) from None


def _folder_cache(folder: Path) -> Path:
    """A `datasets` cache folder of its own for a local folder of data files, named after the files' paths, sizes
    and modification times: `datasets` keys such a folder's cache by the folder's name alone, so a folder rewritten
    in place, or another folder of the same name, would load stale rows from the shared cache."""
    from .datastore.keys import cache_dir, key_digest

    files = sorted(p for p in folder.resolve().rglob("*") if p.is_file())
    signature = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return cache_dir() / "datasets" / key_digest(signature)[:16]


def _non_empty(dataset, spec: str):
    if len(dataset) == 0:
        raise InputError(f"{spec!r} holds no rows.")
    return dataset


def load_data(spec: str | os.PathLike):
    """A `datasets.Dataset` from a path or a name.

    Accepts a ``.json``/``.jsonl``/``.parquet``/``.csv`` file, a ``save_to_disk`` folder (a `DatasetDict` folder gives
    its only split or ``train``), a folder of data files (e.g. a ``less-hf export``), or a Hub dataset name (when
    online). ``SPEC:SPLIT`` picks a split (e.g. ``tatsu-lab/alpaca:train``).

    Raises:
        InputError / MissingFileError: naming the problem, when nothing can be loaded from ``spec`` (no such file, an
            empty or malformed file, an empty dataset).
    """
    from datasets import load_dataset, load_from_disk

    spec = str(spec)
    name, split = spec, None
    if not Path(spec).exists() and ":" in spec:
        name, split = spec.rsplit(":", 1)
    path = Path(name)
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _non_empty(_one_split(_load(lambda: load_from_disk(str(path)), spec), spec, split), spec)
        cache = str(_folder_cache(path))
        return _non_empty(_load(lambda: load_dataset(str(path), split=split or "train", cache_dir=cache), spec), spec)
    suffix = path.suffix.lower()
    if path.exists():
        if suffix not in FILE_BUILDERS:
            raise InputError(f"{spec!r} is a {suffix or 'extensionless'} file; use .json/.jsonl/.parquet/.csv.")
        with open(path, "rb") as f:  # only the start: a pool file can be many GB
            if not f.read(1 << 16).strip():
                raise InputError(f"{spec!r} is empty: it holds no rows.")
        return _non_empty(
            _load(lambda: load_dataset(FILE_BUILDERS[suffix], data_files=str(path), split="train"), spec), spec
        )
    if suffix in FILE_BUILDERS or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise MissingFileError(
            f"{spec!r} does not exist; pass a .json/.jsonl/.parquet/.csv file, a `save_to_disk` folder or a "
            "Hub dataset name."
        )
    try:
        return load_dataset(name, split=split or "train")
    except Exception as e:  # noqa: BLE001 - any failure here means "not a Hub dataset we can reach"
        raise InputError(
            f"{spec!r} is not a local file or folder, and loading it as a Hub dataset failed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Pass a .json/.jsonl/.parquet/.csv "
            "file, a `save_to_disk` folder, or a Hub dataset name while online."
        ) from None
