"""The offline end-to-end demo: real model (SmolLM2-135M-Instruct), real data, LESS from warmup to subsets.

Warmup on 5% of the built-in FLAN-style pool → gradient datastore → selection for MMLU, BBH and CommonsenseQA →
per task, the top rows and the source mix of the selected 5%; the subsets are saved with ``save_to_disk`` together
with their provenance (``selection.json``, ``scores/``), an HTML report and a Hub-ready export.
The defaults are sized to finish in about 10 minutes on 2 CPU cores (see README).
"""

from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass
from pathlib import Path

from .config import GradientConfig, ProjectionConfig, WarmupConfig, _DictMixin, _help
from .datastore.atomic import write_json_atomic


@dataclass
class DemoConfig(_DictMixin):
    """Settings of `less-hf demo`."""

    output_dir: str = _help(
        "Where warmup checkpoints, the datastore and the selected subsets go.", default="demo_output"
    )
    pool_size: int = _help("Rows of the built-in pool to use (stratified over sources).", default=400)
    targets: list[str] = _help("Target tasks (of mmlu, bbh, csqa).", default_factory=lambda: ["mmlu", "bbh", "csqa"])
    target_rows: int = _help("Few-shot rows kept per target, spread round-robin over its subtasks.", default=57)
    fraction: float = _help("Fraction of the pool to select per target.", default=0.05)
    warmup_fraction: float = _help("Fraction of the pool to warm up on.", default=0.05)
    epochs: int = _help("Warmup epochs (= checkpoints; the paper uses 4).", default=2)
    learning_rate: float = _help("Warmup peak learning rate.", default=2e-5)
    lora_r: int = _help("LoRA rank (paper: 128).", default=128)
    lora_alpha: int = _help("LoRA alpha (paper: 512).", default=512)
    max_length: int = _help("Tokens per row.", default=128)
    batch_size: int = _help("Rows per batched gradient pass.", default=16)
    dim: int = _help("Projection dimension.", default=8192)
    seed: int = _help("Seed for sampling, warmup and projection.", default=0)
    show: int = _help("Top rows to print per target.", default=3)
    report: bool = _help(
        "Write report.html/report.md and a Hub-ready export of the selection at the end.", default=True
    )


DEMO_WARMUP_FILE = "less_hf_demo.json"


def _check_reused_warmup(warmup_dir: Path, warmup_config: WarmupConfig, pool_size: int) -> None:
    """A warmup left by an earlier demo run is reused only if it was made with the same settings."""
    from .datastore.keys import diff_keys
    from .errors import InputError

    wanted = {"warmup": warmup_config.to_dict(), "pool_size": pool_size}
    try:
        found = json.loads((warmup_dir / DEMO_WARMUP_FILE).read_text())
    except (OSError, ValueError):
        found = None
    differences = diff_keys(found, wanted) if isinstance(found, dict) else ["settings: (unknown) → this run's"]
    if differences:
        raise InputError(
            f"{warmup_dir} holds a warmup made with other settings ({'; '.join(differences[:6])}); the demo reuses a "
            "warmup only when they match. Use another --output_dir, or delete that folder to warm up again."
        )


def _round_robin(dataset, limit: int):
    """At most ``limit`` rows, taking each subtask's first row, then each one's second, and so on."""
    by_subtask: dict[str, list[int]] = collections.defaultdict(list)
    for i, sub in enumerate(dataset["subtask"]):
        by_subtask[sub].append(i)
    order = sorted(range(len(dataset)), key=lambda i: (by_subtask[dataset[i]["subtask"]].index(i), i))
    return dataset.select(sorted(order[:limit]))


def _snippet(row: dict, width: int = 90) -> str:
    text = " ".join(m["content"] for m in row["messages"] if m["role"] == "user")
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def run_demo(config: DemoConfig | None = None) -> dict:
    """Run the demo; returns ``{target: selected Dataset}`` and prints a summary."""
    from .assets import load_pool, load_target, smollm2_path
    from .selection import LESSSelector
    from .warmup import warmup

    config = config or DemoConfig()
    out = Path(config.output_dir)
    started = time.perf_counter()
    print("[1/4] Preparing the built-in model and data (offline)...", flush=True)
    model_path = str(smollm2_path())
    pool = load_pool(max_rows=config.pool_size, seed=config.seed)
    targets = {name: _round_robin(load_target(name, "validation"), config.target_rows) for name in config.targets}
    sources = collections.Counter(pool["source"])
    print(
        f"      pool: {len(pool)} rows from {len(sources)} sources; targets: "
        + ", ".join(f"{k} ({len(v)} rows, {len(set(v['subtask']))} subtasks)" for k, v in targets.items())
    )

    print(
        f"[2/4] Warmup: LoRA r={config.lora_r} on {config.warmup_fraction:.0%} of the pool, {config.epochs} "
        "epochs, one checkpoint per epoch...",
        flush=True,
    )
    warmup_dir = out / "warmup"
    warmup_config = WarmupConfig(
        fraction=config.warmup_fraction,
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        per_device_batch_size=4,
        gradient_accumulation_steps=1,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        max_length=config.max_length,
        seed=config.seed,
        logging_steps=1,
    )
    if any(warmup_dir.glob("checkpoint-*")):
        _check_reused_warmup(warmup_dir, warmup_config, config.pool_size)
    else:
        warmup(model_path, pool, warmup_dir, warmup_config, disable_tqdm=True)
        write_json_atomic(
            warmup_dir / DEMO_WARMUP_FILE, {"warmup": warmup_config.to_dict(), "pool_size": config.pool_size}
        )
    t_warm = time.perf_counter()

    print(f"[3/4] Gradient datastore (Adam updates, sparse JL to d={config.dim}) and target gradients...", flush=True)
    selector = LESSSelector(
        warmup_dir,
        None,  # <warmup>/less_datastore/<key>: other --dim/--batch_size/--max_length get a datastore of their own
        GradientConfig(batch_size=config.batch_size, max_length=config.max_length),
        ProjectionConfig(dims=[config.dim], seed=config.seed),
    )
    selected = selector.select(pool, targets, fraction=config.fraction)
    t_sel = time.perf_counter()

    print("[4/4] Selected subsets:", flush=True)
    selector.save(out / "selected", pool_spec="less_hf.assets.load_pool")
    for name, subset in selected.items():
        path = out / "selected" / name
        mix = collections.Counter(subset["source"])
        print(f"\n== {name}: {len(subset)} of {len(pool)} rows → {path}")
        print("   source mix: " + ", ".join(f"{s} {c}" for s, c in mix.most_common()))
        for row in subset.select(range(min(config.show, len(subset)))):
            print(f"   {row['less_score']:+.4f}  [{row['source']}]  {_snippet(row)}")
    if config.report:
        from .output.hub import export_selection
        from .output.report import write_report

        paths = write_report(out / "selected")
        export = export_selection(out / "selected", out / "hub_export")
        print(f"\nReport: {paths['html']} (open it in a browser); Hub-ready export: {export}/")
    total = time.perf_counter() - started
    print(
        f"\nDone in {total:.0f} s (warmup {t_warm - started:.0f} s incl. assets, datastore + selection "
        f"{t_sel - t_warm:.0f} s). Outputs in {out}/"
    )
    return selected
