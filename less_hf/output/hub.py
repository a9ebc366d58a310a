"""Hub-ready subsets: a folder of parquet files + a `DatasetCard`, written locally (`export`) or uploaded (`push`).

The folder holds one config per target (``data/<target>-00000-of-00001.parquet``) declared in the card's YAML
``configs:``, so ``load_dataset(folder)`` gives the first target and ``load_dataset(folder, name=target)`` any of
them, with the same rows as the selection (the user's columns plus the score and rank columns).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers.utils import logging

from ..errors import LessHFError
from .provenance import load_selection

logger = logging.get_logger(__name__)


class HubUnreachableError(LessHFError, RuntimeError):
    """The Hub could not be reached (offline mode, no network, refused connection); the local export is kept."""


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "n>1M"


def _is_unreachable(error: BaseException) -> bool:
    """Offline mode, or a transport-level failure of whichever HTTP client huggingface_hub uses (requests, httpx)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    if isinstance(error, (OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return True
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"TransportError", "ConnectError", "ConnectionError", "TimeoutException", "NetworkError"})


POLICY_TEXT = {
    "per_task": "one subset per target task",
    "max": "one subset for the union of the targets, the top rows by the max of the tasks' scores",
    "round_robin": "one subset for the union of the targets, each task taking its next best unseen row in turn; "
    "the `selected_for` column names the task that took each row",
}


def card_metadata(selection: dict[str, Any], repo_id: str | None = None) -> dict[str, Any]:
    """The card's YAML metadata: HF's ``configs``/tags plus a ``less_hf`` block with the run's provenance."""
    settings = selection["settings"]
    names = list(selection["targets"])
    largest = max(t["n_selected"] for t in selection["targets"].values())
    return {
        "pretty_name": f"{repo_id or 'less_hf selection'} ({', '.join(names)})",
        "tags": ["less-hf", "data-selection", f"selection-method-{selection['method']}"],
        "task_categories": ["text-generation"],
        "size_categories": [_size_category(largest)],
        "configs": [
            {
                "config_name": name,
                "data_files": [{"split": "train", "path": f"data/{name}-*.parquet"}],
                **({"default": True} if i == 0 else {}),
            }
            for i, name in enumerate(names)
        ],
        "less_hf": {
            "method": selection["method"],
            "policy": selection.get("policy"),
            "source_dataset": selection["pool"]["spec"],
            "source_fingerprint": selection["pool"]["fingerprint"],
            "source_rows": selection["pool"]["n_rows"],
            "model": settings.get("model"),
            "checkpoints": settings.get("checkpoints"),
            "projection": settings.get("projection"),
            "seed": {
                "warmup": settings.get("warmup_seed"),
                "projection": (settings.get("projection") or {}).get("seed"),
            },
            "fraction": (settings.get("selection") or {}).get("fraction"),
            "n": (settings.get("selection") or {}).get("n"),
            "settings": settings,
            "target_tasks": {
                name: {
                    "examples": t["n_examples"],
                    "subtasks": len(t["subtasks"]),
                    "selected": t["n_selected"],
                    "counts_per_source": t["counts_per_source"],
                }
                for name, t in selection["targets"].items()
            },
            "source_counts_in_pool": selection["pool"]["counts_per_source"],
        },
    }


def card_body(selection: dict[str, Any], repo_id: str | None = None) -> str:
    """The card's readable markdown body."""
    settings, pool = selection["settings"], selection["pool"]
    names = list(selection["targets"])
    lines = [
        f"# {repo_id or 'Selected subsets'}",
        "",
        f"Subsets of `{pool['spec']}` ({pool['n_rows']:,} rows, fingerprint `{pool['fingerprint']}`) selected with "
        f"less_hf (method `{selection['method']}`, [LESS](https://arxiv.org/abs/2402.04333)) for the target "
        f"task{'s' if len(names) > 1 else ''} {', '.join(f'`{n}`' for n in names)}.",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'subset = load_dataset("{repo_id or "path/to/this/folder"}", name="{names[0]}", split="train")',
        "```",
        "",
        "| target | examples | subtasks | selected | top sources |",
        "|---|---|---|---|---|",
    ]
    for name, t in selection["targets"].items():
        top = ", ".join(f"{s} ({c})" for s, c in list((t["counts_per_source"] or {}).items())[:3]) or "—"
        lines.append(f"| {name} | {t['n_examples']} | {len(t['subtasks'])} | {t['n_selected']} | {top} |")
    lines += ["", "## How it was selected", ""]
    if selection["method"] == "less":
        proj = settings.get("projection") or {}
        grad = settings.get("gradient") or {}
        sel = settings.get("selection") or {}
        ckpts = settings.get("checkpoints") or []
        lines += [
            f"- Model: `{settings.get('model')}`, LoRA warmup checkpoints "
            + ", ".join(f"{c['name']} (η̄ {c['weight']:.3f})" for c in ckpts),
            f"- Features: per-example `{grad.get('optimizer_transform')}` updates, "
            f"max_length {grad.get('max_length')}, "
            f"{proj.get('kind')} projection to d={proj.get('dims')} (seed {proj.get('seed')}), stored as "
            f"{proj.get('storage_dtype')}",
            f"- Score: Σ η̄ᵢ · {sel.get('aggregate')} per subtask, max over subtasks; the top "
            + (f"{sel['fraction']:.1%}" if sel.get("fraction") else f"{sel.get('n') or '5%'}")
            + " of the pool is kept",
        ]
    policy = selection.get("policy")
    if policy:
        lines.append(f"- Multi-target policy: `{policy}` ({POLICY_TEXT.get(policy, policy)})")
    lines += [
        "",
        "Each row keeps every column of the source dataset plus its score and rank (0 = best) for its target.",
        "The YAML header holds the full settings.",
    ]
    return "\n".join(lines) + "\n"


def dataset_card(selection: dict[str, Any], repo_id: str | None = None):
    """A `huggingface_hub.DatasetCard` for a selection (metadata + body)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    metadata = json.loads(json.dumps(card_metadata(selection, repo_id)))  # no shared objects → no YAML anchors
    data = DatasetCardData(**metadata)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{card_body(selection, repo_id)}")


def export_selection(
    selection_dir: str | os.PathLike, export_dir: str | os.PathLike, repo_id: str | None = None
) -> Path:
    """Write a Hub-ready folder: ``data/<target>-00000-of-00001.parquet`` per target and ``README.md`` (the card).

    Args:
        selection_dir: a folder written by `less-hf select` (``selection.json`` + one subset folder per target).
        export_dir: where to write (created; existing files of the same names are replaced).
        repo_id: the Hub name to mention in the card (optional).
    """
    from datasets import load_from_disk

    from ..datastore.atomic import write_atomic

    selection = load_selection(selection_dir)  # checks the folder and every name read back from it
    out = Path(export_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    for name in selection["targets"]:
        subset = load_from_disk(str(Path(selection_dir) / name))
        final = out / "data" / f"{name}-00000-of-00001.parquet"
        write_atomic(final, lambda f, subset=subset: subset.to_parquet(f))  # never half a parquet file
        for stale in (out / "data").glob(f"{name}-*.parquet"):
            if stale != final:
                stale.unlink()
    card = str(dataset_card(selection, repo_id))
    write_atomic(out / "README.md", lambda f: f.write(card), mode="w")  # last: a card means every file is there
    logger.info("Exported %d subsets to %s", len(selection["targets"]), out)
    return out


def push_selection(
    selection_dir: str | os.PathLike,
    repo_id: str,
    export_dir: str | os.PathLike,
    private: bool = True,
    endpoint: str | None = None,
) -> str:
    """Export locally, then upload the folder to a Hub dataset repo; returns the repo URL.

    The token comes from ``HF_TOKEN`` or the saved `hf auth login`; it is never passed on the command line, logged or
    written. If the Hub cannot be reached, raises :class:`HubUnreachableError` naming the kept local export.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    folder = export_selection(selection_dir, export_dir, repo_id)
    if get_token() is None:
        raise PermissionError(
            f"No Hugging Face token: set HF_TOKEN or run `hf auth login`, then push again. The export is kept at "
            f"{folder}."
        )
    api = HfApi(endpoint=endpoint)
    try:
        repo = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id, repo_type="dataset", folder_path=str(folder), commit_message="Upload less_hf selection"
        )
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise RuntimeError(
            f"The Hub refused the upload to {repo_id} (HTTP {status}): check the repo name and that your token may "
            f"write to it. The local export is kept at {folder}."
        ) from None
    except Exception as e:
        if not _is_unreachable(e):
            raise
        raise HubUnreachableError(
            f"Could not reach the Hugging Face Hub ({type(e).__name__}). Nothing was uploaded; the local export is "
            f"kept at {folder}. Push it later with `less-hf push` or "
            f"`hf upload {repo_id} {folder} --repo-type dataset`."
        ) from None
    return str(repo.url) if hasattr(repo, "url") else str(repo)
