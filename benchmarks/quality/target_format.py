"""Does LESS's BBH result depend on the format of the target examples? A follow-up to the quality benchmark.

The built-in BBH validation rows (what the selectors see) are the task's chain-of-thought exemplars: a few-shot
prompt and a long rationale as the answer. The BBH test rows (what is evaluated, and what is planted in the pool)
are answer-only: the question, then ``Yes`` or ``(B)``. LESS matches gradients, so a CoT target asks for rows
whose training signal resembles a long rationale. This script keeps everything of a finished
``benchmarks/quality/run.py --preset P`` run (pool, warmup, datastore, evaluation rows, fine-tuning) and swaps
only BBH's target rows for answer-only ones (BBH test rows disjoint from the planted and the evaluated rows):

    python benchmarks/quality/target_format.py --preset cpu

It prints LESS's precision@k on the planted BBH rows and the fine-tuned gold loss / accuracy for each seed, next
to the CoT-target figures of the main run, and writes ``benchmarks/results/quality_<preset>_bbh_format.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.quality import run as quality  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(quality.PRESETS), default="cpu")
    parser.add_argument("--work-dir", default="quality_work")
    parser.add_argument("--results-dir", default=str(Path(__file__).resolve().parents[1] / "results"))
    args = parser.parse_args()
    cfg = dict(quality.PRESETS[args.preset])
    from transformers import AutoTokenizer

    from less_hf import GradientConfig, LESSSelector, ProjectionConfig
    from less_hf.assets import load_target, smollm2_path

    work = Path(args.work_dir) / args.preset
    if not any((work / "warmup").glob("checkpoint-*")):
        raise SystemExit(f"No warmup under {work}: run benchmarks/quality/run.py --preset {args.preset} first.")
    model_path = str(smollm2_path())
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    split = {t: quality.planted_split(t, cfg) for t in quality.TARGETS}
    pool = quality.build_pool(cfg, {t: s[0] for t, s in split.items()})
    used = cfg["planted"] + cfg["test_rows"]  # planted rows, then evaluated rows, in planted_split's order
    test = load_target("bbh", "test").shuffle(seed=1234)
    answer_only = test.select(range(used, min(len(test), used + cfg["target_rows"])))
    cot = load_target("bbh", "validation").shuffle(seed=0).select(range(cfg["target_rows"]))
    lengths = {
        name: [len(tokenizer(r["messages"][-1]["content"])["input_ids"]) for r in rows]
        for name, rows in (("cot", cot), ("answer_only", answer_only))
    }
    quality.log(
        "answer tokens (median): "
        + ", ".join(
            f"{n} {int(np.median(v))} ({np.mean(np.asarray(v) > cfg['max_length']):.0%} over max_length)"
            for n, v in lengths.items()
        )  # fmt: skip
    )

    selector = LESSSelector(
        work / "warmup", work / "datastore",
        GradientConfig(max_length=cfg["max_length"], batch_size=cfg["grad_batch"]),
        ProjectionConfig(dims=[cfg["dim"]], seed=0),
    )  # fmt: skip
    chosen = selector.select(pool, {"bbh": answer_only}, fraction=quality.FRACTION)["bbh"]
    precision = quality.precision_at_k(selector.scores_["bbh"], pool["source"], "bbh")
    sources = {str(s): int(c) for s, c in zip(*np.unique(chosen["source"], return_counts=True))}
    quality.log(f"answer-only targets: precision@k {precision:.2f}; selected sources {sources}")

    results = []
    for seed in range(cfg["seeds"]):
        started = time.perf_counter()
        model = quality.finetune(model_path, chosen, work / "train_format", seed, cfg["epochs"], cfg)
        results.append(quality.evaluate(model, tokenizer, split["bbh"][1], 2 * cfg["max_length"]))
        quality.log(f"seed {seed}: {results[-1]} ({time.perf_counter() - started:.0f} s)")

    main_run = json.loads((Path(args.results_dir) / f"quality_{args.preset}.json").read_text())
    lines = [
        f"# BBH: LESS with chain-of-thought vs answer-only target rows ({args.preset} preset)", "",
        f"Same pool, warmup, datastore, evaluation rows and fine-tuning as `quality_{args.preset}.md`; only BBH's "
        "target rows differ.", "",
        "| BBH target rows | median answer tokens | LESS precision@k | gold-answer loss ↓ | accuracy (%) ↑ |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for name, prec, runs in (
        ("CoT exemplars (built-in validation)", main_run["precision_at_k"]["less"]["bbh"],
         main_run["results"]["less"]["bbh"]),
        ("answer-only (held-out test rows)", precision, results),
    ):  # fmt: skip
        loss = np.asarray([r["gold_loss"] for r in runs])
        acc = np.asarray([r["accuracy"] for r in runs]) * 100
        key = "cot" if name.startswith("CoT") else "answer_only"
        lines.append(f"| {name} | {int(np.median(lengths[key]))} | {prec:.2f} | {loss.mean():.3f} ± {loss.std():.3f} "
                     f"| {acc.mean():.1f} ± {acc.std():.1f} |")  # fmt: skip
    for m in ("random", "bm25", "rds"):
        runs = main_run["results"][m]["bbh"]
        loss = np.asarray([r["gold_loss"] for r in runs])
        acc = np.asarray([r["accuracy"] for r in runs]) * 100
        lines.append(f"| ({m}, for reference) | | {main_run['precision_at_k'][m]['bbh']:.2f} | {loss.mean():.3f} ± "
                     f"{loss.std():.3f} | {acc.mean():.1f} ± {acc.std():.1f} |")  # fmt: skip
    lines += ["", f"Selected sources with answer-only targets: {sources}", ""]
    report = "\n".join(lines)
    (Path(args.results_dir) / f"quality_{args.preset}_bbh_format.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
