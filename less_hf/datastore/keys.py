"""Content keys: everything that changes a feature's numbers, recorded as hashes of content (never a path alone).

A datastore, each of its feature folders, each target's features and each selection carry a key built here. Two
keys are equal only when the features they describe would have the same bits; anything cached is reused only under
an equal key, and a mismatch is reported field by field (:func:`diff_keys`) with the option that sets the field
(:func:`fix_hint`).

File hashes (sha256) are cached in ``~/.cache/less_hf/file_hashes.json`` (``$LESS_HF_CACHE`` moves it) by the
file's real path, size, mtime, ctime and inode, so a multi-GB checkpoint is read once, not on every run; files in the
Hugging Face Hub cache are named by their sha256 already and are never read. Nothing is written beside the user's
files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from transformers.utils import logging

from .atomic import write_json_atomic

logger = logging.get_logger(__name__)

__all__ = [
    "FEATURE_FORMAT",
    "checkpoint_identity",
    "dataset_digest",
    "diff_keys",
    "file_digest",
    "fix_hint",
    "key_digest",
    "model_identity",
]

FEATURE_FORMAT = 2
"""Bumped whenever a code change alters the numbers of stored features, so older features are never reused."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SEEN: dict[str, dict[str, Any]] = {}  # real path → {"signature", "sha256"} of the files this process has hashed
_CHUNK = 16 << 20


def cache_dir() -> Path:
    """Where less_hf keeps its own caches (``$LESS_HF_CACHE``, else ``$XDG_CACHE_HOME/less_hf`` or
    ``~/.cache/less_hf``)."""
    if os.environ.get("LESS_HF_CACHE"):
        return Path(os.environ["LESS_HF_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "less_hf"


def _cache_file() -> Path:
    return cache_dir() / "file_hashes.json"


def _load_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache_entry(real: str, entry: dict[str, Any]) -> None:
    """Add one entry (best effort: an unwritable cache only costs re-hashing next time)."""
    try:
        data = _load_cache()
        data[real] = entry
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(_cache_file(), data)
    except OSError as err:
        logger.debug("Could not update the file-hash cache %s: %s", _cache_file(), err)


def _matches(entry: Any, signature: list[int]) -> bool:
    return (
        isinstance(entry, dict)
        and entry.get("signature") == signature
        and isinstance(entry.get("sha256"), str)
        and bool(_SHA256.match(entry["sha256"]))
    )


def file_digest(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, cached by the file's real path, size, mtime, ctime and inode."""
    real = Path(path).resolve()
    if real.parent.name == "blobs" and _SHA256.match(real.name):  # Hugging Face Hub cache: an LFS blob's own sha256
        return real.name
    st = real.stat()
    signature = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    cached = _SEEN.get(str(real))  # this process's hashes first: the cache file is read only on a miss
    if not _matches(cached, signature):
        cached = _load_cache().get(str(real))
    if _matches(cached, signature):
        _SEEN[str(real)] = cached
        return cached["sha256"]
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    entry = {"signature": signature, "sha256": digest.hexdigest()}
    if real.stat().st_mtime_ns == st.st_mtime_ns:  # not rewritten while we read it
        _SEEN[str(real)] = entry
        _save_cache_entry(str(real), entry)
    return entry["sha256"]


def key_digest(key: Any) -> str:
    """sha256 of a key's canonical JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def dataset_digest(dataset, columns: list[str]) -> str:
    """sha256 of ``columns`` of a `datasets.Dataset`, in row order (Arrow IPC bytes, batch by batch).

    Only the content counts: the same rows give the same digest whether the dataset was loaded from a file, built in
    memory or sliced from a larger one; any changed value, row order or type gives another.
    """
    import pyarrow as pa

    digest = hashlib.sha256(json.dumps({"rows": len(dataset), "columns": columns}).encode())
    if len(dataset) == 0:
        return digest.hexdigest()
    for batch in dataset.select_columns(columns).with_format("arrow").iter(batch_size=8192):
        # fresh buffers (a slice hashes as a copy) and no schema metadata (datasets records a fingerprint there)
        batch = batch.take(pa.array(range(len(batch)), type=pa.int64())).replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_table(batch)
        digest.update(sink.getvalue())
    return digest.hexdigest()


_IDENTITY = re.compile(
    r"^(config\.json|(model|pytorch_model)[^/]*\.(safetensors|bin)(\.index\.json)?|tokenizer[^/]*|"
    r"special_tokens_map\.json|added_tokens\.json|vocab\.[a-z]+|merges\.txt|chat_template\.[a-z]+|[^/]*\.model|"
    r"[^/]*\.tiktoken)$"
)


def _identity_files(folder: Path) -> list[Path]:
    """The files of a model folder that can change a gradient: config, weights, tokenizer and chat template (not
    README, generation config or anything else a later download may add)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and _IDENTITY.match(p.name))


_MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt", "*.tiktoken"]


def _hub_snapshot(repo_id: str) -> Path:
    """The local snapshot folder of a Hub model: from the cache, else (when online) downloaded, as `from_pretrained`
    would; a clear error when neither works."""
    from huggingface_hub import snapshot_download

    from ..errors import MissingFileError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the local cache (or not a repo id at all)
        pass
    error: Exception | None = None
    if not os.environ.get("HF_HUB_OFFLINE"):
        try:
            return Path(snapshot_download(repo_id, allow_patterns=_MODEL_FILES))
        except Exception as err:  # noqa: BLE001 - offline, no such repo, no access
            error = err
    raise MissingFileError(
        f"Base model {repo_id!r} is neither a local folder nor in the local Hugging Face cache"
        + (f" (downloading it failed: {type(error).__name__})" if error else "")
        + f". Pass its folder with --base_model (base_model=...); a relative path is read from the current "
        f"directory ({Path.cwd()})."
    ) from None


def model_identity(base_model: str) -> dict[str, Any]:
    """What a base model *is*: the sha256 of every file of its folder that can change a gradient (config, weights,
    tokenizer, chat template), plus where it was found (recorded, not compared: a moved copy is the same model).

    A Hub id is looked up in the local Hub cache (its snapshot folder's name is the revision).
    """
    folder, revision = Path(base_model).expanduser(), None
    if not folder.is_dir():
        folder = _hub_snapshot(base_model)
        revision = folder.name
    files = {p.name: file_digest(p) for p in _identity_files(folder)}
    if "config.json" not in files:
        from ..errors import InputError

        raise InputError(f"{folder} has no config.json, so it is not a transformers model folder: check --base_model.")
    return {"files": files, "source": {"name": base_model, "path": str(folder.resolve()), "revision": revision}}


def checkpoint_identity(path: Path, captured: bool) -> dict[str, Any]:
    """The sha256 of the files of one warmup checkpoint that feed its features: the LoRA adapter (weights and
    config) and the optimizer moments (the less_hf capture, or the Trainer's ``optimizer.pt``)."""
    names = ["adapter_model.safetensors", "adapter_model.bin", "adapter_config.json"]
    names += ["less_hf/moments.safetensors", "less_hf/state.json"] if captured else ["optimizer.pt", "optimizer.bin"]
    return {name: file_digest(path / name) for name in names if (path / name).is_file()}


# ----------------------------------------------------------------------------------------------- reporting a mismatch

_FIXES = {
    "base_model": "--base_model (base_model=)",
    "transform": "--optimizer_transform (GradientConfig.optimizer_transform)",
    "projectors": "--kind/--dims/--seed/--sparsity (ProjectionConfig)",
    "storage_dtype": "--storage_dtype (ProjectionConfig.storage_dtype)",
    "max_length": "--max_length (GradientConfig.max_length)",
    "truncation": "--truncation (GradientConfig.truncation)",
    "batch_size": "--batch_size (GradientConfig.batch_size)",
    "model_dtype": "--dtype (GradientConfig.dtype)",
    "device_type": "--device (GradientConfig.device)",
    "pool": "--pool (the pool dataset)",
    "checkpoints": "--warmup_dir (the warmup's checkpoints)",
    "checkpoint": "--warmup_dir (the warmup's checkpoints)",
    "feature_format": "a less_hf upgrade changed how features are computed",
}


def _short(value: Any) -> str:
    if isinstance(value, str) and _SHA256.match(value):
        return value[:12]
    text = json.dumps(value, sort_keys=True, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``["field: old → new", ...]`` for every leaf that differs (``source`` entries, which say where a file was
    found, are informational and never compared)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            if k == "source":
                continue
            name = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append(f"{name}: (none) → {_short(new[k])}")
            elif k not in new:
                out.append(f"{name}: {_short(old[k])} → (none)")
            else:
                out += diff_keys(old[k], new[k], name)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [line for i, (a, b) in enumerate(zip(old, new)) for line in diff_keys(a, b, f"{prefix}[{i}]")]
    return [] if old == new else [f"{prefix}: {_short(old)} → {_short(new)}"]


def fix_hint(differences: list[str]) -> str:
    """The options that set the differing fields."""
    fields = []
    for line in differences:
        top = re.split(r"[.\[:]", line, maxsplit=1)[0]
        hint = _FIXES.get(top)
        if hint and hint not in fields:
            fields.append(hint)
    return "; ".join(fields)


def strip_sources(key: Any) -> Any:
    """The key without its informational ``source`` entries (what :func:`key_digest` of a comparable key hashes)."""
    if isinstance(key, dict):
        return {k: strip_sources(v) for k, v in key.items() if k != "source"}
    if isinstance(key, list):
        return [strip_sources(v) for v in key]
    return key
