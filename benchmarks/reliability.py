"""Reliability report: crash/resume trials, the bad-input catalogue and the determinism checks, as one table.

    python benchmarks/reliability.py [--random-kills 6] [--seed 0]

- Crash/resume: a real datastore build (tiny random Llama, a 2-epoch LoRA warmup, 16 pool rows, 2 checkpoints) runs
  in a subprocess and is SIGKILLed at named moments (watching its files) and at random times; the same command then
  resumes it. "Data lost" counts feature rows (and other files) whose bytes differ from an uninterrupted build.
- Bad input and the other cases: the tests of tests/test_bad_input.py, tests/test_reliability.py and the existing
  tests covering a case, run with pytest; each test asserts the clear error and that nothing half-written is left
  (the previous complete state intact), so a passing test counts as tried, passed, nothing lost.
- Determinism: two uninterrupted builds are compared byte for byte; 1 vs 2 processes is tests/test_distributed.py.

The table is printed and saved to benchmarks/results/reliability.md.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

# case name → pytest node ids covering it (a case passes when all its tests pass)
CATALOGUE = {
    "corrupted shard (checksum)": [
        "tests/test_reliability.py::test_corrupted_shard_is_caught_on_read_and_only_that_part_rebuilt",
        "tests/test_reliability.py::test_corrupted_valid_mask_is_caught",
    ],
    "truncated shard (size)": ["tests/test_reliability.py::test_truncated_shard_is_caught_on_open"],
    "second writer (lock), readers concurrent": [
        "tests/test_reliability.py::test_second_writer_fails_fast_and_readers_are_fine"
    ],
    "empty pool": [
        "tests/test_bad_input.py::test_empty_pool",
        "tests/test_selection.py::test_empty_pool_or_target_is_a_clear_error",
    ],
    "empty target set": [
        "tests/test_selection.py::test_empty_pool_or_target_is_a_clear_error",
        "tests/test_selection.py::test_budget_errors",
    ],
    "row with no loss token (empty/truncated completion)": [
        "tests/test_bad_input.py::test_fully_truncated_completion_has_no_loss",
        "tests/test_datastore.py::test_row_without_supervised_token_is_reported",
        "tests/test_datastore.py::test_target_without_any_supervised_row_is_refused",
        "tests/test_selection.py::test_rows_without_supervised_token_are_never_selected",
    ],
    "rows longer than max length (counted warning)": [
        "tests/test_bad_input.py::test_long_rows_are_truncated_with_a_counted_warning"
    ],
    "missing/unknown columns, bad values, unsupported file": [
        "tests/test_tokenization.py::test_tokenize_dataset_unknown_columns",
        "tests/test_bad_input.py::test_bad_row_values_name_the_row",
        "tests/test_cli.py::test_load_data_rejects_unknown_paths",
    ],
    "duplicate ids": ["tests/test_bad_input.py::test_duplicate_ids"],
    "non-Adam optimizer (warmup, optimizer file)": [
        "tests/test_capture.py::test_non_adam_optimizer_fails_at_train_start",
        "tests/test_capture.py::test_non_adam_optimizer_passed_to_trainer",
        "tests/test_bad_input.py::test_optimizer_file_of_a_non_adam_optimizer",
    ],
    "checkpoint with neither capture nor optimizer state": [
        "tests/test_bad_input.py::test_checkpoint_with_neither_capture_nor_optimizer_state"
    ],
    "adapter not matching the base model": ["tests/test_bad_input.py::test_adapter_that_does_not_fit_the_base_model"],
    "datastore of another model/projection/seed/dataset": [
        "tests/test_bad_input.py::test_datastore_from_another_model_is_refused",
        "tests/test_datastore.py::test_different_pool_or_config_is_refused",
    ],
    "projection dim > gradient dim": ["tests/test_bad_input.py::test_projection_dim_larger_than_the_gradient"],
    "fraction <= 0 or > 1, n > pool": [
        "tests/test_selection.py::test_budget_errors",
        "tests/test_selection.py::test_budget",
        "tests/test_selection.py::test_n",
    ],
    "NaN/inf gradient rows": [
        "tests/test_reliability.py::test_nonfinite_gradient_rows_are_reported_and_never_selected"
    ],
    "output folder not writable": ["tests/test_reliability.py::test_not_writable_output_is_a_clear_error"],
    "disk full (ENOSPC) while writing": [
        "tests/test_reliability.py::test_disk_full_leaves_nothing_corrupt",
        "tests/test_reliability.py::test_not_enough_space_is_refused_before_any_work",
    ],
    "unsafe pickle in optimizer file (weights_only)": [
        "tests/test_bad_input.py::test_optimizer_file_with_pickled_code_is_never_executed"
    ],
    "1 vs 2 processes bit-identical": ["tests/test_distributed.py::test_two_process_datastore_equals_single_process"],
}


def run_catalogue() -> list[tuple[str, int, int, str]]:
    """Run every test of the catalogue once; per case: (name, tried, passed, data lost)."""
    nodes = sorted({n for ids in CATALOGUE.values() for n in ids})
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *nodes],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        outcomes: dict[str, list[bool]] = {}
        for case in ET.parse(xml).getroot().iter("testcase"):
            node = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name', '').split('[')[0]}"
            failed = any(child.tag in ("failure", "error") for child in case)
            skipped = any(child.tag == "skipped" for child in case)
            if not skipped:
                outcomes.setdefault(node, []).append(not failed)
    rows = []
    for name, ids in CATALOGUE.items():
        results = [ok for n in ids for ok in outcomes.get(n, [])]
        tried, passed = len(results), sum(results)
        rows.append((name, tried, passed, "0" if tried and passed == tried else "?"))
    return rows


def lost_rows(out: Path, reference: Path) -> int:
    """Files (feature files count their rows) whose bytes differ from the uninterrupted build."""
    import numpy as np

    from reliability_helpers import datastore_digest

    got, want = datastore_digest(out), datastore_digest(reference)
    lost = 0
    for name in set(got) | set(want):
        if got.get(name) == want.get(name):
            continue
        if name.startswith("pool/") and name.endswith(".npy") and "/d" in name and name in got:
            a, b = np.load(out / name), np.load(reference / name)
            lost += int((a != b).any(axis=1).sum()) if a.shape == b.shape else len(b)
        else:
            lost += 1
    return lost


def run_crash_trials(random_kills: int, seed: int) -> list[tuple[str, int, int, str]]:
    from less_hf import build_datastore

    from reliability_helpers import CRASH_GRAD, CRASH_PROJ, crash_points, crash_pool, run_and_kill

    work = Path(tempfile.mkdtemp(prefix="less_hf_reliability_"))
    from less_hf import warmup

    from conftest import make_model, make_pool, make_tokenizer, tiny_warmup_config

    tokenizer = make_tokenizer()
    model_dir = work / "model"
    make_model(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    warmup_dir = work / "warmup"
    warmup(str(model_dir), make_pool(), warmup_dir, tiny_warmup_config(), use_cpu=True, disable_tqdm=True)
    reference = work / "reference"
    start = time.perf_counter()
    build_datastore(warmup_dir, crash_pool(), reference, CRASH_GRAD, CRASH_PROJ)
    build_seconds = time.perf_counter() - start
    again = work / "again"
    build_datastore(warmup_dir, crash_pool(), again, CRASH_GRAD, CRASH_PROJ)
    rows = [
        (
            "determinism: two uninterrupted builds, byte for byte",
            1,
            int(lost_rows(again, reference) == 0),
            str(lost_rows(again, reference)),
        )
    ]

    def trial(out: Path, condition, delay: float = 0.0) -> tuple[bool, int]:
        """(was it killed before finishing, data lost after the resume)."""
        outcome = run_and_kill(warmup_dir, out, condition, delay)
        build_datastore(warmup_dir, crash_pool(), out, CRASH_GRAD, CRASH_PROJ).verify()
        return outcome == "killed", lost_rows(out, reference)

    for name in crash_points(work):
        killed, lost = trial(work / f"kill-{len(rows)}", crash_points(work / f"kill-{len(rows)}")[name])
        rows.append((f"SIGKILL {name}, resume", 1, int(killed and lost == 0), str(lost)))
    rng = random.Random(seed)
    results = []
    for k in range(random_kills):
        delay = rng.uniform(0, build_seconds)
        results.append(trial(work / f"random-{k}", None, delay))
    if random_kills:
        killed = sum(k for k, _ in results)
        rows.append(
            (
                f"SIGKILL at random times (0-{build_seconds:.0f} s into the build; {killed} killed before the end), "
                "resume",
                random_kills,
                sum(k and lost == 0 for k, lost in results),
                str(sum(lost for _, lost in results)),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--random-kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    start = time.perf_counter()
    rows = run_crash_trials(args.random_kills, args.seed) + run_catalogue()
    lines = ["| case | tried | passed | data lost |", "|---|---|---|---|"]
    lines += [f"| {name} | {tried} | {passed} | {lost} |" for name, tried, passed, lost in rows]
    total = (sum(r[1] for r in rows), sum(r[2] for r in rows))
    lost_total = sum(int(r[3]) for r in rows if r[3].isdigit())
    unknown = any(not r[3].isdigit() for r in rows)
    lines.append(f"| **all** | **{total[0]}** | **{total[1]}** | **{lost_total}{'+?' if unknown else ''}** |")
    table = "\n".join(lines)
    print(table)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    out = ROOT / "benchmarks" / "results" / "reliability.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Reliability report\n\n`python benchmarks/reliability.py`\n\n{table}\n")


if __name__ == "__main__":
    main()
