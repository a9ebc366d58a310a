"""`compare` and its statistics: end to end on the tiny model, the SE against a float64 loop, and bad input."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from datasets import Dataset

from less_hf import FinetuneConfig, GradientConfig, ProjectionConfig, compare
from less_hf.cli import main
from less_hf.errors import InputError
from less_hf.evaluation import difference_se, distinguishable_from_best, mean_se


def add_rows(start: int, n: int, options: bool) -> Dataset:
    """Addition questions unlike the pool's (numbers from 10 up), with 3 options when ``options``."""
    rows = []
    for i in range(start, start + n):
        a, b = 10 + i % 7, 3 + i // 7
        row = {"messages": [{"role": "user", "content": f"add {a} and {b} : sum ?"},
                            {"role": "assistant", "content": str(a + b)}]}  # fmt: skip
        if options:
            row["choices"] = [str(a + b), str(a + b + 1), str(a - b)]
            row["answer"] = 0
        rows.append(row)
    return Dataset.from_list(rows)


def tiny_settings() -> dict:
    return dict(
        finetune_config=FinetuneConfig(max_length=64, lora_r=4, lora_alpha=8, learning_rate=1e-3, batch_size=4),
        gradient_config=GradientConfig(max_length=64, batch_size=8),
        projection_config=ProjectionConfig(dims=[64]),
        eval_max_length=64,
    )


def test_compare_end_to_end(tmp_path, tiny_model_dir, pool, warmup_dir):
    targets, heldout = {"add": add_rows(0, 6, False)}, {"add": add_rows(6, 10, True)}
    record = compare(pool, targets, heldout, methods=["random", "bm25", "less"], fraction=0.25, seeds=2,
                     model=tiny_model_dir, output_dir=tmp_path, warmup_dir=warmup_dir, **tiny_settings())  # fmt: skip
    for name in ("compare.json", "compare.md", "compare.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "compare.json").read_text())["results"] == record["results"]
    summary, raw = record["results"]["add"], record["raw"]["add"]
    assert summary["rows"] == 10 and set(summary["methods"]) == {"base", "random", "bm25", "less"}
    for method in ("random", "bm25", "less"):
        runs = raw[method]
        assert [r["seed"] for r in runs] == [0, 1] and all(r["selected"] == 12 and r["steps"] == 3 for r in runs)
        cell = summary["methods"][method]
        values = np.asarray([r["gold_losses"] for r in runs])
        assert cell["gold_loss"]["mean"] == pytest.approx(values.mean())
        assert math.isfinite(cell["gold_loss"]["se"]) and cell["gold_loss"]["se"] > 0
        assert 0 <= cell["accuracy"]["mean"] <= 1
        # the fine-tune moved the model: its held-out loss differs from the model without fine-tuning
        assert not np.allclose(values[0], raw["base"][0]["gold_losses"])
    assert summary["best_gold_loss"] in summary["tied_with_best"]
    best = summary["best_gold_loss"]
    assert all(summary["methods"][m]["gold_loss"]["mean"] >= summary["methods"][best]["gold_loss"]["mean"]
               for m in ("random", "bm25", "less"))  # fmt: skip
    assert "not distinguishable" in (tmp_path / "compare.md").read_text() or len(summary["tied_with_best"]) == 1


def test_cli_compare_prints_the_table(tmp_path, tiny_model_dir, pool, capsys):
    pool.to_json(str(tmp_path / "pool.jsonl"))
    add_rows(0, 6, False).to_json(str(tmp_path / "dev.jsonl"))
    add_rows(6, 8, False).to_json(str(tmp_path / "test.jsonl"))
    code = main(["compare", "--pool", str(tmp_path / "pool.jsonl"), "--target", f"add={tmp_path / 'dev.jsonl'}",
                 "--heldout", f"add={tmp_path / 'test.jsonl'}", "--methods", "random,bm25", "--seeds", "1",
                 "--fraction", "0.25", "--model", tiny_model_dir, "--output_dir", str(tmp_path / "out"),
                 "--max_length", "32", "--lora_r", "4"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "add: 8 held-out rows, 1 seed(s)" in out and "bm25" in out and "Best gold loss:" in out
    record = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert record["results"]["add"]["methods"]["random"]["accuracy"] is None  # no options: gold loss only


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(methods=["random", "nope"]), "Unknown method 'nope'"),
        (dict(methods=["random@sideways"]), "Unknown multi-target policy"),
        (dict(heldout="other"), "no target named \\['other'\\]"),
        (dict(overlap="target"), "also in target 'add'"),
        (dict(overlap="pool"), "also in the pool"),
        (dict(seeds=0), "seeds must be"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, pool, change, message):
    targets, heldout = {"add": add_rows(0, 6, False)}, {"add": add_rows(6, 4, False)}
    if change.get("heldout"):
        heldout = {change["heldout"]: heldout["add"]}
    if change.get("overlap") == "target":
        heldout = {"add": add_rows(4, 4, False)}
    if change.get("overlap") == "pool":
        heldout = {"add": pool.select(range(3)).select_columns(["messages"])}
    kwargs = {k: v for k, v in change.items() if k in ("methods", "seeds")}
    with pytest.raises(InputError, match=message):
        compare(pool, targets, heldout, **{"methods": ["random"], **kwargs}, output_dir=tmp_path)


def test_cli_bad_method_is_one_error_line(tmp_path, pool, capsys):
    pool.to_json(str(tmp_path / "pool.jsonl"))
    add_rows(0, 4, False).to_json(str(tmp_path / "dev.jsonl"))
    add_rows(4, 4, False).to_json(str(tmp_path / "test.jsonl"))
    capsys.readouterr()  # the fixture files' progress bars
    code = main(["compare", "--pool", str(tmp_path / "pool.jsonl"), "--target", f"add={tmp_path / 'dev.jsonl'}",
                 "--heldout", f"dev={tmp_path / 'test.jsonl'}", "--methods", "random"])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Generating" not in line]
    assert code == 2 and len(err) == 1 and err[0].startswith("error: Every target needs a held-out set"), err


def loop_stats(a: list[list[float]], b: list[list[float]]) -> tuple[float, float, float, float]:
    """Obviously-correct float64 loops: the cell SE of ``a`` and the paired SE of ``a - b``."""

    def var(xs: list[float]) -> float:
        mean = sum(xs) / len(xs)
        return sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)

    def seed_means(m):
        return [sum(row) / len(row) for row in m]

    def row_means(m):
        return [sum(m[s][i] for s in range(len(m))) / len(m) for i in range(len(m[0]))]

    n = len(a[0])
    se_a = math.sqrt(var(seed_means(a)) / len(a) + var(row_means(a)) / n)
    diff_rows = [x - y for x, y in zip(row_means(a), row_means(b))]
    se_d = math.sqrt(var(seed_means(a)) / len(a) + var(seed_means(b)) / len(b) + var(diff_rows) / n)
    mean_a = sum(map(sum, a)) / (len(a) * n)
    mean_b = sum(map(sum, b)) / (len(b) * n)
    return mean_a, se_a, mean_a - mean_b, se_d


def test_stats_match_a_float64_loop():
    rng = random.Random(0)
    for _ in range(5):
        n, sa, sb = rng.randint(2, 30), rng.randint(2, 4), rng.randint(2, 4)
        a = [[rng.gauss(2, 1) for _ in range(n)] for _ in range(sa)]
        b = [[rng.gauss(2.3, 1) for _ in range(n)] for _ in range(sb)]
        mean_a, se_a, gap, se_d = loop_stats(a, b)
        assert mean_se(a) == pytest.approx((mean_a, se_a), rel=1e-12)
        assert difference_se(a, b) == pytest.approx((gap, se_d), rel=1e-12)


def test_distinguishable_from_best():
    rows = np.linspace(0, 1, 50)
    cells = {"good": [list(rows)], "same": [list(rows + 0.001)], "bad": [list(rows + 0.5)]}
    best, gaps = distinguishable_from_best(cells)
    assert best == "good" and gaps["good"]["tied"]
    # a constant per-row shift has zero paired row-variance: any shift is distinguishable with one seed
    assert not gaps["same"]["tied"] and not gaps["bad"]["tied"]
    noisy = {"a": [list(rows)], "b": [list(np.random.default_rng(0).permutation(rows) + 0.01)]}
    assert distinguishable_from_best(noisy)[1]["b"]["tied"]  # 0.01 apart, per-row differences of ±0.5
