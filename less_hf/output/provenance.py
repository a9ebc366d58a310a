"""What a selection was made from and how: ``selection.json`` + per-target score arrays, written at select time.

`export`, `push` and `report` read these files back, so a selection folder is self-describing::

    selected/
      selection.json          settings, model, checkpoints (+ η̄), projection, pool fingerprint, counts, examples
      scores/<target>.npy      the full (len(pool),) score array of each target (-inf = never selectable)
      <target>/                the subset (`save_to_disk`), best first, with score and rank columns
"""

from __future__ import annotations

import collections
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..datastore.manifest import save_npy_atomic, write_atomic

SELECTION_FILE = "selection.json"
SCORES_DIR = "scores"
SCHEMA_VERSION = 1


def row_text(row: dict[str, Any], width: int | None = 300) -> str:
    """A one-line readable view of a row in any TRL format (``messages``, ``prompt``/``completion``, ``text``)."""

    def flat(value: Any) -> str:
        if isinstance(value, list):
            return " | ".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in value if isinstance(m, dict))
        return "" if value is None else str(value)

    if "messages" in row:
        text = flat(row["messages"])
    elif "prompt" in row:
        text = f"{flat(row['prompt'])} → {flat(row.get('completion'))}"
    elif "text" in row:
        text = flat(row["text"])
    else:
        text = json.dumps({k: v for k, v in row.items()}, default=str)
    text = " ".join(text.split())
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def _source_column(pool, source_column: str | None) -> str | None:
    if source_column is not None:
        if source_column not in pool.column_names:
            raise ValueError(f"source_column={source_column!r} is not a pool column; columns: {pool.column_names}")
        return source_column
    return "source" if "source" in pool.column_names else None


def _examples(pool, scores: np.ndarray, indices: np.ndarray, source_col: str | None) -> list[dict[str, Any]]:
    rows = pool.select(indices.tolist())
    return [
        {
            "row": int(i),
            "score": float(scores[i]),
            "source": rows[j][source_col] if source_col else None,
            "text": row_text(rows[j]),
        }
        for j, i in enumerate(indices)
    ]


def selection_metadata(
    pool,
    targets: dict[str, Any],
    selected: dict[str, Any],
    scores: dict[str, np.ndarray],
    method: str,
    settings: dict[str, Any],
    source_column: str | None = None,
    pool_spec: str | None = None,
    num_examples: int = 5,
) -> dict[str, Any]:
    """The provenance dict stored as ``selection.json``.

    Args:
        pool: the candidate `Dataset`.
        targets: ``{name: Dataset}`` of target examples.
        selected: ``{name: Dataset}`` as returned by `Selector.select`.
        scores: ``{name: (len(pool),) array}`` (`Selector.scores_`).
        method: selection method name (e.g. ``"less"``).
        settings: method-specific provenance (model, checkpoints, projection, configs...), see :func:`less_settings`.
        source_column: pool column naming each row's source (default ``"source"`` when present).
        pool_spec: how the pool was given (a path or Hub name), recorded as is.
        num_examples: top and bottom pool rows kept per target for the report.
    """
    from ..datastore.build import dataset_fingerprint

    source_col = _source_column(pool, source_column)
    pool_sources = collections.Counter(pool[source_col]) if source_col else None
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "method": method,
        "settings": settings,
        "pool": {
            "spec": pool_spec,
            "n_rows": len(pool),
            "fingerprint": dataset_fingerprint(pool),
            "columns": list(pool.column_names),
            "source_column": source_col,
            "counts_per_source": dict(pool_sources.most_common()) if pool_sources else None,
        },
        "targets": {},
    }
    for name, subset in selected.items():
        s = np.asarray(scores[name], dtype=np.float64)
        finite = np.flatnonzero(np.isfinite(s))
        order = finite[np.lexsort((finite, -s[finite]))]
        if name in targets:
            target = targets[name]
            subtasks = sorted(set(target["subtask"])) if "subtask" in target.column_names else []
            n_examples = len(target)
        else:  # mode="combined": one selection for the union of the targets
            subtasks, n_examples = sorted(targets), sum(len(t) for t in targets.values())
        out["targets"][name] = {
            "n_examples": n_examples,
            "subtasks": subtasks,
            "n_selected": len(subset),
            "n_selectable": int(len(finite)),
            "threshold": float(subset[-1][_score_column(subset)]) if len(subset) else None,
            "counts_per_source": dict(collections.Counter(subset[source_col]).most_common()) if source_col else None,
            "top_examples": _examples(pool, s, order[:num_examples], source_col),
            "bottom_examples": _examples(pool, s, order[::-1][:num_examples], source_col),
            "scores_file": f"{SCORES_DIR}/{name}.npy",
        }
    return out


def _score_column(subset) -> str:
    ranks = [c for c in subset.column_names if c.endswith("_rank") and c[: -len("_rank")] in subset.column_names]
    if not ranks:
        raise ValueError(f"The subset has no '<score>' + '<score>_rank' columns: {subset.column_names}")
    return ranks[0][: -len("_rank")]


def less_settings(selector) -> dict[str, Any]:
    """LESS provenance of a `LESSSelector` after :meth:`select`: model, checkpoints with η̄, projection, configs."""
    from ..capture.checkpoints import checkpoint_weights
    from ..capture.optimizer_state import CAPTURE_DIR, STATE_FILE

    datastore = selector.datastore
    weights = checkpoint_weights(selector.checkpoints)
    checkpoints = []
    warmup_seed = None
    for info, weight in zip(selector.checkpoints, weights):
        checkpoints.append(
            {
                "name": info.name,
                "step": info.step,
                "mean_lr": info.mean_lr,
                "weight": float(weight),
                "captured": info.captured,
            }
        )
        state_file = info.path / CAPTURE_DIR / STATE_FILE
        if warmup_seed is None and state_file.exists():
            warmup_seed = json.loads(state_file.read_text()).get("seed")
    manifest = datastore.manifest if datastore is not None else None
    return {
        "model": manifest.base_model if manifest else selector.base_model,
        "warmup_dir": str(selector.warmup_dir),
        "warmup_seed": warmup_seed,
        "checkpoints": checkpoints,
        "datastore_dir": str(selector.datastore_dir),
        "projection": selector.projection_config.to_dict(),
        "gradient": selector.gradient_config.to_dict(),
        "selection": selector.selection_config.to_dict(),
        "feature_params": manifest.num_params if manifest else None,
    }


def save_selection(
    output_dir: str | os.PathLike, selected: dict[str, Any], scores: dict[str, np.ndarray], metadata: dict[str, Any]
) -> Path:
    """Write the subsets (``save_to_disk``), ``scores/<target>.npy`` and ``selection.json`` under ``output_dir``."""
    out = Path(output_dir)
    (out / SCORES_DIR).mkdir(parents=True, exist_ok=True)
    for name, subset in selected.items():
        subset.save_to_disk(str(out / name))
        save_npy_atomic(out / SCORES_DIR / f"{name}.npy", np.asarray(scores[name], dtype=np.float32))
    text = json.dumps(metadata, indent=2, default=str)  # written last: a folder without it is not a selection
    write_atomic(out / SELECTION_FILE, lambda f: f.write(text), mode="w")
    return out


def load_selection(directory: str | os.PathLike) -> dict[str, Any]:
    """Read ``selection.json``; a clear error when ``directory`` is not a selection folder."""
    path = Path(directory) / SELECTION_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{directory} is not a selection folder (no {SELECTION_FILE}); make one with `less-hf select`."
        )
    data = json.loads(path.read_text())
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path} has schema_version {data.get('schema_version')}; this less_hf reads {SCHEMA_VERSION}."
        )
    return data


def load_scores(directory: str | os.PathLike, target: str) -> np.ndarray:
    """The full score array of one target."""
    return np.load(Path(directory) / SCORES_DIR / f"{target}.npy")
