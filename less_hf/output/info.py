"""`less-hf info`: describe a datastore, a warmup output dir, one checkpoint, or a selection folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError, MissingFileError


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _key_digest(key: dict[str, Any]) -> str | None:
    from ..datastore.keys import key_digest, strip_sources

    return key_digest(strip_sources(key))[:16] if key else None


def describe_datastore(path: Path) -> dict[str, Any]:
    """Manifest summary of a datastore: model, checkpoints + weights, dims, dtype, rows, valid rows, size on disk."""
    import numpy as np

    from ..datastore.manifest import Manifest

    manifest = Manifest.load(path)
    valid_file = path / "valid.npy"
    return {
        "kind": "datastore",
        "path": str(path),
        "status": manifest.status,
        "base_model": manifest.base_model,
        "checkpoints": [
            {"name": c.name, "step": c.step, "weight": c.weight, "mean_lr": c.mean_lr} for c in manifest.checkpoints
        ],
        "transform": manifest.transform,
        "projectors": manifest.projectors,
        "dims": manifest.dims,
        "storage_dtype": manifest.storage_dtype,
        "max_length": manifest.max_length,
        "truncation": manifest.truncation,
        "rows": manifest.n_rows,
        "valid_rows": int(np.load(valid_file).sum()) if valid_file.exists() else None,
        "feature_params": manifest.num_params,
        "dataset_fingerprint": manifest.dataset_fingerprint,
        "key": _key_digest(manifest.key),
        "size_on_disk": _size(path),
        "created": manifest.created,
    }


def _checkpoint(info, weight: float | None) -> dict[str, Any]:
    from ..capture.optimizer_state import CAPTURE_DIR, STATE_FILE

    state_file = info.path / CAPTURE_DIR / STATE_FILE
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    return {
        "name": info.name,
        "step": info.step,
        "mean_lr": info.mean_lr,
        "weight": weight,
        "captured": info.captured,
        "base_model": state.get("base_model_name_or_path"),
        "seed": state.get("seed"),
        "size_on_disk": _size(info.path),
    }


def describe_warmup(path: Path) -> dict[str, Any]:
    """A warmup output dir: its checkpoints with steps, η̄ (normalised) and whether the callback captured them."""
    from ..capture.checkpoints import checkpoint_weights, find_checkpoints
    from ..errors import LessHFError
    from ..modeling import base_model_of

    infos = find_checkpoints(path)
    weights = checkpoint_weights(infos)
    try:
        base_model = base_model_of(infos[0].path)
    except LessHFError as err:
        base_model = f"unknown ({err})"
    datastores = [str(p.parent) for p in [*path.glob("*/manifest.json"), *path.glob("less_datastore/*/manifest.json")]]
    return {
        "kind": "warmup",
        "path": str(path),
        "base_model": base_model,
        "checkpoints": [_checkpoint(i, float(w)) for i, w in zip(infos, weights)],
        "datastores": datastores,
    }


def describe_checkpoint(path: Path) -> dict[str, Any]:
    """One ``checkpoint-N`` folder (η̄ is not normalised: that needs its siblings)."""
    from ..capture.checkpoints import find_checkpoints

    infos = [i for i in find_checkpoints(path.parent) if i.path.resolve() == path.resolve()]
    return {"kind": "checkpoint", "path": str(path), **_checkpoint(infos[0], None)}


def describe_selection(path: Path) -> dict[str, Any]:
    """A selection folder: method, pool, and per target the counts."""
    from .provenance import load_selection

    sel = load_selection(path)
    return {
        "kind": "selection",
        "path": str(path),
        "method": sel["method"],
        "policy": sel.get("policy"),
        "pool": {k: sel["pool"][k] for k in ("spec", "n_rows", "fingerprint")},
        "model": sel["settings"].get("model"),
        "targets": {
            n: {k: t[k] for k in ("n_examples", "n_selected", "threshold")} for n, t in sel["targets"].items()
        },
    }


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Describe whatever less_hf folder ``path`` is (datastore, warmup dir, checkpoint, selection)."""
    path = Path(path)
    if not path.is_dir():
        raise MissingFileError(f"{path} is not a folder.")
    if (path / "manifest.json").exists():
        return describe_datastore(path)
    if (path / "selection.json").exists():
        return describe_selection(path)
    if path.name.startswith("checkpoint-") and (path / "trainer_state.json").exists():
        return describe_checkpoint(path)
    if any(p.is_dir() and p.name.startswith("checkpoint-") for p in path.iterdir()):
        return describe_warmup(path)
    raise InputError(
        f"{path} is not a less_hf folder: expected a datastore (manifest.json), a selection (selection.json), a "
        "warmup output dir (checkpoint-N folders) or one checkpoint-N folder."
    )


def format_description(info: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe`'s dict."""
    lines = [f"{info['kind']}: {info['path']}"]
    if info["kind"] == "datastore":
        lines += [
            f"  status:       {info['status']}",
            f"  content key:  {info['key']}",
            f"  base model:   {info['base_model']}",
            f"  rows:         {info['rows']:,} ({info['valid_rows']:,} with a supervised token)"
            if info["valid_rows"] is not None
            else f"  rows:         {info['rows']:,}",
            f"  features:     {info['transform']} updates of {info['feature_params']:,} params → dims {info['dims']} "
            f"({info['storage_dtype']})",
            f"  tokens:       max_length {info['max_length']}, truncation {info['truncation']}",
            f"  size on disk: {_human(info['size_on_disk'])}",
            "  checkpoints:",
        ]
        lines += [
            f"    {c['name']:<18} step {c['step']:>6}  η̄ {c['weight']:.4f}  (mean lr {c['mean_lr']:.3g})"
            for c in info["checkpoints"]
        ]
    elif info["kind"] in ("warmup", "checkpoint"):
        checkpoints = info["checkpoints"] if info["kind"] == "warmup" else [info]
        for c in checkpoints:
            weight = f"η̄ {c['weight']:.4f}  " if c["weight"] is not None else ""
            lines.append(
                f"  {c['name']:<18} step {c['step']:>6}  {weight}mean lr {c['mean_lr']:.3g}  "
                f"{'captured' if c['captured'] else 'NOT captured (optimizer.pt fallback)'}  "
                f"{_human(c['size_on_disk'])}"
            )
        if info["kind"] == "warmup":
            lines.append(f"  base model: {info['base_model']}")
            for d in info["datastores"]:
                lines.append(f"  datastore: {d}")
    else:
        lines += [
            f"  method: {info['method']}, policy: {info.get('policy') or '—'}, model: {info['model']}",
            f"  pool:   {info['pool']['spec']} ({info['pool']['n_rows']:,} rows, "
            f"fingerprint {info['pool']['fingerprint']})",
        ]
        for name, t in info["targets"].items():
            lines.append(f"  {name}: {t['n_selected']} rows selected for {t['n_examples']} target examples")
    return "\n".join(lines)
