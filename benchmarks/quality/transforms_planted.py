"""Which Adam convention finds the planted rows? LESS's four pool transforms on a quality preset's pool, no fine-tune.

The quality benchmark's full answer (gold loss after fine-tuning on each selection) costs an hour or more on a CPU;
this is its cheap half: the same pool with each target's own rows planted in it, one warmup, one gradient pass for
all four transforms (``adam`` = m̂/√(v̂+ε), ε inside the root as in the seeds' formula; ``adam_reference`` = the
princeton-nlp/LESS code: no bias correction, ε inside; ``adam_torch`` = torch's AdamW step m̂/(√v̂+ε); ``sgd`` =
the plain gradient), then per target: precision@k at ranking the planted rows first, and each transform's Spearman
and top-5% overlap against ``adam``.

    python benchmarks/quality/transforms_planted.py --preset cpu     # ~15 min on 2 CPU cores

Writes ``benchmarks/results/quality_transforms_<preset>.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.common import spearman  # noqa: E402
from benchmarks.quality.run import (  # noqa: E402
    FRACTION,
    PRESETS,
    TARGETS,
    build_pool,
    make_selector,
    planted_split,
    precision_at_k,
)
from benchmarks.quality.shared_pass import SharedPassFeaturizer  # noqa: E402

TRANSFORMS = ("adam", "adam_reference", "adam_torch", "sgd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smoke")
    parser.add_argument("--work-dir", default="quality_work")
    parser.add_argument("--results-dir", default=str(Path(__file__).resolve().parents[1] / "results"))
    args = parser.parse_args()
    from less_hf import GradientConfig, ProjectionConfig, WarmupConfig, find_checkpoints, warmup
    from less_hf.assets import load_target, smollm2_path
    from less_hf.projection import from_config

    started = time.perf_counter()
    cfg = dict(PRESETS[args.preset])
    model_path = str(smollm2_path())
    split = {t: planted_split(t, cfg) for t in TARGETS}
    pool = build_pool(cfg, {t: s[0] for t, s in split.items()})
    fewshot = {}
    for t in TARGETS:  # as benchmarks/quality/run.py: what the selectors see of each target
        val = load_target(t, "validation")
        fewshot[t] = val.shuffle(seed=0).select(range(cfg["target_rows"])) if cfg["target_rows"] < len(val) else val
    k = max(1, round(FRACTION * len(pool)))
    work = Path(args.work_dir) / f"transforms-{args.preset}"
    warmup_dir = work / "warmup"
    if not any(warmup_dir.glob("checkpoint-*")):
        warmup(model_path, pool, warmup_dir, WarmupConfig(
            num_rows=max(8, k), epochs=cfg["warmup_epochs"], learning_rate=2e-5, per_device_batch_size=2,
            gradient_accumulation_steps=1, lora_r=cfg["warmup_r"], lora_alpha=4 * cfg["warmup_r"],
            max_length=cfg["max_length"], seed=0, logging_steps=1), disable_tqdm=True)  # fmt: skip
    shared = SharedPassFeaturizer(
        find_checkpoints(warmup_dir),
        GradientConfig(max_length=cfg["max_length"], batch_size=cfg["grad_batch"]),
        from_config(ProjectionConfig(dims=[cfg["dim"]], seed=0)),
        transforms=TRANSFORMS,
    )
    sources = list(pool["source"])
    scores = {}
    for transform in TRANSFORMS:
        method = "less" if transform == "adam" else f"less:{transform}"
        selector = make_selector(method, cfg, model_path, warmup_dir, work, shared)
        scores[transform] = selector.score(pool, fewshot)
        print(f"[{time.strftime('%H:%M:%S')}] {transform} scored", flush=True)

    def top(s: np.ndarray) -> set[int]:
        return set(np.argsort(-np.nan_to_num(s, neginf=-1e30), kind="stable")[:k].tolist())

    table = {
        tr: {
            t: {
                "precision_at_k": precision_at_k(scores[tr][t], sources, t),
                "spearman_vs_adam": spearman(scores[tr][t], scores["adam"][t]),
                "top5_overlap_vs_adam": len(top(scores[tr][t]) & top(scores["adam"][t])) / k,
            }
            for t in TARGETS
        }
        for tr in TRANSFORMS
    }
    seconds = time.perf_counter() - started
    planted = cfg["planted"]
    lines = [
        f"# LESS pool transforms on the planted check ({args.preset} preset, no fine-tune)",
        "",
        f"Pool {len(pool)} rows ({planted} of each target's test rows planted), k = {k} (5%) for the overlap, "
        f"precision@{planted} for the planted rows; warmup LoRA r={cfg['warmup_r']}, {cfg['warmup_epochs']} epochs, "
        f"d = {cfg['dim']}, {cfg['max_length']} tokens; {seconds:.0f} s. "
        "`python benchmarks/quality/transforms_planted.py --preset " + args.preset + "`.",
        "",
        "| transform | " + " | ".join(f"{t} precision@{planted}" for t in TARGETS) + " | "
        + " | ".join(f"{t} Spearman / top-5% overlap vs adam" for t in TARGETS) + " |",
        "|---|" + "---|" * (2 * len(TARGETS)),
    ]  # fmt: skip
    for tr in TRANSFORMS:
        row = table[tr]
        lines.append(
            f"| {tr} | "
            + " | ".join(f"{row[t]['precision_at_k']:.2f}" for t in TARGETS)
            + " | "
            + " | ".join(f"{row[t]['spearman_vs_adam']:.3f} / {row[t]['top5_overlap_vs_adam']:.2f}" for t in TARGETS)
            + " |"
        )
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"quality_transforms_{args.preset}.md").write_text("\n".join(lines) + "\n")
    (out / f"quality_transforms_{args.preset}.json").write_text(
        json.dumps({"settings": cfg, "k": k, "seconds": seconds, "table": table}, indent=2)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
