"""Build the gradient datastore: per checkpoint, per-example features of every pool row, projected, on disk."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging

from ..capture.checkpoints import CheckpointInfo, checkpoint_weights, find_checkpoints
from ..config import GradientConfig, ProjectionConfig
from ..modeling import base_model_of
from ..projection import Projector, build_projector
from .distributed import current_shard
from .featurize import GradientFeaturizer, dataset_fingerprint, row_ids
from .lock import WriterLock
from .manifest import MANIFEST_FILE, CheckpointEntry, Manifest, save_npy_atomic, write_json_atomic
from .reader import ROW_IDS_FILE, VALID_FILE, Datastore
from .store import FeatureWriter, check_storage_dtype, file_checksum, recorded_checksums

logger = logging.get_logger(__name__)

__all__ = ["Datastore", "GradientFeaturizer", "build_datastore", "dataset_fingerprint", "make_projectors", "row_ids"]


def make_projectors(config: ProjectionConfig) -> list[Projector]:
    kwargs = {"sparsity": config.sparsity} if config.kind == "sparse" else {}
    return [build_projector(config.kind, dim, config.seed, **kwargs) for dim in sorted(set(config.dims))]


def check_unique_ids(ids: list[str], what: str = "pool") -> None:
    """Rows are reported by id, so ids must be unique."""
    if len(set(ids)) == len(ids):
        return
    seen: dict[str, int] = {}
    dups = []
    for i, row_id in enumerate(ids):
        if row_id in seen and len(dups) < 5:
            dups.append(f"{row_id!r} (rows {seen[row_id]} and {i})")
        seen.setdefault(row_id, i)
    raise ValueError(
        f"The {what}'s 'id' column has duplicates, e.g. {', '.join(dups)}; rows are reported by id, so ids must be "
        "unique. Deduplicate the rows, or drop/rename the 'id' column to use row numbers."
    )


def _check_disk_space(output_dir: Path, manifest: Manifest, dtype: str, shard) -> None:
    """Fail before any work, on every rank, when the feature files still to create do not fit on the disk."""
    row_bytes = sum(manifest.dims) * np.dtype(dtype).itemsize
    needed = 0
    for c in manifest.checkpoints:
        if (output_dir / "pool" / c.name).is_dir():
            continue
        part = output_dir / "pool" / f"{c.name}.part"
        existing = sum(p.stat().st_size for p in part.glob("d*.npy")) if part.is_dir() else 0
        needed += max(0, manifest.n_rows * row_bytes - existing)
    free = shutil.disk_usage(output_dir).free
    message = ""
    if needed > free:
        message = (
            f"The datastore needs {needed / 1e9:.2f} GB more at {output_dir} but only {free / 1e9:.2f} GB are free. "
            "Free some space, pick another datastore dir, or store fewer bytes (storage_dtype='int8', "
            "smaller dims). Finished parts are kept: run the same command again."
        )
    message = shard.broadcast_from_main(message) if shard.world_size > 1 else message
    if message:
        raise OSError(errno.ENOSPC, message)


def _remove_stale_temp_files(output_dir: Path) -> None:
    """Temp files of a killed writer (we hold the lock, so no live writer owns them)."""
    for folder in [
        output_dir,
        *output_dir.glob("pool/*"),
        *output_dir.glob("targets/*"),
        *output_dir.glob("targets/*/*"),
    ]:
        for path in folder.glob(".*.tmp*"):
            path.unlink(missing_ok=True)


def _report_invalid(ids: list[str], rows: np.ndarray, limit: int = 20) -> dict[str, Any]:
    return {"count": int(len(rows)), "ids": [ids[i] for i in rows[:limit]]}


def build_datastore(
    warmup_dir: str | os.PathLike,
    pool,
    output_dir: str | os.PathLike,
    gradient_config: GradientConfig | None = None,
    projection_config: ProjectionConfig | None = None,
    base_model: str | None = None,
    featurizer: GradientFeaturizer | None = None,
) -> Datastore:
    """Build (or resume, or reuse) the pool's gradient datastore.

    The build holds an exclusive lock on ``output_dir`` (a second writer fails at once; readers need no lock), writes
    every file atomically and records finished rows as it goes: a build killed at any moment resumes from its last
    flush and ends with the same bytes as an uninterrupted one.

    Args:
        warmup_dir: the warmup's output dir holding ``checkpoint-N`` folders.
        pool: the candidate rows (`datasets.Dataset` in a TRL format).
        output_dir: where the datastore lives. An existing complete datastore with the same build key is reused; a
            partial one is resumed (as is one whose checkpoint folder was deleted to be rebuilt); a different one is
            refused.
        gradient_config, projection_config: settings (defaults: the paper's Adam update, sparse JL to 8192 dims).
        base_model: override the base model recorded in the checkpoints.
        featurizer: reuse an already loaded model (the selector passes its own).

    Returns:
        The :class:`Datastore`.
    """
    gradient_config = gradient_config or GradientConfig()
    projection_config = projection_config or ProjectionConfig()
    check_storage_dtype(projection_config.storage_dtype)
    output_dir = Path(output_dir)
    if len(pool) == 0:
        raise ValueError("The pool is empty: nothing to build a datastore for.")
    ids = row_ids(pool)
    check_unique_ids(ids)
    checkpoints = find_checkpoints(warmup_dir)
    weights = checkpoint_weights(checkpoints)
    projectors = featurizer.projectors if featurizer else make_projectors(projection_config)
    if gradient_config.optimizer_transform == "sgd":
        logger.warning("Pool features use the plain gradient (optimizer_transform='sgd'), not LESS's Adam update.")
    manifest = Manifest(
        base_model=base_model or base_model_of(checkpoints[0].path),
        checkpoints=[
            CheckpointEntry(c.name, str(c.path.resolve()), c.step, float(w), c.mean_lr)
            for c, w in zip(checkpoints, weights)
        ],
        transform=gradient_config.optimizer_transform,
        projectors=[p.spec() for p in projectors],
        storage_dtype=projection_config.storage_dtype,
        max_length=gradient_config.max_length,
        truncation=gradient_config.truncation,
        n_rows=len(pool),
        dataset_fingerprint=dataset_fingerprint(pool),
    )
    from .. import __version__

    manifest.less_hf_version = __version__
    reused = _reusable(output_dir, manifest)
    if reused is not None:
        return reused
    shard = featurizer.shard if featurizer else current_shard()
    with WriterLock(output_dir, shard):  # also refuses an unwritable output_dir, on every rank
        reused = _reusable(output_dir, manifest)  # another job may have finished it while we waited for nothing
        if reused is not None:
            return reused
        if (output_dir / MANIFEST_FILE).exists():
            manifest.created = Manifest.load(output_dir).created
            logger.info("Resuming datastore build at %s", output_dir)
        return _build(
            output_dir,
            manifest,
            checkpoints,
            pool,
            ids,
            gradient_config,
            projection_config,
            base_model,
            featurizer,
            projectors,
            shard,
        )


def _reusable(output_dir: Path, manifest: Manifest) -> Datastore | None:
    """The existing complete datastore when it can be reused as is; None when it must be built or resumed; a clear
    error when it was built differently."""
    if not (output_dir / MANIFEST_FILE).exists():
        return None
    existing = Manifest.load(output_dir)
    if existing.build_key() != manifest.build_key():
        diff = [k for k, v in manifest.build_key().items() if existing.build_key()[k] != v]
        raise ValueError(
            f"{output_dir} already holds a datastore built differently ({', '.join(diff)} differ). Use another "
            "output dir, or delete it to rebuild."
        )
    if existing.status != "complete":
        return None
    store = Datastore(output_dir, existing)
    missing = store.missing_parts()
    if missing:
        logger.warning("Datastore %s: %s deleted; rebuilding just that.", output_dir, ", ".join(missing))
        return None
    store.check_sizes()
    logger.info("Reusing complete datastore at %s", output_dir)
    return store


def _build(
    output_dir: Path,
    manifest: Manifest,
    checkpoints: list[CheckpointInfo],
    pool,
    ids: list[str],
    gradient_config: GradientConfig,
    projection_config: ProjectionConfig,
    base_model: str | None,
    featurizer: GradientFeaturizer | None,
    projectors: list[Projector],
    shard,
) -> Datastore:
    featurizer = featurizer or GradientFeaturizer(checkpoints, gradient_config, projectors, base_model)
    featurizer.load(checkpoints[0])
    too_big = [d for d in manifest.dims if d > featurizer.num_params]
    if too_big:
        raise ValueError(
            f"Projection dims {too_big} exceed the gradient's dimension D={featurizer.num_params} (the LoRA "
            "parameters): a projection to more dims than D only adds noise. Use ProjectionConfig(dims=[...]) "
            f"<= {featurizer.num_params}, or a larger LoRA rank."
        )
    manifest.num_params = featurizer.num_params
    if shard.is_main:
        _remove_stale_temp_files(output_dir)
    _check_disk_space(output_dir, manifest, projection_config.storage_dtype, shard)
    if shard.is_main:
        manifest.status = "building"
        manifest.save(output_dir)
        write_json_atomic(output_dir / ROW_IDS_FILE, ids)
    tokenized = featurizer.tokenize(pool, desc="Tokenizing pool")
    counts = np.asarray(tokenized["num_supervised"])
    valid = counts > 0
    if not valid.any():
        raise ValueError(
            f"No pool row keeps a supervised token within max_length={gradient_config.max_length} (every completion "
            "is empty or truncated away): raise max_length or check the dataset's completions."
        )
    no_loss = np.flatnonzero(~valid)
    if len(no_loss) and shard.is_main:
        logger.warning(
            "%d pool rows have no supervised token after truncation to %d tokens (e.g. %s); they will "
            "never be selected.",
            len(no_loss),
            gradient_config.max_length,
            [ids[i] for i in no_loss[:5]],
        )
    nonfinite: set[int] = set()
    for checkpoint in checkpoints:
        writer = FeatureWriter(
            output_dir / "pool" / checkpoint.name, len(pool), manifest.dims, projection_config.storage_dtype, shard
        )
        featurizer.featurize(checkpoint, tokenized, writer, gradient_config.optimizer_transform, desc="Pool")
        nonfinite.update(writer.finalize())
    bad = np.asarray(sorted(nonfinite), dtype=np.int64)
    valid[bad] = False
    if len(bad) and shard.is_main:
        logger.warning(
            "%d pool rows have non-finite (NaN/inf) gradient features at some checkpoint (e.g. %s): an overflow in "
            "the model or its optimizer state. They are stored as zeros and never selected; the manifest lists them.",
            len(bad),
            [ids[i] for i in bad[:5]],
        )
    manifest.invalid_rows = {
        "no_supervised_token": _report_invalid(ids, no_loss),
        "nonfinite_features": _report_invalid(ids, bad),
    }
    if shard.is_main:
        save_npy_atomic(output_dir / VALID_FILE, valid)
        files = {name: file_checksum(output_dir / name) for name in (VALID_FILE, ROW_IDS_FILE)}
        for checkpoint in checkpoints:
            folder = Path("pool") / checkpoint.name
            for name, record in recorded_checksums(output_dir / folder).items():
                if name.startswith("d"):
                    files[str(folder / name)] = record
        manifest.files = files
        manifest.status = "complete"
        manifest.save(output_dir)
    shard.barrier()
    return Datastore(output_dir, Manifest.load(output_dir))
