"""Small-scale replication of LESS's Tables 2 and 3: which selection method helps each target task?

For each target (MMLU, BBH, CommonsenseQA) and method (full pool, random, LESS, TSDS, BM25, DSIR, RDS) it LoRA
fine-tunes SmolLM2-135M-Instruct on the selection with TRL's SFTTrainer, then evaluates on the target's held-out
test rows: accuracy (choice by summed log-likelihood of each option as the assistant's answer) and the mean
per-token loss of the gold answer. Several seeds, mean ± std. A "planted relevance" check puts a slice of each
target's own rows (disjoint from its evaluation rows) in the pool and reports each method's precision@k at finding
them (k = rows planted; ranking by the method's score).

    python benchmarks/quality/run.py --preset smoke     # minutes: a check that everything runs
    python benchmarks/quality/run.py --preset cpu       # see README for the measured estimate (2 CPU cores)
    accelerate launch benchmarks/quality/run.py --preset full   # GPU: larger pool, more test rows
    accelerate launch benchmarks/quality/run.py --preset full --model meta-llama/Llama-3.2-1B-Instruct  # and model

Writes ``benchmarks/results/quality_<preset>.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.quality.evaluate import evaluate as evaluate_choices  # noqa: E402

PRESETS = {
    # pool rows (before planting), rows planted per target, test rows per target, few-shot rows per target, seeds,
    # seeds of the full-pool fine-tune, train epochs, max tokens, LESS warmup epochs and LoRA rank, projection dim,
    # fine-tune batch, per-example-gradient batch, epochs on the full pool
    "smoke": dict(pool=60, planted=2, test_rows=5, target_rows=6, seeds=1, full_seeds=1, epochs=1, max_length=64,
                  warmup_epochs=1, warmup_r=8, dim=1024, batch=4, grad_batch=8, full_epochs=1),
    "cpu": dict(pool=300, planted=10, test_rows=20, target_rows=30, seeds=3, full_seeds=1, epochs=1, max_length=128,
                warmup_epochs=2, warmup_r=128, dim=8192, batch=4, grad_batch=8, full_epochs=1),
    "full": dict(pool=35760, planted=50, test_rows=1000, target_rows=10_000, seeds=3, full_seeds=3, epochs=2,
                 max_length=512, warmup_epochs=4, warmup_r=128, dim=8192, batch=16, grad_batch=16, full_epochs=1),
}  # fmt: skip
TARGETS = ("mmlu", "bbh", "csqa")
METHODS = ("base", "full", "random", "less", "tsds", "bm25", "dsir", "rds")
SAMPLERS = ("random", "dsir", "tsds")  # methods whose selection depends on the seed
FRACTION = 0.05
UNITS = {"train_steps": 0, "train_s": 0.0, "eval_rows": 0, "eval_s": 0.0}  # measured unit costs
REFERENCE_EVAL = False  # --reference-eval: one full forward pass per option instead of the shared-prompt cache
LR = 2e-4  # LoRA on 5% of a small pool for a few steps: the paper's 2e-5 barely moves a 135M model in 4-30 steps


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def planted_split(name: str, cfg: dict):
    """A target's test split cut in two disjoint parts: rows planted in the pool, and the evaluation rows."""
    from less_hf.assets import load_target

    test = load_target(name, "test").shuffle(seed=1234)
    planted = test.select(range(cfg["planted"]))
    evaluation = test.select(range(cfg["planted"], min(len(test), cfg["planted"] + cfg["test_rows"])))
    return planted, evaluation


def build_pool(cfg: dict, planted: dict):
    from datasets import Dataset, concatenate_datasets

    from less_hf.assets import load_pool

    pool = load_pool(max_rows=cfg["pool"], seed=0)
    rows = [
        {"id": f"planted-{name}-{r['id']}", "source": f"planted-{name}", "messages": r["messages"]}
        for name, ds in planted.items()
        for r in ds
    ]
    return concatenate_datasets([pool, Dataset.from_list(rows).cast(pool.features)])


def lora_config():
    from peft import LoraConfig

    return LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )  # fmt: skip


def finetune(model_path: str, rows, out: Path, seed: int, epochs: int, cfg: dict):
    """LoRA fine-tune with SFTTrainer (prompt/completion, so only the answer is trained); returns the model."""
    from trl import SFTConfig, SFTTrainer

    data = rows.select_columns(["messages"]).map(
        lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]}, remove_columns=["messages"]
    )
    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(out), num_train_epochs=epochs, learning_rate=LR, per_device_train_batch_size=cfg["batch"],
        lr_scheduler_type="linear", warmup_steps=0, save_strategy="no", report_to=[], logging_steps=5,
        max_length=cfg["max_length"], seed=seed, bf16=cuda, use_cpu=not cuda, disable_tqdm=True,
        truncation_mode="keep_end",  # TRL's default cuts from the right and drops rows whose answer is cut away
        # no lr warmup: a ratio warmup gives a 1-6 step run a first step at lr 0
    )  # fmt: skip
    trainer = SFTTrainer(model=model_path, args=args, train_dataset=data, peft_config=lora_config())
    started = time.perf_counter()
    trainer.train()
    UNITS["train_steps"] += trainer.state.global_step
    UNITS["train_s"] += time.perf_counter() - started
    return trainer.model


def evaluate(model, tokenizer, test, max_length: int) -> dict:
    """Accuracy by log-likelihood of the options, and mean per-token loss of the gold answer (timed)."""
    started = time.perf_counter()
    result = evaluate_choices(model, tokenizer, test, max_length, reference=REFERENCE_EVAL)
    UNITS["eval_rows"] += len(test)
    UNITS["eval_s"] += time.perf_counter() - started
    return result


def precision_at_k(scores: np.ndarray, pool_sources: list[str], name: str) -> float:
    relevant = np.asarray([s == f"planted-{name}" for s in pool_sources])
    k = int(relevant.sum())
    top = np.argsort(-np.nan_to_num(scores, neginf=-1e30), kind="stable")[:k]
    return float(relevant[top].mean())


def make_selectors(cfg: dict, model_path: str, warmup_dir: Path, work: Path):
    from less_hf import (
        BM25Selector,
        DSIRSelector,
        GradientConfig,
        LESSSelector,
        ProjectionConfig,
        RandomSelector,
        RDSSelector,
        TSDSConfig,
        TSDSSelector,
    )  # fmt: skip

    grad = GradientConfig(max_length=cfg["max_length"], batch_size=cfg["grad_batch"])
    proj = ProjectionConfig(dims=[cfg["dim"]], seed=0)
    return {
        "random": RandomSelector(),
        "less": LESSSelector(warmup_dir, work / "datastore", grad, proj),
        "tsds": TSDSSelector(warmup_dir, TSDSConfig(), datastore_dir=work / "datastore", gradient_config=grad,
                             projection_config=proj),
        "bm25": BM25Selector(),
        "dsir": DSIRSelector(),
        "rds": RDSSelector(model_path, max_length=cfg["max_length"]),
    }  # fmt: skip


def summarize(results: dict, precision: dict, methods: list[str], preset: str, cfg: dict, meta: dict) -> str:
    lines = [f"# Quality benchmark ({preset} preset)", "", f"Settings: `{json.dumps(cfg)}`; {meta['note']}", ""]
    for metric, label in (("accuracy", "accuracy (%) ↑"), ("gold_loss", "gold-answer loss ↓")):
        lines += [f"## {label}, mean ± std over {cfg['seeds']} seed(s)", "", "| method | " + " | ".join(TARGETS)
                  + " |", "|---|" + "---|" * len(TARGETS)]  # fmt: skip
        for m in methods:
            cells = []
            for t in TARGETS:
                vals = np.asarray([r[metric] for r in results[m][t]]) * (100 if metric == "accuracy" else 1)
                cells.append(f"{vals.mean():.2f} ± {vals.std():.2f}" if len(vals) else "—")
            runs = len(results[m][TARGETS[0]])
            label = m if m == "base" or runs == cfg["seeds"] else f"{m} ({runs} seed{'s' * (runs > 1)})"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Planted relevance: precision@k (k = rows planted per target)", "",
              "| method | " + " | ".join(TARGETS) + " |", "|---|" + "---|" * len(TARGETS)]  # fmt: skip
    for m, per in precision.items():
        lines.append(f"| {m} | " + " | ".join(f"{per[t]:.2f}" for t in TARGETS) + " |")
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in meta["timings"].items()), ""]
    return "\n".join(lines)


def plot(results: dict, methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(methods)
    for ax, metric in zip(axes, ("accuracy", "gold_loss")):
        for i, m in enumerate(methods):
            vals = [np.asarray([r[metric] for r in results[m][t]]) for t in TARGETS]
            ax.bar(np.arange(len(TARGETS)) + i * width, [v.mean() for v in vals], width,
                   yerr=[v.std() for v in vals], label=m, capsize=2)  # fmt: skip
        ax.set_xticks(np.arange(len(TARGETS)) + width * (len(methods) - 1) / 2, TARGETS)
        ax.set_title(metric)
    axes[0].legend(ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def estimate(units: dict, timings: dict, cfg: dict, pool_rows: int) -> dict:
    """Seconds each preset should take, from this run's measured unit costs (train step, eval row, pool row)."""
    step = units["train_s"] / max(1, units["train_steps"])
    row_eval = units["eval_s"] / max(1, units["eval_rows"])
    datastore_row = timings.get("select_less", 0.0) / max(1, pool_rows * cfg["warmup_epochs"])
    rds_row = timings.get("select_rds", 0.0) / max(1, pool_rows)
    out = {}
    for name, p in PRESETS.items():
        n = p["pool"] + 3 * p["planted"]
        k = max(1, round(FRACTION * n))
        steps = 6 * 3 * p["seeds"] * math.ceil(k / p["batch"]) * p["epochs"]  # 6 selections x 3 targets
        steps += p["full_seeds"] * math.ceil(n / p["batch"]) * p["full_epochs"]  # full pool
        steps += math.ceil(max(8, k) / 2) * p["warmup_epochs"]  # LESS warmup (batch 2)
        evals = (6 * p["seeds"] + p["full_seeds"] + 1) * 3 * p["test_rows"]
        scale = (p["max_length"] / cfg["max_length"]) * (p["batch"] / cfg["batch"])
        out[name] = (steps * step * scale + evals * row_eval + n * p["warmup_epochs"] * datastore_row
                     + n * rds_row)  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smoke")
    parser.add_argument("--work-dir", default="quality_work")
    parser.add_argument("--results-dir", default=str(Path(__file__).resolve().parents[1] / "results"))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--model", default=None,
                        help="model folder or Hub id to warm up, select with and fine-tune (default: the built-in "
                        "SmolLM2-135M-Instruct); needs a chat template and q/k/v/o_proj layers")  # fmt: skip
    parser.add_argument("--reference-eval", action="store_true",
                        help="score each option with its own full forward pass (slower; the shared-prompt cached "
                        "path is checked against it in tests/test_quality_eval.py)")  # fmt: skip
    args = parser.parse_args()
    global REFERENCE_EVAL
    REFERENCE_EVAL = args.reference_eval
    cfg = dict(PRESETS[args.preset])
    methods = args.methods.split(",")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from less_hf import WarmupConfig, warmup
    from less_hf.assets import load_target, smollm2_path

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    work = Path(args.work_dir) / run_name(args)
    model_path = args.model or str(smollm2_path())
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    split = {t: planted_split(t, cfg) for t in TARGETS}
    pool = build_pool(cfg, {t: s[0] for t, s in split.items()})
    fewshot = {}
    for t in TARGETS:  # few-shot (validation) rows: what the selectors see of each target
        val = load_target(t, "validation")
        fewshot[t] = val.shuffle(seed=0).select(range(cfg["target_rows"])) if cfg["target_rows"] < len(val) else val
    k = max(1, round(FRACTION * len(pool)))
    log(
        f"pool {len(pool)} rows ({cfg['planted']} planted per target), select {k}; few-shot rows "
        + ", ".join(f"{t} {len(d)}" for t, d in fewshot.items())
        + f"; test rows {cfg['test_rows']} per target"
    )

    warmup_dir = work / "warmup"
    if not any(warmup_dir.glob("checkpoint-*")):
        warmup(model_path, pool, warmup_dir, WarmupConfig(
            num_rows=max(8, k), epochs=cfg["warmup_epochs"], learning_rate=2e-5, per_device_batch_size=2,
            gradient_accumulation_steps=1, lora_r=cfg["warmup_r"], lora_alpha=4 * cfg["warmup_r"],
            max_length=cfg["max_length"], seed=0, logging_steps=1), disable_tqdm=True)  # fmt: skip
    timings["less_warmup"] = time.perf_counter() - t0

    selectors = make_selectors(cfg, model_path, warmup_dir, work)
    selections: dict[str, dict] = {}
    precision: dict[str, dict] = {}
    for m in [m for m in methods if m in selectors]:
        t = time.perf_counter()
        for seed in range(cfg["seeds"]):
            if seed > 0 and m not in SAMPLERS:  # a deterministic selection: the seeds differ only in training
                selections[m][seed] = selections[m][0]
                continue
            chosen = selectors[m].select(pool, fewshot, fraction=FRACTION, seed=seed)
            selections.setdefault(m, {})[seed] = chosen
            if seed == 0:
                precision[m] = {name: precision_at_k(selectors[m].scores_[name], pool["source"], name)
                                for name in TARGETS}  # fmt: skip
        timings[f"select_{m}"] = time.perf_counter() - t
        log(f"{m}: selected; precision@k {precision[m]}")
        if m == "tsds":
            log(f"tsds stats: {selectors[m].stats_}")

    results = {m: {t: [] for t in TARGETS} for m in methods}
    for seed in range(cfg["seeds"]):
        for m in methods:
            t = time.perf_counter()
            if m == "base":
                if seed == 0:
                    model = AutoModelForCausalLM.from_pretrained(model_path)
                    for name in TARGETS:
                        results[m][name].append(evaluate(model, tokenizer, split[name][1], 2 * cfg["max_length"]))
            elif m == "full":
                if seed >= cfg["full_seeds"]:  # 20x the cost of a 5% fine-tune: fewer seeds in the cpu preset
                    continue
                model = finetune(model_path, pool, work / "train", seed, cfg["full_epochs"], cfg)
                for name in TARGETS:
                    results[m][name].append(evaluate(model, tokenizer, split[name][1], 2 * cfg["max_length"]))
            else:
                for name in TARGETS:
                    model = finetune(model_path, selections[m][seed][name], work / "train", seed, cfg["epochs"], cfg)
                    results[m][name].append(evaluate(model, tokenizer, split[name][1], 2 * cfg["max_length"]))
            timings[f"train_eval_{m}"] = timings.get(f"train_eval_{m}", 0.0) + time.perf_counter() - t
            log(f"seed {seed} {m}: " + ", ".join(f"{n} {results[m][n][-1]}" for n in TARGETS if results[m][n]))
            write_outputs(args, cfg, results, precision, methods, timings, len(pool), k)
    shutil.rmtree(work / "train", ignore_errors=True)
    timings["total"] = time.perf_counter() - t0
    report = write_outputs(args, cfg, results, precision, methods, timings, len(pool), k)
    print(report)
    per_run = {m: timings.get(f"train_eval_{m}", math.nan) / max(1, cfg["seeds"]) for m in methods}
    log(f"per-seed train+eval seconds: {per_run}")
    log(f"unit costs: {UNITS}")
    guess = estimate(UNITS, timings, cfg, len(pool))
    log("estimated duration on this machine (s), from these unit costs: " + json.dumps(guess))


def run_name(args) -> str:
    """``<preset>``, or ``<preset>-<model folder name>`` with ``--model`` (its own work dir and result files)."""
    return args.preset if not args.model else f"{args.preset}-{Path(args.model).name}"


def write_outputs(args, cfg, results, precision, methods, timings, n_pool: int, k: int) -> str:
    """Write the table, JSON and plot (called after every method, so a cut-short run keeps what it measured)."""
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch every process evaluates; one writes
        return ""
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"timings": timings, "note": f"pool {n_pool} rows, k = {k} (5%), lr {LR}, LoRA r=16 on q,k,v,o; "
            f"{torch.get_num_threads()} CPU threads, cuda={torch.cuda.is_available()}"}  # fmt: skip
    done = [m for m in methods if all(results[m][t] for t in TARGETS)]
    report = summarize(results, precision, done, run_name(args), cfg, meta)
    (out / f"quality_{run_name(args)}.md").write_text(report)
    record = {"preset": args.preset, "model": args.model or "SmolLM2-135M-Instruct (built-in)", "config": cfg,
              "results": results, "precision_at_k": precision, **meta}  # fmt: skip
    (out / f"quality_{run_name(args)}.json").write_text(json.dumps(record, indent=1))
    if done:
        plot(results, done, out / f"quality_{run_name(args)}.png")
    return report


if __name__ == "__main__":
    main()
