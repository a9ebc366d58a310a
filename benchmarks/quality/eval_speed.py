"""Side-by-side timing of the quality benchmark's option scorer: shared-prompt cache vs one full pass per option.

    python benchmarks/quality/eval_speed.py --rows 20

Scores the same held-out rows of each target with SmolLM2-135M-Instruct both ways, checks that the two agree, and
prints seconds per row for each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from less_hf.evaluation.choices import evaluate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20, help="test rows per target")
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from less_hf.assets import load_target, smollm2_path

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    model = AutoModelForCausalLM.from_pretrained(smollm2_path())
    for target in ("mmlu", "bbh", "csqa"):
        rows = load_target(target, "test").shuffle(seed=1234).select(range(args.rows))
        timed = {}
        for name, reference in (("cached", False), ("reference", True)):
            started = time.perf_counter()
            timed[name] = (evaluate(model, tokenizer, rows, args.max_length, reference), time.perf_counter() - started)
        (fast, t_fast), (slow, t_slow) = timed["cached"], timed["reference"]
        assert fast["accuracy"] == slow["accuracy"] and abs(fast["gold_loss"] - slow["gold_loss"]) < 1e-4, timed
        print(
            f"{target}: {args.rows} rows; cached {t_fast / args.rows:.3f} s/row, one pass per option "
            f"{t_slow / args.rows:.3f} s/row: {t_slow / t_fast:.1f}x; gold loss {fast['gold_loss']:.4f} both ways"
        )


if __name__ == "__main__":
    main()
