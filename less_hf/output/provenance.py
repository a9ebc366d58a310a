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
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..datastore.atomic import save_npy_atomic, write_atomic
from ..errors import InputError, LessHFError, MissingFileError, SelectionFolderError
from .dataset import TASK_COLUMN
from .names import check_name, check_names

SELECTION_FILE = "selection.json"
SCORES_DIR = "scores"
SCHEMA_VERSION = 2


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
            raise InputError(f"source_column={source_column!r} is not a pool column; columns: {pool.column_names}")
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
    sampled: bool = False,
    policy: str | None = None,
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
        sampled: the method drew the rows at random, weighted by score (TSDS, DSIR, random): no threshold is
            recorded, and the most drawn rows are listed with their counts.
        policy: the multi-target policy (``per_task``, ``max``, ``round_robin``), recorded as ``policy``.
    """
    from ..datastore.keys import dataset_digest

    source_col = _source_column(pool, source_column)
    pool_sources = collections.Counter(pool[source_col]) if source_col else None
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "method": method,
        "sampled": sampled,
        "policy": policy,
        "settings": settings,
        "pool": {
            "spec": pool_spec,
            "n_rows": len(pool),
            "fingerprint": dataset_digest(pool, list(pool.column_names)),
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
        else:  # mode="max" or "round_robin": one selection for the union of the targets
            subtasks, n_examples = sorted(targets), sum(len(t) for t in targets.values())
        out["targets"][name] = {
            "n_examples": n_examples,
            "subtasks": subtasks,
            "n_selected": len(subset),
            "n_selectable": int(len(finite)),
            "threshold": None if sampled else _threshold(subset, s),
            "drawn_examples": _drawn(subset, source_col, num_examples * 2) if sampled else None,
            "counts_per_source": dict(collections.Counter(subset[source_col]).most_common()) if source_col else None,
            "counts_per_task": (
                dict(collections.Counter(subset[TASK_COLUMN]).most_common())
                if TASK_COLUMN in subset.column_names
                else None
            ),
            "top_examples": _examples(pool, s, order[:num_examples], source_col),
            "bottom_examples": _examples(pool, s, order[::-1][:num_examples], source_col),
            "scores_file": f"{SCORES_DIR}/{name}.npy",
        }
    return out


def _threshold(subset, scores: np.ndarray) -> float | None:
    """The lowest selected score when the selection is exactly the top rows by ``scores`` (every row scoring above
    it was taken), else ``None`` (round-robin selections take rows in turn, not by one score)."""
    if not len(subset):
        return None
    taken = np.sort(np.asarray(subset[_score_column(subset)], dtype=np.float64))[::-1]
    finite = np.sort(scores[np.isfinite(scores)])[::-1]
    return float(taken[-1]) if len(taken) <= len(finite) and np.array_equal(taken, finite[: len(taken)]) else None


def _drawn(subset, source_col: str | None, limit: int) -> list[dict[str, Any]]:
    """The most drawn rows of a sampled selection, with how many times each was drawn."""
    score_col = _score_column(subset)
    counts: collections.Counter = collections.Counter()
    first: dict[str, dict[str, Any]] = {}
    for row in subset:
        key = json.dumps({k: v for k, v in row.items() if not k.startswith(score_col)}, sort_keys=True, default=str)
        counts[key] += 1
        first.setdefault(key, row)
    return [
        {
            "count": count,
            "score": float(first[key][score_col]),
            "source": first[key][source_col] if source_col else None,
            "text": row_text(first[key]),
        }
        for key, count in counts.most_common(limit)
    ]


def _score_column(subset) -> str:
    ranks = [c for c in subset.column_names if c.endswith("_rank") and c[: -len("_rank")] in subset.column_names]
    if not ranks:
        raise InputError(f"The subset has no '<score>' + '<score>_rank' columns: {subset.column_names}")
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
    from ..datastore.keys import key_digest, strip_sources

    manifest = datastore.manifest if datastore is not None else None
    key = manifest.key if manifest else {}
    return {
        "model": manifest.base_model if manifest else selector.base_model,
        "warmup_dir": str(selector.warmup_dir),
        "warmup_seed": warmup_seed,
        "checkpoints": checkpoints,
        "datastore_dir": str(datastore.directory) if datastore is not None else None,
        "datastore_key": key_digest(strip_sources(key)) if key else None,
        "features": {k: key.get(k) for k in ("model_dtype", "device_type", "batch_size", "transform")}
        if key
        else None,
        "projection": selector.projection_config.to_dict(),
        "gradient": selector.gradient_config.to_dict(),
        "selection": selector.selection_config.to_dict(),
        "feature_params": manifest.num_params if manifest else None,
    }


SUBSET_FILES = ("dataset_info.json", "state.json")
PART_MARKER = ".less_hf_selection"
_OURS = {SELECTION_FILE, SCORES_DIR, "report.html", "report.md", "report_files", "hub_export", PART_MARKER}


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in SUBSET_FILES)


def _check_replaceable(out: Path) -> None:
    """An existing output folder is replaced only when it holds nothing but a selection less_hf wrote."""
    if not out.exists():
        return
    if not out.is_dir():
        raise SelectionFolderError(f"{out} is a file; --output_dir (output_dir=) must name a folder.")
    entries = list(out.iterdir())
    if not entries:
        return
    if not (out / SELECTION_FILE).exists() and not (out / PART_MARKER).exists():
        raise SelectionFolderError(
            f"{out} already exists and is not a less_hf selection folder (no {SELECTION_FILE}); a selection replaces "
            "its folder whole, so choose a new or empty --output_dir (output_dir=)."
        )
    foreign = [p.name for p in entries if p.name not in _OURS and not _is_saved_dataset(p)]
    if foreign:
        raise SelectionFolderError(
            f"{out} holds files less_hf did not write ({', '.join(sorted(foreign)[:5])}); a new selection replaces "
            "the folder whole, so move them out or choose another --output_dir (output_dir=)."
        )


def _subset_record(path: Path, rows: int) -> dict[str, Any]:
    from ..datastore.store import file_checksum

    files = {p.name: file_checksum(p) for p in sorted(path.iterdir()) if p.is_file()}
    return {"rows": rows, "files": files}


def save_selection(
    output_dir: str | os.PathLike, selected: dict[str, Any], scores: dict[str, np.ndarray], metadata: dict[str, Any]
) -> Path:
    """Write the subsets (``save_to_disk``), ``scores/<target>.npy`` and ``selection.json`` as one folder.

    Everything is written into ``<output_dir>.part`` and renamed into place at the end, so ``output_dir`` is always
    either the previous complete selection or the new one, never a mix. ``selection.json`` records every file's
    size and checksum and every subset's row count, which :func:`load_selection` checks. An existing ``output_dir``
    is replaced only if it is a selection folder holding nothing else; target names are checked with
    :func:`~less_hf.output.names.check_names`, so nothing is ever written outside ``output_dir``.
    """
    from ..datastore.atomic import fsync_dir, remove_tree
    from ..datastore.store import file_checksum

    check_names(selected)
    out = Path(output_dir)
    if out.name in ("", ".", "..") or out.resolve() == out.resolve().parent:
        raise SelectionFolderError(f"--output_dir {output_dir!r} must name a folder of its own, not '.' or '/'.")
    _check_replaceable(out)
    part = out.with_name(out.name + ".part")
    if part.exists():
        if not (part / PART_MARKER).exists():
            raise SelectionFolderError(
                f"{part} exists and was not written by less_hf; move it away (less_hf writes the selection there "
                "before renaming it to its final name)."
            )
        remove_tree(part)
    part.mkdir(parents=True)
    (part / PART_MARKER).write_text("a less_hf selection being written; deleted when complete\n")
    (part / SCORES_DIR).mkdir()
    files: dict[str, Any] = {}
    for name, subset in selected.items():
        subset.save_to_disk(str(part / name))
        files[name] = _subset_record(part / name, len(subset))
        scores_path = part / SCORES_DIR / f"{name}.npy"
        save_npy_atomic(scores_path, np.asarray(scores[name], dtype=np.float32))
        files[f"{SCORES_DIR}/{name}.npy"] = file_checksum(scores_path)
    metadata = {**metadata, "files": files}
    text = json.dumps(metadata, indent=2, default=str)
    write_atomic(part / SELECTION_FILE, lambda f: f.write(text), mode="w")
    (part / PART_MARKER).unlink()
    fsync_dir(part)
    if out.exists():
        old = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        os.replace(out, old)
        os.replace(part, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(part, out)
    fsync_dir(out.parent)
    return out


def load_selection(directory: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """Read ``selection.json`` and (``verify``) check the folder against it: every target name is a safe path
    component, every subset has the recorded row count and file checksums, every score file its checksum and the
    pool's length. An incomplete or inconsistent folder raises :class:`~less_hf.errors.SelectionFolderError`."""
    directory = Path(directory)
    path = directory / SELECTION_FILE
    if not path.exists():
        part = directory.with_name(directory.name + ".part")
        hint = f" ({part} holds an unfinished one: run `less-hf select` again)" if part.exists() else ""
        raise MissingFileError(
            f"{directory} is not a selection folder (no {SELECTION_FILE}){hint}; make one with `less-hf select`."
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SelectionFolderError(f"{path} is damaged ({err}): run `less-hf select` again.") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        version = data.get("schema_version") if isinstance(data, dict) else None
        raise SelectionFolderError(
            f"{path} has schema_version {version}; this less_hf reads {SCHEMA_VERSION}: run `less-hf select` again."
        )
    try:
        targets, n_rows, files = data["targets"], int(data["pool"]["n_rows"]), data["files"]
        check_names(targets)
        for name, t in targets.items():
            if t.get("scores_file") != f"{SCORES_DIR}/{name}.npy":
                raise SelectionFolderError(f"{path}: target {name!r} points at {t.get('scores_file')!r}.")
            if files[name]["rows"] != t["n_selected"]:
                raise SelectionFolderError(
                    f"{path}: target {name!r} says {t['n_selected']} rows selected but its subset has "
                    f"{files[name]['rows']}: the folder is inconsistent; run `less-hf select` again."
                )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        if isinstance(err, LessHFError):
            raise
        raise SelectionFolderError(f"{path} is missing fields ({err!r}): run `less-hf select` again.") from None
    if verify:
        _verify_files(directory, data, n_rows)
    return data


def _verify_files(directory: Path, data: dict[str, Any], n_rows: int) -> None:
    from ..datastore.store import file_checksum

    def check(rel: str, expected: dict[str, Any]) -> None:
        target = directory / rel
        if not target.is_file():
            raise SelectionFolderError(f"{target} is missing: the selection folder is incomplete; run select again.")
        if file_checksum(target) != expected:
            raise SelectionFolderError(
                f"{target} differs from what selection.json recorded (size or CRC-32): the folder was modified or "
                "damaged after it was written; run `less-hf select` again."
            )

    for name, t in data["targets"].items():
        record = data["files"][name]
        present = (
            {p.name for p in (directory / name).iterdir() if p.is_file()} if (directory / name).is_dir() else set()
        )
        if present != set(record["files"]):
            raise SelectionFolderError(
                f"{directory / name} holds {sorted(present)} but selection.json recorded {sorted(record['files'])}: "
                "the selection folder is inconsistent; run `less-hf select` again."
            )
        for file, expected in record["files"].items():
            check(f"{name}/{file}", expected)
        check(t["scores_file"], data["files"][t["scores_file"]])
        shape = np.load(directory / t["scores_file"], mmap_mode="r").shape
        if shape != (n_rows,):
            raise SelectionFolderError(f"{directory / t['scores_file']} has shape {shape}, not ({n_rows},).")


def load_scores(directory: str | os.PathLike, target: str) -> np.ndarray:
    """The full score array of one target."""
    check_name(target)
    return np.load(Path(directory) / SCORES_DIR / f"{target}.npy")
