"""Build the gradient datastore: per checkpoint, per-example features of every pool row, projected, on disk.

The build is keyed by content (:mod:`.keys`): the base model's files, each checkpoint's adapter and optimizer files,
the pool's rows, and every setting that changes a feature's bits. Existing features are reused only under an equal
key; anything else is refused with the differing fields, or (in the default location) built beside.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from transformers.utils import logging

from .._version import __version__
from ..capture.checkpoints import CheckpointInfo, check_checkpoint, checkpoint_weights, find_checkpoints
from ..config import GradientConfig, ProjectionConfig
from ..errors import CorruptFileError, DatastoreMismatchError, InputError, NoSpaceError
from ..gradients.featurizer import GradientFeaturizer
from ..projection import from_config
from ..tokenization import check_map_style, feature_columns, ids_at
from .atomic import save_npy_atomic, write_json_atomic
from .keys import (
    FEATURE_FORMAT,
    checkpoint_identity,
    dataset_digest,
    diff_keys,
    fix_hint,
    key_digest,
    model_identity,
    strip_sources,
)
from .lock import WriterLock
from .manifest import MANIFEST_FILE, CheckpointEntry, Manifest
from .reader import ROW_IDS_FILE, VALID_FILE, Datastore
from .rows import check_unique_ids, write_row_ids
from .store import FeatureWriter, check_storage_dtype, file_checksum, read_key, recorded_checksums, row_bytes
from .write import write_features

logger = logging.get_logger(__name__)

__all__ = ["DEFAULT_DATASTORE_FOLDER", "Datastore", "build_datastore", "datastore_key", "resolve_datastore_dir"]

DEFAULT_DATASTORE_FOLDER = "less_datastore"
SHARD_FILE = "shard.json"  # in the folder of one shard of a split build (LESS_HF_SHARD / --shard)


# ------------------------------------------------------------------------------------------------------------ keys


def datastore_key(
    featurizer: GradientFeaturizer, pool, transform: str, storage_dtype: str, checkpoints: list[CheckpointInfo]
) -> dict[str, Any]:
    """Everything that changes the pool's features: the base model's files, the featurizer's settings (max_length,
    truncation, batch size, model dtype, device kind, projectors), the transform, the storage dtype, the pool's
    content, and each checkpoint's files and learning rate."""
    columns = feature_columns(pool)
    return {
        "feature_format": FEATURE_FORMAT,
        "base_model": model_identity(featurizer.base_model),
        **featurizer.settings(),
        "transform": transform,
        "storage_dtype": storage_dtype,
        "pool": {"rows": len(pool), "columns": columns, "content": dataset_digest(pool, columns)},
        "checkpoints": [
            {"name": c.name, "step": c.step, "mean_lr": c.mean_lr, "files": checkpoint_identity(c.path, c.captured)}
            for c in checkpoints
        ],
    }


def folder_key(key: dict[str, Any], name: str) -> dict[str, Any]:
    """The key of one checkpoint's feature folder: the datastore's key with only that checkpoint (its learning rate
    weights the score, not the features, so it is left out)."""
    entry = next(c for c in key["checkpoints"] if c["name"] == name)
    common = {k: v for k, v in key.items() if k != "checkpoints"}
    return {**common, "checkpoint": {k: entry[k] for k in ("name", "step", "files")}}


def _settings_part(key: dict[str, Any]) -> dict[str, Any]:
    return strip_sources({k: v for k, v in key.items() if k != "checkpoints"})


def resolve_datastore_dir(warmup_dir: str | os.PathLike, key: dict[str, Any]) -> Path:
    """The default datastore location: ``<warmup_dir>/less_datastore/<key digest>``, one folder per content key, so
    a re-run warmup, another pool or other settings never meet features made from something else."""
    return Path(warmup_dir) / DEFAULT_DATASTORE_FOLDER / key_digest(strip_sources(key))[:16]


def _mismatch(directory: Path, what: str, differences: list[str]) -> DatastoreMismatchError:
    shown = "; ".join(differences[:8]) + (f"; ... ({len(differences)} in all)" if len(differences) > 8 else "")
    hint = fix_hint(differences)
    return DatastoreMismatchError(
        f"{directory} {what} ({shown}); they are never reused for other inputs. "
        + (f"Set back {hint}, or " if hint else "Either ")
        + "use another datastore folder (--datastore_dir in the CLI, datastore_dir= in Python), or delete "
        f"{directory} to rebuild it."
    )


def _check_existing(directory: Path, key: dict[str, Any]) -> Manifest | None:
    """Refuse a folder holding features made from other inputs; return its manifest when it is readable."""
    manifest = None
    if (directory / MANIFEST_FILE).exists():
        try:
            manifest = Manifest.load(directory)
        except CorruptFileError as err:
            logger.warning("%s; rebuilding it from the feature folders' own keys.", err)
        if manifest is not None:
            differences = diff_keys(_settings_part(manifest.key), _settings_part(key))
            if differences:
                raise _mismatch(directory, "holds a datastore built from other inputs or settings", differences)
    expected = {c["name"]: folder_key(key, c["name"]) for c in key["checkpoints"]}
    pool_dir = directory / "pool"
    for folder in sorted(pool_dir.iterdir()) if pool_dir.is_dir() else []:
        if not folder.is_dir() or folder.name.endswith(".part") or folder.name not in expected:
            continue
        found = read_key(folder)
        if found is None:
            raise _mismatch(directory, f"has a feature folder {folder.name} that carries no key", ["key: (none)"])
        differences = diff_keys(strip_sources(found), strip_sources(expected[folder.name]))
        if differences:
            raise _mismatch(directory, f"has features of {folder.name} made from other inputs", differences)
    return manifest


def _reusable(directory: Path, key: dict[str, Any]) -> Datastore | None:
    """The existing complete datastore when it was built under ``key`` and is whole; None when it must be built or
    resumed; :class:`DatastoreMismatchError` when it holds features made from anything else."""
    manifest = _check_existing(directory, key)
    if manifest is None or manifest.status != "complete" or strip_sources(manifest.key) != strip_sources(key):
        return None
    store = Datastore(directory, manifest)
    missing = store.missing_parts()
    if missing:
        logger.warning("Datastore %s: %s deleted; rebuilding just that.", directory, ", ".join(missing))
        return None
    store.check_sizes()
    logger.info("Reusing complete datastore at %s", directory)
    return store


def _note_siblings(directory: Path, key: dict[str, Any]) -> None:
    """In the default location, say which other datastores exist and how they differ (a resume with other settings
    builds a new one; the user may have meant to resume the old one)."""
    parent = directory.parent
    others = []
    for manifest_file in parent.glob(f"*/{MANIFEST_FILE}"):
        if manifest_file.parent == directory:
            continue
        try:
            other = Manifest.load(manifest_file.parent)
        except (CorruptFileError, OSError):
            continue
        differences = diff_keys(strip_sources(other.key), strip_sources(key))
        others.append((manifest_file.stat().st_mtime, manifest_file.parent, other.status, differences))
    if not others:
        return
    _, path, status, differences = max(others, key=lambda o: o[0])
    logger.warning(
        "Building a new datastore at %s. The most recent other one, %s (%s), was made from other inputs: %s. To "
        "resume or reuse it, set those back (%s). Delete the ones you no longer need to free disk space.",
        directory,
        path,
        status,
        "; ".join(differences[:6]),
        fix_hint(differences) or "same inputs",
    )


# ----------------------------------------------------------------------------------------------------------- build


def build_datastore(
    warmup_dir: str | os.PathLike,
    pool,
    output_dir: str | os.PathLike | None = None,
    gradient_config: GradientConfig | None = None,
    projection_config: ProjectionConfig | None = None,
    base_model: str | None = None,
    featurizer: GradientFeaturizer | None = None,
) -> Datastore | None:
    """Build (or resume, or reuse) the pool's gradient datastore.

    Under a separate shard (``LESS_HF_SHARD=K/N`` / ``less-hf build --shard``, for ranks that share no filesystem)
    only this shard's rows are computed into ``output_dir`` and None is returned:
    :func:`~less_hf.datastore.shards.merge_shards` combines the N folders.

    The build holds an exclusive lock on its folder (a second writer fails at once; readers need no lock), writes
    every file atomically and records finished rows as it goes: a build killed at any moment resumes from its last
    flush and ends with the same bytes as an uninterrupted one.

    Args:
        warmup_dir: the warmup's output dir holding ``checkpoint-N`` folders.
        pool: the candidate rows (`datasets.Dataset` in a TRL format), in memory or memory-mapped (``load_from_disk``,
            ``load_dataset``, ``Dataset.from_generator``): the build reads it a batch at a time and keeps a few bytes
            per row, so a pool larger than RAM works. An `IterableDataset` is refused with how to write it to an
            Arrow file (the datastore needs random access by row number).
        output_dir: where the datastore lives. None (default): ``<warmup_dir>/less_datastore/<key digest>``, one
            folder per content key. A given folder is used as is: a complete datastore built under the same key is
            reused, a partial one resumed, and one made from other inputs refused with the differing fields.
        gradient_config, projection_config: settings (defaults: the paper's Adam update, sparse JL to 8192 dims).
        base_model: override the base model recorded in the checkpoints.
        featurizer: reuse an already loaded model (the selector passes its own).

    Returns:
        The :class:`Datastore`.
    """
    gradient_config = gradient_config or GradientConfig()
    projection_config = projection_config or ProjectionConfig()
    check_storage_dtype(projection_config.storage_dtype, list(projection_config.dims))
    check_map_style(pool)
    if len(pool) == 0:
        raise InputError("The pool is empty: nothing to build a datastore for.")
    check_unique_ids(pool)
    checkpoints = featurizer.checkpoints if featurizer else find_checkpoints(warmup_dir)
    weights = checkpoint_weights(checkpoints)
    featurizer = featurizer or GradientFeaturizer(
        checkpoints, gradient_config, from_config(projection_config), base_model
    )
    transform = gradient_config.optimizer_transform
    if transform == "sgd":
        logger.warning("Pool features use the plain gradient (optimizer_transform='sgd'), not LESS's Adam update.")
    key = datastore_key(featurizer, pool, transform, projection_config.storage_dtype, checkpoints)
    explicit = output_dir is not None
    directory = Path(output_dir) if explicit else resolve_datastore_dir(warmup_dir, key)
    manifest = Manifest(
        base_model=featurizer.base_model,
        checkpoints=[
            CheckpointEntry(c.name, str(c.path.resolve()), c.step, float(w), c.mean_lr)
            for c, w in zip(checkpoints, weights)
        ],
        transform=transform,
        projectors=[p.spec() for p in featurizer.projectors],
        storage_dtype=projection_config.storage_dtype,
        max_length=gradient_config.max_length,
        truncation=gradient_config.truncation,
        n_rows=len(pool),
        dataset_fingerprint=key["pool"]["content"],
        key=key,
        less_hf_version=__version__,
    )
    reused = _reusable(directory, key)
    if reused is not None:
        return reused
    if not explicit and not directory.exists():
        _note_siblings(directory, key)
    with WriterLock(directory, featurizer.shard):  # also refuses an unwritable folder, on every rank
        reused = _reusable(directory, key)  # another job may have finished it while we checked
        if reused is not None:
            return reused
        if (directory / MANIFEST_FILE).exists():
            logger.info("Resuming datastore build at %s", directory)
            try:
                manifest.created = Manifest.load(directory).created  # a resume keeps the build's creation time
            except CorruptFileError:
                pass  # damaged: _check_existing warned, and the folders' own keys decide what is reused
        for checkpoint in checkpoints:  # every input is checked before any work starts
            check_checkpoint(checkpoint)
        return _build(directory, manifest, checkpoints, pool, gradient_config, featurizer)


def _check_disk_space(output_dir: Path, manifest: Manifest, shard) -> None:
    """Fail before any work, on every rank, when the feature files still to create do not fit on the disk."""
    per_row = row_bytes(manifest.storage_dtype, manifest.dims)
    needed = 0
    for c in manifest.checkpoints:
        if (output_dir / "pool" / c.name).is_dir():
            continue
        part = output_dir / "pool" / f"{c.name}.part"
        existing = sum(p.stat().st_size for p in part.glob("d*.npy")) if part.is_dir() else 0
        needed += max(0, manifest.n_rows * per_row - existing)
    free = shutil.disk_usage(output_dir).free
    message = ""
    if needed > free:
        message = (
            f"The datastore needs {needed / 1e9:.2f} GB more at {output_dir} but only {free / 1e9:.2f} GB are free. "
            "Free some space, pick another datastore dir, or store fewer bytes (--storage_dtype int8/int4/int1, "
            "smaller --dims). Finished parts are kept: run the same command again."
        )
    message = shard.broadcast_from_main(message) if shard.world_size > 1 else message
    if message:
        raise NoSpaceError(message)


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


def _ids_at(rows_source, rows: np.ndarray) -> list[str]:
    """Ids of some rows, from the pool (a `Dataset`) or from a list of every row's id (merged shards)."""
    if isinstance(rows_source, list):
        return [rows_source[int(i)] for i in rows]
    return ids_at(rows_source, rows)


def _report_invalid(rows_source, rows: np.ndarray, limit: int = 20) -> dict[str, Any]:
    return {"count": int(len(rows)), "ids": _ids_at(rows_source, rows[:limit])}


def _build(
    output_dir: Path,
    manifest: Manifest,
    checkpoints: list[CheckpointInfo],
    pool,
    gradient_config: GradientConfig,
    featurizer: GradientFeaturizer,
) -> Datastore | None:
    shard = featurizer.shard
    featurizer.load(checkpoints[0])
    too_big = [d for d in manifest.dims if d > featurizer.num_params]
    if too_big:
        raise InputError(
            f"Projection dims {too_big} exceed the gradient's dimension D={featurizer.num_params} (the LoRA "
            f"parameters): a projection to more dims than D only adds noise. Use --dims (ProjectionConfig.dims) "
            f"<= {featurizer.num_params}, or a larger LoRA rank."
        )
    manifest.num_params = featurizer.num_params
    if shard.is_main:
        _remove_stale_temp_files(output_dir)
    _check_disk_space(output_dir, manifest, shard)
    if shard.is_main:
        manifest.status = "building"
        manifest.save(output_dir)
    tokenized = featurizer.tokenize(pool, desc="Tokenizing pool")
    valid = tokenized.num_supervised > 0
    if not valid.any():
        raise InputError(
            f"No pool row keeps a supervised token within max_length={gradient_config.max_length} (every completion "
            "is empty or truncated away): raise --max_length or check the dataset's completions."
        )
    no_loss = np.flatnonzero(~valid)
    if len(no_loss) and shard.is_main:
        logger.warning(
            "%d pool rows have no supervised token after truncation to %d tokens (e.g. %s); they will "
            "never be selected.",
            len(no_loss),
            gradient_config.max_length,
            ids_at(pool, no_loss[:5]),
        )
    nonfinite: set[int] = set()
    for checkpoint in checkpoints:
        writer = FeatureWriter(
            output_dir / "pool" / checkpoint.name,
            len(pool),
            manifest.dims,
            manifest.storage_dtype,
            shard,
            key=folder_key(manifest.key, checkpoint.name),
        )
        batches = featurizer.features(checkpoint, tokenized, writer.done, manifest.transform, desc="Pool")
        nonfinite.update(write_features(writer, batches, gradient_config.flush_every, expect_finite=valid))
    bad = np.asarray(sorted(nonfinite), dtype=np.int64)
    valid[bad] = False
    if len(bad) and shard.is_main:
        logger.warning(
            "%d pool rows have non-finite (NaN/inf) gradient features at some checkpoint (e.g. %s): an overflow in "
            "the model or its optimizer state. They are stored as zeros and never selected; the manifest lists them.",
            len(bad),
            ids_at(pool, bad[:5]),
        )
    if shard.separate:  # one shard of a split build: record what merge_shards needs to finish the datastore
        write_row_ids(output_dir / ROW_IDS_FILE, pool)
        record = {"rank": shard.rank, "world_size": shard.world_size, "no_supervised_token": no_loss.tolist()}
        write_json_atomic(output_dir / SHARD_FILE, record)
        logger.info(
            "Shard %d/%d written to %s; combine the %d shard folders with `less-hf merge-shards`.",
            shard.rank,
            shard.world_size,
            output_dir,
            shard.world_size,
        )
        return None
    if shard.is_main:
        finish_datastore(output_dir, manifest, pool, valid, no_loss, bad)
    shard.barrier()
    return Datastore(output_dir, Manifest.load(output_dir))


def finish_datastore(
    output_dir: Path, manifest: Manifest, rows_source, valid: np.ndarray, no_loss: np.ndarray, bad: np.ndarray
) -> None:
    """Once every feature folder is final: write the valid mask and row ids, record the invalid rows and every
    file's checksum in the manifest, and mark it complete.

    ``rows_source`` is the pool (its ids are streamed a batch at a time) or, for merged shards, the list of every
    row's id.
    """
    manifest.invalid_rows = {
        "no_supervised_token": _report_invalid(rows_source, no_loss),
        "nonfinite_features": _report_invalid(rows_source, bad),
    }
    save_npy_atomic(output_dir / VALID_FILE, valid)
    if isinstance(rows_source, list):
        write_json_atomic(output_dir / ROW_IDS_FILE, rows_source)
    else:
        write_row_ids(output_dir / ROW_IDS_FILE, rows_source)
    files = {name: file_checksum(output_dir / name) for name in (VALID_FILE, ROW_IDS_FILE)}
    for checkpoint in manifest.checkpoints:
        folder = Path("pool") / checkpoint.name
        for name, record in recorded_checksums(output_dir / folder).items():
            if name.startswith("d"):
                files[str(folder / name)] = record
    manifest.files = files
    manifest.status = "complete"
    manifest.save(output_dir)
