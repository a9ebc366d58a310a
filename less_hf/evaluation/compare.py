"""`compare`: which selection method is best for *this* pool and target, measured on the user's own held-out rows.

Every method selects the same budget from the pool for each target; the same model is LoRA fine-tuned briefly on
each selection with the same recipe and seeds (:mod:`less_hf.evaluation.finetune`); each fine-tune is scored on the
target's held-out rows (gold-answer loss, and accuracy when the rows carry options). Cells are mean ± SE over seeds
and held-out rows, and each method is marked as distinguishable or not from the best (:mod:`.stats`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from transformers.utils import logging

from ..config import GradientConfig, ProjectionConfig, WarmupConfig
from ..errors import ConfigError, InputError
from ..selection import SELECTORS, Selector
from ..selection.base import MODES, as_target_dict, budget, check_dataset
from ..tokenization import FORMAT_COLUMNS, detect_format
from .choices import evaluate
from .finetune import FinetuneConfig, finetune
from .stats import distinguishable_from_best, mean_se

logger = logging.get_logger(__name__)

SAMPLERS = ("random", "dsir", "tsds")
"""Methods whose selection depends on the seed: they select once per seed (the others once)."""
BASE = "base"
"""The reference row: the model without any fine-tune."""
WARMUP_FILE = "compare_warmup.json"


def parse_method(spec: str) -> tuple[str, str]:
    """``"name"`` or ``"name@policy"`` (a multi-target policy, e.g. ``rds_plus@round_robin``) → ``(name, policy)``."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"A method must be a non-empty name, got {spec!r}.")
    name, _, policy = spec.strip().partition("@")
    name, policy = name.lower(), policy or "per_task"
    if name not in SELECTORS:
        raise InputError(f"Unknown method {name!r} in {spec!r}; choose from {sorted(SELECTORS)}.")
    if policy not in MODES:
        raise InputError(f"Unknown multi-target policy {policy!r} in {spec!r}; choose from {list(MODES)}.")
    return name, policy


def make_selector(
    name: str,
    model: str,
    warmup_dir: str | os.PathLike | None,
    gradient_config: GradientConfig,
    projection_config: ProjectionConfig,
) -> Selector:
    """A selector by registry name, given what it needs: the warmup (gradient methods), the model (representation
    methods), the tokenizer (length), or nothing (lexical and random)."""
    cls = SELECTORS[name]
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if "warmup_dir" in params:
        if warmup_dir is None:
            raise ConfigError(f"Method {name!r} needs warmup checkpoints (pass warmup_dir, or let compare warm up).")
        kwargs["warmup_dir"] = warmup_dir
        for key, value in (("gradient_config", gradient_config), ("projection_config", projection_config)):
            if key in params:
                kwargs[key] = value
    elif "model" in params:
        kwargs["model"] = model
        if "max_length" in params:
            kwargs["max_length"] = gradient_config.max_length
        if "batch_size" in params:
            kwargs["batch_size"] = gradient_config.batch_size
    elif "tokenizer" in params:
        kwargs["tokenizer"] = model
    return cls(**kwargs)


def row_digest(row: dict[str, Any], fmt: str) -> str:
    """A digest of a row's training content (its format's columns), to find the same example in two datasets."""
    content = {c: row[c] for c in FORMAT_COLUMNS[fmt] if c in row}
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def _digests(dataset) -> set[str]:
    fmt = detect_format(dataset.column_names)
    return {row_digest(row, fmt) for row in dataset}


def check_inputs(pool, targets: dict[str, Any], heldout: dict[str, Any]) -> None:
    """Clear errors for inputs that would make the comparison wrong: unmatched names, empty sets, or the same
    example in a target (or the pool) and its held-out set (the evaluation would reward memorising it)."""
    check_dataset(pool, "pool")
    if not isinstance(heldout, dict) or not heldout:
        raise InputError("heldout must be {name: Dataset} with one held-out set per target (same names).")
    for name, rows in heldout.items():
        check_dataset(rows, f"heldout {name!r}")
        if len(rows) == 0:
            raise InputError(f"Held-out set {name!r} has no rows.")
    missing, extra = sorted(set(targets) - set(heldout)), sorted(set(heldout) - set(targets))
    if missing or extra:
        raise InputError(
            f"Every target needs a held-out set of the same name: targets {sorted(targets)}, held-out sets "
            f"{sorted(heldout)}" + (f"; no held-out set for {missing}" if missing else "")
            + (f"; no target named {extra}" if extra else "") + "."
        )  # fmt: skip
    pool_digests = _digests(pool)
    for name in targets:
        held = _digests(heldout[name])
        both = held & _digests(targets[name])
        if both:
            raise InputError(
                f"{len(both)} row(s) of held-out set {name!r} are also in target {name!r}: the held-out rows must be "
                "disjoint from the target rows the selectors see (split your examples first)."
            )
        leaked = held & pool_digests
        if leaked:
            raise InputError(
                f"{len(leaked)} row(s) of held-out set {name!r} are also in the pool: a method that selects them "
                "would be scored on rows it trained on. Remove them from the pool or from the held-out set."
            )


def _warmup(model: str, pool, out: Path, config: WarmupConfig) -> Path:
    """Warm up once into ``out`` (as `less-hf warmup` does); reuse an earlier one only if made the same way."""
    from ..warmup import warmup

    wanted = {"model": str(model), "pool": getattr(pool, "_fingerprint", None), "warmup": config.to_dict()}
    record = out / WARMUP_FILE
    if any(out.glob("checkpoint-*")):
        found = json.loads(record.read_text()) if record.is_file() else None
        if found != wanted:
            raise InputError(
                f"{out} holds a warmup made from other inputs or settings; compare reuses a warmup only when they "
                "match. Use another output_dir, pass warmup_dir=... explicitly, or delete that folder."
            )
        logger.info("Reusing the warmup in %s", out)
        return out
    warmup(model, pool, out, config)  # progress on stderr; stdout keeps compare's table
    record.write_text(json.dumps(wanted, indent=1))
    return out


def _selections(selector, name, policy, pool, targets, fraction, n, seeds) -> dict[int, dict[str, Any]]:
    """``{seed: {target or "combined": Dataset}}``; deterministic methods select once and share it."""
    out: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        if name not in SAMPLERS and out:
            out[seed] = next(iter(out.values()))
            continue
        chosen = selector.select(pool, targets, fraction=fraction, n=n, mode=policy, seed=seed)
        out[seed] = chosen if isinstance(chosen, dict) else {"combined": chosen}
    return out


def compare(
    pool,
    targets: dict[str, Any],
    heldout: dict[str, Any],
    methods: list[str] | tuple[str, ...] = ("less", "bm25", "random"),
    fraction: float | None = 0.05,
    n: int | None = None,
    seeds: int = 3,
    model: str | os.PathLike | None = None,
    output_dir: str | os.PathLike = "compare_output",
    finetune_config: FinetuneConfig | None = None,
    warmup_dir: str | os.PathLike | None = None,
    warmup_config: WarmupConfig | None = None,
    gradient_config: GradientConfig | None = None,
    projection_config: ProjectionConfig | None = None,
    eval_max_length: int | None = None,
    include_base: bool = True,
) -> dict[str, Any]:
    """Compare selection methods on held-out rows of each target; write ``compare.{json,md,png}`` to ``output_dir``.

    Args:
        pool: the candidate rows (`datasets.Dataset`, any TRL format).
        targets: ``{name: Dataset}`` of target examples the selectors see.
        heldout: ``{name: Dataset}`` of held-out rows per target (same names), disjoint from the targets and the
            pool. Rows with ``choices`` (list of answers) and ``answer`` (gold index) also get accuracy.
        methods: registry names (:data:`less_hf.selection.SELECTORS`), optionally ``name@policy`` to select once for
            all targets with a multi-target policy (e.g. ``rds_plus@round_robin``).
        fraction, n: the budget (as in :meth:`Selector.select`).
        seeds: fine-tune seeds (0..seeds-1); sampling methods also select once per seed.
        model: the model selected with, fine-tuned and evaluated (default: the built-in SmolLM2-135M-Instruct).
        finetune_config: the fine-tune recipe, the same for every selection.
        warmup_dir: LESS/TSDS checkpoints to reuse; default: warm up into ``output_dir/warmup`` with
            ``warmup_config`` (default: 2 epochs on ``max(8, k)`` rows, batch 2, no accumulation).
        gradient_config, projection_config: LESS/TSDS feature settings (defaults: the fine-tune's max_length).
        eval_max_length: tokens per held-out row and option (default: twice the fine-tune's max_length).
        include_base: also score the model without fine-tuning (a reference row, not a contender).

    Returns:
        The record written to ``compare.json``: settings, per target and method the gold loss (and accuracy) as
        mean ± SE with per-seed values, the best method and whether each method is distinguishable from it.
    """
    started = time.perf_counter()
    targets, _ = as_target_dict(targets)
    specs = [parse_method(m) for m in methods]
    labels = [m.strip().lower() for m in methods]
    if len(set(labels)) != len(labels):
        raise InputError(f"methods lists a method twice: {list(methods)}.")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise InputError(f"seeds must be a whole number >= 1, got {seeds!r}.")
    check_inputs(pool, targets, heldout)
    if n is not None:
        fraction = None
    k = budget(len(pool), fraction, n)
    finetune_config = finetune_config or FinetuneConfig()
    gradient_config = gradient_config or GradientConfig(max_length=finetune_config.max_length)
    projection_config = projection_config or ProjectionConfig()
    eval_max_length = eval_max_length or 2 * finetune_config.max_length
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        from ..assets import smollm2_path

        model = smollm2_path()
    model = str(model)

    timings: dict[str, float] = {}
    needs_warmup = any("warmup_dir" in inspect.signature(SELECTORS[name].__init__).parameters for name, _ in specs)
    if needs_warmup and warmup_dir is None:
        t = time.perf_counter()
        warmup_config = warmup_config or WarmupConfig(
            num_rows=min(len(pool), max(8, k)), epochs=2, per_device_batch_size=2, gradient_accumulation_steps=1,
            max_length=finetune_config.max_length, logging_steps=1,
        )  # fmt: skip
        warmup_dir = _warmup(model, pool, out / "warmup", warmup_config)
        timings["warmup"] = time.perf_counter() - t

    seed_list = list(range(seeds))
    selections: dict[str, dict[int, dict[str, Any]]] = {}
    for label, (name, policy) in zip(labels, specs):
        t = time.perf_counter()
        selector = make_selector(name, model, warmup_dir, gradient_config, projection_config)
        selections[label] = _selections(selector, name, policy, pool, targets, fraction, n, seed_list)
        timings[f"select {label}"] = time.perf_counter() - t
        logger.info("compare: %s selected (%.0f s)", label, timings[f"select {label}"])

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {t: {} for t in targets}
    if include_base:
        t = time.perf_counter()
        base = AutoModelForCausalLM.from_pretrained(model)
        for target in targets:
            raw[target][BASE] = [{"seed": None, **evaluate(base, tokenizer, heldout[target], eval_max_length)}]
        del base
        timings["evaluate base"] = time.perf_counter() - t
    train_dir = out / "train"
    for label in labels:
        t = time.perf_counter()
        for seed in seed_list:
            chosen = selections[label][seed]
            trained: dict[str, Any] = {}
            for target in targets:
                rows = chosen.get(target, chosen.get("combined"))
                key = "combined" if "combined" in chosen else target
                if key not in trained:  # one fine-tune per selection: a combined one serves every target
                    trained[key] = finetune(model, rows, train_dir, seed, finetune_config)
                tuned, stats = trained[key]
                result = evaluate(tuned, tokenizer, heldout[target], eval_max_length)
                raw[target].setdefault(label, []).append({"seed": seed, "selected": len(rows), **stats, **result})
            del trained
        timings[f"train+evaluate {label}"] = time.perf_counter() - t
        logger.info("compare: %s fine-tuned and evaluated (%.0f s)", label, timings[f"train+evaluate {label}"])
    shutil.rmtree(train_dir, ignore_errors=True)
    timings["total"] = time.perf_counter() - started

    record = {
        "settings": {
            "model": model, "methods": labels, "fraction": fraction, "n": n, "k": k,
            "pool_rows": len(pool), "seeds": seeds, "finetune": finetune_config.to_dict(),
            "eval_max_length": eval_max_length, "warmup_dir": str(warmup_dir) if warmup_dir else None,
            "heldout_rows": {t: len(heldout[t]) for t in targets},
            "target_rows": {t: len(targets[t]) for t in targets},
        },
        "results": summarize(raw, labels),
        "raw": raw,
        "timings": timings,
    }  # fmt: skip
    write_outputs(record, out)
    return record


def _cell(runs: list[dict[str, Any]], key: str) -> list[list[float]] | None:
    if runs[0].get(key) is None:
        return None
    return [[float(x) for x in r[key]] for r in runs]


def summarize(raw: dict[str, dict[str, list[dict[str, Any]]]], labels: list[str]) -> dict[str, Any]:
    """Per target: mean ± SE of each method's gold loss (and accuracy), the best method, and the ties."""
    summary: dict[str, Any] = {}
    for target, per_method in raw.items():
        losses = {m: _cell(per_method[m], "gold_losses") for m in labels}
        best, gaps = distinguishable_from_best(losses)  # type: ignore[arg-type]
        accuracy = {m: _cell(per_method[m], "correct") for m in labels}
        best_acc, acc_gaps = (
            distinguishable_from_best(accuracy, higher_is_better=True)  # type: ignore[arg-type]
            if all(v is not None for v in accuracy.values()) else (None, {})
        )  # fmt: skip
        rows: dict[str, Any] = {}
        for m in [BASE, *labels] if BASE in per_method else labels:
            loss = mean_se(_cell(per_method[m], "gold_losses"))  # type: ignore[arg-type]
            acc_values = _cell(per_method[m], "correct")
            rows[m] = {
                "gold_loss": {"mean": loss[0], "se": loss[1]},
                "accuracy": None if acc_values is None else dict(zip(("mean", "se"), mean_se(acc_values))),
                "seeds": len(per_method[m]),
            }
            if m in gaps:
                rows[m]["vs_best_gold_loss"] = gaps[m]
            if m in acc_gaps:
                rows[m]["vs_best_accuracy"] = acc_gaps[m]
        summary[target] = {
            "best_gold_loss": best,
            "tied_with_best": [m for m in labels if gaps[m]["tied"]],
            "best_accuracy": best_acc,
            "rows": len(per_method[labels[0]][0]["gold_losses"]),
            "methods": rows,
        }
    return summary


def format_table(record: dict[str, Any], markdown: bool = False) -> str:
    """The comparison as text (or a Markdown table per target)."""
    lines: list[str] = []
    s = record["settings"]
    for target, summary in record["results"].items():
        has_acc = summary["best_accuracy"] is not None
        lines.append(f"{'### ' if markdown else ''}{target}: {summary['rows']} held-out rows, {s['seeds']} seed(s), "
                     f"k = {s['k']} of {s['pool_rows']} pool rows")  # fmt: skip
        header = ["method", "gold loss ↓ (mean ± SE)"] + (["accuracy % ↑"] if has_acc else []) + ["vs best (Δ ± SE)"]
        table = []
        for m, row in summary["methods"].items():
            loss = row["gold_loss"]
            cells = [m + (" (no fine-tune)" if m == BASE else ""), f"{loss['mean']:.3f} ± {loss['se']:.3f}"]
            if has_acc:
                acc = row["accuracy"]
                cells.append(f"{100 * acc['mean']:.1f} ± {100 * acc['se']:.1f}")
            gap = row.get("vs_best_gold_loss")
            if gap is None:
                cells.append("")
            elif m == summary["best_gold_loss"]:
                cells.append("best")
            else:
                verdict = "not distinguishable" if gap["tied"] else "worse"
                cells.append(f"+{gap['gap']:.3f} ± {gap['gap_se']:.3f}: {verdict}")
            table.append(cells)
        if markdown:
            lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(c) + " |" for c in table]
        else:
            widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
            lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *table]]
        tied = summary["tied_with_best"]
        lines += ["", f"Best gold loss: {summary['best_gold_loss']}; within 2 SE of it (not distinguishable): "
                  f"{', '.join(tied) if len(tied) > 1 else 'none'}.", ""]  # fmt: skip
    return "\n".join(lines)


def plot(record: dict[str, Any], path: Path) -> None:
    """Bar chart of gold loss (and accuracy) per target and method, with ± 2 SE error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    results = record["results"]
    targets = list(results)
    methods = list(next(iter(results.values()))["methods"])
    metrics = ["gold_loss"] + (["accuracy"] if all(r["best_accuracy"] is not None for r in results.values()) else [])
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    width = 0.8 / len(methods)
    for ax, metric in zip(axes[0], metrics):
        for i, m in enumerate(methods):
            cells = [results[t]["methods"][m][metric] for t in targets]
            ax.bar(np.arange(len(targets)) + i * width, [c["mean"] for c in cells], width,
                   yerr=[2 * c["se"] for c in cells], label=m, capsize=2)  # fmt: skip
        ax.set_xticks(np.arange(len(targets)) + width * (len(methods) - 1) / 2, targets)
        ax.set_title(("gold-answer loss ↓" if metric == "gold_loss" else "accuracy ↑") + " (± 2 SE)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(record: dict[str, Any], out: Path) -> dict[str, Path]:
    """``compare.json`` (everything), ``compare.md`` (the tables) and ``compare.png`` (the plot) in ``out``."""
    paths = {"json": out / "compare.json", "md": out / "compare.md", "png": out / "compare.png"}
    paths["json"].write_text(json.dumps(record, indent=1))
    intro = (
        f"# Which selection method for this data? (`less-hf compare`)\n\nModel {record['settings']['model']}; "
        f"each selection LoRA fine-tuned with {json.dumps(record['settings']['finetune'])}. Mean ± SE over seeds "
        "and held-out rows; Δ vs best is paired on the same rows; within 2 SE = not distinguishable.\n\n"
    )
    paths["md"].write_text(intro + format_table(record, markdown=True) + "\n![comparison](compare.png)\n")
    plot(record, paths["png"])
    return paths


__all__ = ["check_inputs", "compare", "format_table", "make_selector", "parse_method", "summarize"]
