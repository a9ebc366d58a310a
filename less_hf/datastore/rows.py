"""The pool's row ids, read a batch at a time: a pool of millions of rows never holds all its ids as Python strings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..tokenization import ids_at, iter_row_ids
from .atomic import write_atomic

__all__ = ["check_unique_ids", "write_row_ids"]


def _id_hashes(ids: list[str]) -> np.ndarray:
    import pandas as pd

    return pd.util.hash_array(np.asarray(ids, dtype=object))


def check_unique_ids(pool, what: str = "pool") -> None:
    """Rows are reported by id, so ids must be unique. Checked a batch at a time on 64-bit hashes of the ids (8
    bytes per row, sorted in place), then, for the few hashes seen twice, on the ids themselves, so the answer is
    exact."""
    if "id" not in pool.column_names:
        return  # row numbers
    hashes = np.empty(len(pool), dtype=np.uint64)
    lo = 0
    for ids in iter_row_ids(pool):
        hashes[lo : lo + len(ids)] = _id_hashes(ids)
        lo += len(ids)
    hashes.sort()
    repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    del hashes
    if not len(repeated):
        return
    candidates, lo = [], 0  # the rows whose hash repeats: a second pass, one batch at a time
    for ids in iter_row_ids(pool):
        candidates.append(lo + np.flatnonzero(np.isin(_id_hashes(ids), repeated)))
        lo += len(ids)
    rows = np.concatenate(candidates)
    seen: dict[str, int] = {}
    dups = []
    for i, row_id in zip(rows.tolist(), ids_at(pool, rows)):
        if row_id in seen and len(dups) < 5:
            dups.append(f"{row_id!r} (rows {seen[row_id]} and {i})")
        seen.setdefault(row_id, i)
    if dups:
        raise InputError(
            f"The {what}'s 'id' column has duplicates, e.g. {', '.join(dups)}; rows are reported by id, so ids must "
            "be unique. Deduplicate the rows, or drop/rename the 'id' column to use row numbers."
        )


def write_row_ids(path: Path, pool) -> None:
    """``row_ids.json`` (the JSON list of the pool's row ids, as ``write_json_atomic`` writes it), streamed a batch of
    ids at a time, atomically."""

    def write(f) -> None:
        first = True
        f.write("[")
        for ids in iter_row_ids(pool):
            f.write(("\n  " if first else ",\n  ") + ",\n  ".join(json.dumps(i) for i in ids))
            first = False
        f.write("\n]" if not first else "]")

    write_atomic(path, write, mode="w")
