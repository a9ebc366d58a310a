"""Small-scale replication of LESS's Tables 2 and 3: which selection method helps each target task?

For each target (MMLU, BBH, CommonsenseQA) and method (random, LESS and its pool transforms, BM25, RDS+ per task
and round-robin across the targets, and optionally TSDS, DSIR, RDS, longest, the full pool) it LoRA fine-tunes
SmolLM2-135M-Instruct on the selection with TRL's SFTTrainer (less_hf.evaluation.finetune), then evaluates on the
target's held-out test rows (less_hf.evaluation.evaluate): accuracy (choice by summed log-likelihood of each option
as the assistant's answer) and the mean per-token loss of the gold answer. Cells are mean ± SE over seeds and test
rows, and each method is marked as distinguishable from the best or not (within 2 SE, paired on the same rows).
A "planted relevance" check puts a slice of each target's own rows (disjoint from its evaluation rows) in the pool
and reports each method's precision@k at finding them (k = rows planted; ranking by the method's score).

The four LESS pool transforms (``less`` = ``adam``, the seeds' formula; ``less:adam_reference``,
``less:adam_torch``, ``less:sgd``) share one gradient pass (benchmarks/quality/shared_pass.py): each gets its own
datastore with the bytes a separate build would write, at the cost of one build.

    python benchmarks/quality/run.py --preset smoke     # minutes: a check that everything runs
    python benchmarks/quality/run.py --preset cpu       # ~1 hour on 2 quiet CPU cores (see the README)
    accelerate launch benchmarks/quality/run.py --preset full   # GPU: larger pool, more test rows
    accelerate launch benchmarks/quality/run.py --preset full --model meta-llama/Llama-3.2-1B-Instruct  # and model

Writes ``benchmarks/results/quality_<preset>.{md,json,png}`` after every method (a run cut short keeps what it
measured; methods run in the order given).
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
from benchmarks.common import spearman  # noqa: E402
from benchmarks.quality.shared_pass import SharedPassFeaturizer  # noqa: E402
from less_hf.evaluation import FinetuneConfig, difference_se, distinguishable_from_best, mean_se  # noqa: E402
from less_hf.evaluation import evaluate as evaluate_heldout  # noqa: E402
from less_hf.evaluation import finetune as finetune_lora  # noqa: E402

PRESETS = {
    # pool rows (before planting), rows planted per target, test rows per target, few-shot rows per target, seeds,
    # train epochs, max tokens, LESS warmup epochs and LoRA rank, projection dim, fine-tune batch,
    # per-example-gradient batch, epochs of the (optional) full-pool fine-tune
    "smoke": dict(pool=60, planted=2, test_rows=5, target_rows=6, seeds=1, epochs=1, max_length=64,
                  warmup_epochs=1, warmup_r=8, dim=1024, batch=4, grad_batch=8, full_epochs=1),
    "cpu": dict(pool=200, planted=10, test_rows=200, target_rows=30, seeds=1, epochs=1, max_length=128,
                warmup_epochs=2, warmup_r=128, dim=8192, batch=4, grad_batch=8, full_epochs=1),
    "full": dict(pool=35760, planted=50, test_rows=1000, target_rows=10_000, seeds=3, epochs=2,
                 max_length=512, warmup_epochs=4, warmup_r=128, dim=8192, batch=16, grad_batch=16, full_epochs=1),
}  # fmt: skip
TARGETS = ("mmlu", "bbh", "csqa")
TRANSFORM_VARIANTS = ("less:adam_reference", "less:adam_torch", "less:sgd")  # LESS with another pool transform
METHODS = ("base", "random", "less", "bm25", "rds_plus", "rds_plus@round_robin", *TRANSFORM_VARIANTS,
           "rds", "tsds", "dsir", "longest")  # fmt: skip
"""Every method the benchmark knows, in the order it runs them (a run cut short keeps the first ones)."""
DEFAULT_METHODS = {
    "smoke": METHODS,
    # the model without fine-tuning last: a reference, not a contender (the preset's ~1 h is mostly evaluation)
    "cpu": (
        "random",
        "less",
        "bm25",
        "rds_plus",
        "less:adam_torch",
        "less:adam_reference",
        "less:sgd",
        "rds_plus@round_robin",
        "base",
    ),
    "full": ("base", "full", *METHODS[1:]),
}
SAMPLERS = ("random", "dsir", "tsds")  # methods whose selection depends on the seed
FRACTION = 0.05
FAILED: dict[str, str] = {}  # method -> error, for a method that failed (the run goes on with the others)
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


def finetune(model_path: str, rows, out: Path, seed: int, epochs: int, cfg: dict):
    """LoRA fine-tune with SFTTrainer (less_hf.evaluation.finetune: answer-only loss, r=16 on q,k,v,o, linear lr, no
    lr warmup); returns the model and counts its steps and seconds in UNITS."""
    config = FinetuneConfig(epochs=epochs, learning_rate=LR, batch_size=cfg["batch"], max_length=cfg["max_length"])
    model, stats = finetune_lora(model_path, rows, out, seed, config)
    UNITS["train_steps"] += stats["steps"]
    UNITS["train_s"] += stats["seconds"]
    return model


def evaluate(model, tokenizer, test, max_length: int) -> dict:
    """Gold-answer loss and option accuracy per row and on average (less_hf.evaluation.evaluate), timed."""
    started = time.perf_counter()
    result = evaluate_heldout(model, tokenizer, test, max_length, reference=REFERENCE_EVAL)
    UNITS["eval_rows"] += len(test)
    UNITS["eval_s"] += time.perf_counter() - started
    return result


def precision_at_k(scores: np.ndarray, pool_sources: list[str], name: str) -> float:
    relevant = np.asarray([s == f"planted-{name}" for s in pool_sources])
    k = int(relevant.sum())
    top = np.argsort(-np.nan_to_num(scores, neginf=-1e30), kind="stable")[:k]
    return float(relevant[top].mean())


def split_method(method: str) -> tuple[str, str, str]:
    """``"less:adam_torch"`` → (selector name, LESS transform, policy); ``"rds_plus@round_robin"`` → policy."""
    name, _, policy = method.partition("@")
    name, _, transform = name.partition(":")
    return name, transform or "adam", policy or "per_task"


def make_selector(method: str, cfg: dict, model_path: str, warmup_dir: Path, work: Path, shared):
    from less_hf import SELECTORS, GradientConfig, LESSSelector, ProjectionConfig, TSDSConfig

    name, transform, _ = split_method(method)
    grad = GradientConfig(max_length=cfg["max_length"], batch_size=cfg["grad_batch"], optimizer_transform=transform)
    proj = ProjectionConfig(dims=[cfg["dim"]], seed=0)
    if name == "less":
        selector = LESSSelector(warmup_dir, work / f"datastore-{transform}", grad, proj)
        selector._featurizer = shared  # one gradient pass for every transform (benchmarks/quality/shared_pass.py)
        return selector
    if name == "tsds":
        return SELECTORS["tsds"](warmup_dir, TSDSConfig(), datastore_dir=work / "datastore-adam", gradient_config=grad,
                                 projection_config=proj)  # fmt: skip
    if name in ("rds", "rds_plus"):
        return SELECTORS[name](model_path, max_length=cfg["max_length"])
    if name == "longest":
        return SELECTORS[name](model_path)
    return SELECTORS[name]()


def cell(runs: list[dict], metric: str) -> list[list[float]]:
    """``[seed][row]`` values of a metric (gold loss per row, or 0/1 correct per row)."""
    key = "gold_losses" if metric == "gold_loss" else "correct"
    return [r[key] for r in runs]


def summarize(results: dict, precision: dict, methods: list[str], preset: str, cfg: dict, meta: dict) -> str:
    seeds = cfg["seeds"]
    rows = cfg["test_rows"]
    noise = (f"SE over {seeds} fine-tune seeds and the {rows} test rows" if seeds > 1
             else f"SE over the {rows} test rows (1 fine-tune seed: seed-to-seed noise not included)")  # fmt: skip
    lines = [f"# Quality benchmark ({preset} preset)", "", f"Settings: `{json.dumps(cfg)}`; {meta['note']}", "",
             f"Cells: mean ± {noise}. **bold**: the best method on that target (base excluded); ≈: within 2 SE "
             "of the best (not distinguishable: the SE of the difference is paired on the same test rows); no mark: "
             "worse than the best by more than 2 SE.", ""]  # fmt: skip
    contenders = [m for m in methods if m != "base"]
    for metric, label in (("gold_loss", "gold-answer loss ↓"), ("accuracy", "accuracy (%) ↑")):
        scale = 100 if metric == "accuracy" else 1
        lines += [f"## {label}", "", "| method | " + " | ".join(TARGETS) + " |", "|---|" + "---|" * len(TARGETS)]
        verdicts = {}
        for t in TARGETS:
            if contenders:
                verdicts[t] = distinguishable_from_best({m: cell(results[m][t], metric) for m in contenders},
                                                        higher_is_better=metric == "accuracy")  # fmt: skip
        for m in methods:
            cells = []
            for t in TARGETS:
                mean, se = mean_se(cell(results[m][t], metric))
                text = f"{scale * mean:.{1 if scale > 1 else 3}f} ± {scale * se:.{1 if scale > 1 else 3}f}"
                if t in verdicts and m in verdicts[t][1]:
                    best, gaps = verdicts[t]
                    text = f"**{text}**" if m == best else (f"≈ {text}" if gaps[m]["tied"] else text)
                cells.append(text)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
        if "random" in contenders:
            for t in TARGETS:
                best = verdicts[t][0]
                if best == "random":
                    lines.append(f"- {t}: random is the best method.")
                    continue
                gap, se = difference_se(cell(results[best][t], metric), cell(results["random"][t], metric))
                sign = -1 if metric == "gold_loss" else 1
                z = sign * gap / se if se > 0 else math.inf
                verdict = f"{z:.1f} SE {'better' if z > 0 else 'worse'}" + (" — more than 2 SE" if z > 2 else "")
                lines.append(f"- {t}: best {best} vs random: Δ = {scale * gap:+.3f} ± {scale * se:.3f}, {verdict}")
            lines.append("")
    lines += ["## Planted relevance: precision@k (k = rows planted per target)", "",
              "| method | " + " | ".join(TARGETS) + " |", "|---|" + "---|" * len(TARGETS)]  # fmt: skip
    for m, per in precision.items():
        lines.append(f"| {m} | " + " | ".join(f"{per[t]:.2f}" for t in TARGETS) + " |")
    if meta.get("transforms"):
        lines += ["", "## LESS pool transforms: how far apart are their rankings?", "",
                  "Spearman correlation of each transform's pool scores with `adam`'s, and the share of `adam`'s "
                  "selection it also selects, per target.", "",
                  "| transform | " + " | ".join(TARGETS) + " |", "|---|" + "---|" * len(TARGETS)]  # fmt: skip
        for m, per in meta["transforms"].items():
            lines.append(f"| {m} | " + " | ".join(f"ρ {per[t]['spearman']:.2f}, overlap {per[t]['overlap']:.2f}"
                                                 for t in TARGETS) + " |")  # fmt: skip
    if FAILED:
        lines += ["", "Not run or failed (not in the tables): " + "; ".join(f"{m}: {e}" for m, e in FAILED.items())]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in meta["timings"].items()), ""]
    return "\n".join(lines)


def plot(results: dict, methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    width = 0.8 / len(methods)
    for ax, metric in zip(axes, ("gold_loss", "accuracy")):
        for i, m in enumerate(methods):
            stats = [mean_se(cell(results[m][t], metric)) for t in TARGETS]
            ax.bar(np.arange(len(TARGETS)) + i * width, [v for v, _ in stats], width,
                   yerr=[2 * se for _, se in stats], label=m, capsize=2)  # fmt: skip
        ax.set_xticks(np.arange(len(TARGETS)) + width * (len(methods) - 1) / 2, TARGETS)
        ax.set_title(("gold-answer loss ↓" if metric == "gold_loss" else "accuracy ↑") + " (± 2 SE)")
    axes[0].legend(ncol=2, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smoke")
    parser.add_argument("--work-dir", default="quality_work")
    parser.add_argument("--results-dir", default=str(Path(__file__).resolve().parents[1] / "results"))
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated, in run order (default: the preset's). Known: {', '.join(METHODS)}, "
                        "full (fine-tune on the whole pool)")  # fmt: skip
    parser.add_argument("--model", default=None,
                        help="model folder or Hub id to warm up, select with and fine-tune (default: the built-in "
                        "SmolLM2-135M-Instruct); needs a chat template and q/k/v/o_proj layers")  # fmt: skip
    parser.add_argument("--reference-eval", action="store_true",
                        help="score each option with its own full forward pass (slower; the shared-prompt cached "
                        "path is checked against it in tests/test_quality_eval.py)")  # fmt: skip
    parser.add_argument("--stop-by", default=None, metavar="HH:MM",
                        help="UTC time by which the run must end: a method whose expected duration (the mean of the "
                        "methods run so far) would pass it is skipped, and the table says so")  # fmt: skip
    args = parser.parse_args()
    global REFERENCE_EVAL
    REFERENCE_EVAL = args.reference_eval
    cfg = dict(PRESETS[args.preset])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from less_hf import SELECTORS, GradientConfig, WarmupConfig, find_checkpoints, warmup
    from less_hf.assets import load_target, smollm2_path
    from less_hf.projection import from_config
    from less_hf.selection.base import MODES

    methods = []
    for m in args.methods.split(",") if args.methods else DEFAULT_METHODS[args.preset]:
        name, _, policy = split_method(m)
        if m in ("base", "full") or (name in SELECTORS and policy in MODES):
            methods.append(m)
        else:
            log(f"skipping {m}: not available in this version of less_hf")
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
        + "; test rows " + ", ".join(f"{t} {len(split[t][1])}" for t in TARGETS)
        + f"; methods {methods}"
    )  # fmt: skip

    warmup_dir = work / "warmup"
    shared = None
    if any(split_method(m)[0] in ("less", "tsds") for m in methods):
        if not any(warmup_dir.glob("checkpoint-*")):
            warmup(model_path, pool, warmup_dir, WarmupConfig(
                num_rows=max(8, k), epochs=cfg["warmup_epochs"], learning_rate=2e-5, per_device_batch_size=2,
                gradient_accumulation_steps=1, lora_r=cfg["warmup_r"], lora_alpha=4 * cfg["warmup_r"],
                max_length=cfg["max_length"], seed=0, logging_steps=1), disable_tqdm=True)  # fmt: skip
        timings["less_warmup"] = time.perf_counter() - t0
        from less_hf import ProjectionConfig

        transforms = tuple(dict.fromkeys(split_method(m)[1] for m in methods if split_method(m)[0] == "less"))
        shared = SharedPassFeaturizer(
            find_checkpoints(warmup_dir), GradientConfig(max_length=cfg["max_length"], batch_size=cfg["grad_batch"]),
            from_config(ProjectionConfig(dims=[cfg["dim"]], seed=0)), transforms=transforms or ("adam",),
        )  # fmt: skip

    results: dict[str, dict[str, list]] = {m: {t: [] for t in TARGETS} for m in methods}
    precision: dict[str, dict] = {}
    pool_scores: dict[str, dict] = {}
    chosen_ids: dict[str, dict] = {}
    transform_stats: dict[str, dict] = {}
    failed = FAILED
    stop_by = None
    if args.stop_by:
        import datetime as dt

        hh, mm = (int(x) for x in args.stop_by.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        stop_by = time.time() + (now.replace(hour=hh, minute=mm, second=0) - now).total_seconds()
    for m in methods:
        spent = [v for key, v in timings.items() if key.startswith("method_") and key != "method_less"]
        if stop_by is not None and time.time() + (np.mean(spent) if spent else 0.0) > stop_by:
            failed[m] = f"skipped: not expected to finish by {args.stop_by} UTC (--stop-by)"
            log(f"{m} {failed[m]}")
            continue
        started = time.perf_counter()
        try:
            if m == "base":
                model = AutoModelForCausalLM.from_pretrained(model_path)
                for name in TARGETS:
                    results[m][name].append(evaluate(model, tokenizer, split[name][1], 2 * cfg["max_length"]))
            elif m == "full":
                for seed in range(cfg["seeds"]):
                    model = finetune(model_path, pool, work / "train", seed, cfg["full_epochs"], cfg)
                    for name in TARGETS:
                        results[m][name].append(evaluate(model, tokenizer, split[name][1], 2 * cfg["max_length"]))
            else:
                selector = make_selector(m, cfg, model_path, warmup_dir, work, shared)
                policy = split_method(m)[2]
                selection = None
                for seed in range(cfg["seeds"]):
                    if selection is None or split_method(m)[0] in SAMPLERS:
                        chosen = selector.select(pool, fewshot, fraction=FRACTION, seed=seed, mode=policy)
                        selection = chosen if isinstance(chosen, dict) else {t: chosen for t in TARGETS}
                        if seed == 0:
                            timings[f"select_{m}"] = time.perf_counter() - started
                            if policy == "per_task":  # a union policy ranks with the same scores as its per-task row
                                precision[m] = {
                                    t: precision_at_k(selector.scores_[t], pool["source"], t) for t in TARGETS
                                }
                                pool_scores[m] = {t: np.asarray(selector.scores_[t]) for t in TARGETS}
                                chosen_ids[m] = {t: set(selection[t]["id"]) for t in TARGETS}
                            log(f"{m}: selected ({timings[f'select_{m}']:.0f} s); precision@k {precision.get(m)}")
                    trained = {}
                    for name in TARGETS:
                        key = id(selection[name])  # a union selection is fine-tuned once and evaluated on every target
                        if key not in trained:
                            trained[key] = finetune(
                                model_path, selection[name], work / "train", seed, cfg["epochs"], cfg
                            )
                        result = evaluate(trained[key], tokenizer, split[name][1], 2 * cfg["max_length"])
                        results[m][name].append({**result, "selected": len(selection[name])})
                    del trained
                if split_method(m)[0] == "less" and m != "less" and "less" in pool_scores:
                    transform_stats[m] = {t: {"spearman": spearman(pool_scores[m][t], pool_scores["less"][t]),
                                              "overlap": len(chosen_ids[m][t] & chosen_ids["less"][t]) / k}
                                          for t in TARGETS}  # fmt: skip
        except Exception as err:  # a long run keeps the other methods; the table names the failure
            import traceback

            traceback.print_exc()
            failed[m] = f"{type(err).__name__}: {err}"
            results[m] = {t: [] for t in TARGETS}
            log(f"{m} FAILED: {failed[m]}")
            continue
        timings[f"method_{m}"] = time.perf_counter() - started
        log(f"{m}: " + ", ".join(f"{n} loss {np.mean(cell(results[m][n], 'gold_loss')):.3f} acc "
                                 f"{np.mean(cell(results[m][n], 'accuracy')):.3f}" for n in TARGETS)
            + f" ({timings[f'method_{m}']:.0f} s)")  # fmt: skip
        write_outputs(args, cfg, results, precision, methods, timings, len(pool), k, transform_stats, shared)
    shutil.rmtree(work / "train", ignore_errors=True)
    timings["total"] = time.perf_counter() - t0
    report = write_outputs(args, cfg, results, precision, methods, timings, len(pool), k, transform_stats, shared)
    print(report)
    log(f"unit costs: {UNITS}; per train step {UNITS['train_s'] / max(1, UNITS['train_steps']):.2f} s, per test row "
        f"{UNITS['eval_s'] / max(1, UNITS['eval_rows']):.3f} s")  # fmt: skip


def run_name(args) -> str:
    """``<preset>``, or ``<preset>-<model folder name>`` with ``--model`` (its own work dir and result files)."""
    return args.preset if not args.model else f"{args.preset}-{Path(args.model).name}"


def write_outputs(args, cfg, results, precision, methods, timings, n_pool: int, k: int, transforms=None,
                  shared=None) -> str:  # fmt: skip
    """Write the table, JSON and plot (called after every method, so a cut-short run keeps what it measured)."""
    if int(os.environ.get("RANK", "0")) != 0:  # under accelerate launch every process evaluates; one writes
        return ""
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    replay = f"; LESS transforms from one gradient pass ({shared.replayed} replays)" if shared else ""
    meta = {"timings": timings, "transforms": transforms or {},
            "note": f"pool {n_pool} rows, k = {k} (5%), lr {LR}, LoRA r=16 on q,k,v,o; "
            f"{torch.get_num_threads()} CPU threads, cuda={torch.cuda.is_available()}{replay}; "
            "`@round_robin`: one selection of k rows for the three targets together (the targets take turns), "
            "fine-tuned once and evaluated on each target"}  # fmt: skip
    done = [m for m in methods if all(results[m][t] for t in TARGETS)]
    report = summarize(results, precision, done, run_name(args), cfg, meta)
    (out / f"quality_{run_name(args)}.md").write_text(report)
    record = {"preset": args.preset, "model": args.model or "SmolLM2-135M-Instruct (built-in)", "config": cfg,
              "results": results, "precision_at_k": precision, "unit_costs": UNITS, **meta}  # fmt: skip
    (out / f"quality_{run_name(args)}.json").write_text(json.dumps(record, indent=1))
    if done:
        plot(results, done, out / f"quality_{run_name(args)}.png")
    return report


if __name__ == "__main__":
    main()
