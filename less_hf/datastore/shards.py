"""Combine the folders of a build split across machines that share no filesystem.

Each of N jobs runs ``less-hf build --shard K/N`` (or ``--shard auto`` under `accelerate launch`): it computes
exactly the batches rank K computes in a joint N-process build (the same global batch plan, dealt round-robin), into
a folder of its own, and leaves it unfinished with a ``shard.json``. Copied to one machine, ``less-hf merge-shards``
checks the folders belong together (the same content key, ranks 0..N-1 once each, every row computed exactly once),
copies each shard's rows into one datastore and finishes it as the build would: the result is, byte for byte, the
datastore a single process builds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from transformers.utils import logging

from ..errors import InputError, MissingFileError
from .build import SHARD_FILE, finish_datastore
from .distributed import Shard
from .keys import diff_keys
from .lock import WriterLock
from .manifest import MANIFEST_FILE, Manifest
from .packed import scales_file_name
from .reader import ROW_IDS_FILE, Datastore
from .store import PENDING, FeatureWriter, feature_file, read_key

logger = logging.get_logger(__name__)

__all__ = ["merge_shards"]

COPY_ROWS = 1 << 16  # rows copied per block (bounded memory whatever the pool size)


def _read_shard(directory: Path) -> tuple[Manifest, dict, list[str]]:
    record_file = directory / SHARD_FILE
    if not record_file.is_file():
        state = "a finished datastore" if (directory / MANIFEST_FILE).is_file() else "not a datastore folder"
        raise MissingFileError(
            f"{directory} has no {SHARD_FILE}: it is {state}, not a finished shard. Each shard folder comes from "
            "`less-hf build --shard K/N`; re-run that command for a shard that was interrupted (it resumes)."
        )
    return (
        Manifest.load(directory),
        json.loads(record_file.read_text()),
        json.loads((directory / ROW_IDS_FILE).read_text()),
    )


def merge_shards(output_dir: str | os.PathLike, shard_dirs: list[str | os.PathLike]) -> Datastore:
    """Combine the N folders of a split build (``less-hf build --shard K/N``) into one finished datastore.

    Args:
        output_dir: the datastore to create (must not hold a datastore yet).
        shard_dirs: the N shard folders, in any order.

    Returns:
        The merged :class:`Datastore`, equal byte for byte (features, masks, checksums, key) to a single-process
        build of the same inputs.
    """
    output_dir = Path(output_dir)
    shards = sorted(((Path(d), *_read_shard(Path(d))) for d in shard_dirs), key=lambda s: s[2]["rank"])
    n = len(shards)
    ranks = [s[2]["rank"] for s in shards]
    sizes = {s[2]["world_size"] for s in shards}
    if sizes != {n} or ranks != list(range(n)):
        raise InputError(
            f"The shard folders are ranks {ranks} of {sorted(sizes)} shards; merge-shards needs every shard 0..N-1 "
            "of one split build exactly once."
        )
    first_dir, manifest, _, ids = shards[0]
    for directory, other, _, other_ids in shards[1:]:
        differences = diff_keys(manifest.key, other.key)
        if differences or other_ids != ids:
            raise InputError(
                f"{directory} was built from other inputs than {first_dir} ({'; '.join(differences[:3]) or 'row ids'}"
                "): every shard must be built with the same warmup, pool and settings."
            )
    if (output_dir / MANIFEST_FILE).exists():
        raise InputError(f"{output_dir} already holds a datastore: merge into a new folder.")
    output_dir.mkdir(parents=True, exist_ok=True)
    no_loss = np.asarray(shards[0][2]["no_supervised_token"], dtype=np.int64)
    valid = np.ones(manifest.n_rows, dtype=bool)
    valid[no_loss] = False
    nonfinite: set[int] = set()
    with WriterLock(output_dir):
        manifest.status = "building"
        manifest.save(output_dir)
        for checkpoint in manifest.checkpoints:
            parts = [directory / "pool" / f"{checkpoint.name}.part" for directory, *_ in shards]
            key = read_key(parts[0])
            writer = FeatureWriter(
                output_dir / "pool" / checkpoint.name,
                manifest.n_rows,
                manifest.dims,
                manifest.storage_dtype,
                Shard(),
                key=key,
            )
            if writer.complete:
                raise InputError(f"{writer.directory} already exists: merge into a new folder.")
            taken = np.zeros(manifest.n_rows, dtype=bool)
            for rank, part in enumerate(parts):
                _copy_rows(part, rank, writer, taken, key)
            missing = np.flatnonzero(~taken)
            if len(missing):
                raise InputError(
                    f"{len(missing)} rows of {checkpoint.name} were computed by no shard (e.g. row {missing[0]}): a "
                    "shard build was interrupted. Re-run its `less-hf build --shard K/N` (it resumes), then merge."
                )
            nonfinite.update(writer.finalize(expect_finite=valid))
        bad = np.asarray(sorted(nonfinite), dtype=np.int64)
        valid[bad] = False
        finish_datastore(output_dir, manifest, ids, valid, no_loss, bad)
    logger.info("Merged %d shards into %s", n, output_dir)
    return Datastore(output_dir, Manifest.load(output_dir))


def _copy_rows(part: Path, rank: int, writer: FeatureWriter, taken: np.ndarray, key: dict | None) -> None:
    """Copy the rows shard ``rank`` finished in ``part`` into ``writer`` (refusing a row two shards computed)."""
    done_file = part / f"done.rank{rank}.npy"
    if not done_file.is_file() or read_key(part) != key:
        raise InputError(
            f"{part} holds no finished rows of shard {rank} for these inputs: re-run its `less-hf build --shard "
            f"{rank}/N`, then merge."
        )
    mask = np.load(done_file)
    rows = np.flatnonzero(mask != PENDING)
    if taken[rows].any():
        raise InputError(f"{part}: shard {rank} computed rows another shard computed too; the shards do not fit.")
    taken[rows] = True
    for dim in writer.dims:
        target, target_scales = writer.arrays[dim]  # a packed format's per-row scales travel with its bytes
        source = np.load(feature_file(part, dim), mmap_mode="r")
        source_scales = np.load(part / scales_file_name(dim), mmap_mode="r") if target_scales is not None else None
        for lo in range(0, len(rows), COPY_ROWS):
            block = rows[lo : lo + COPY_ROWS]
            target[block] = source[block]
            if target_scales is not None:
                target_scales[block] = source_scales[block]
    writer.state[rows] = mask[rows]
