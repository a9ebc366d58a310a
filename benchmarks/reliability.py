# ruff: noqa: E501
"""Reliability report: crash/resume trials, the bad-input catalogue and the determinism checks, as one table.

    python benchmarks/reliability.py [--random-kills 6] [--seed 0]

- Crash/resume: a real datastore build (tiny random Llama, a 2-epoch LoRA warmup, 16 pool rows, 2 checkpoints) runs
  in a subprocess and is SIGKILLed at named moments (watching its files) and at random times; the same command then
  resumes it. "Data lost" counts feature rows (and other files) whose bytes differ from an uninterrupted build.
- The adversarial catalogue: each case has an expected outcome (a clear error, a safe recovery, or the correct
  result) and the tests that try it (tests/test_trust.py, tests/test_cli_errors.py, tests/test_bad_input.py,
  tests/test_reliability.py and others); every parametrization is one try. A failed try is counted as silent-wrong
  when the tool gave no error where one was due or a wrong result (an assertion failed), else as a traceback.
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

# Expected outcome classes: what a correct tool does with the case.
ERROR, RECOVERY, CORRECT = "clear error", "safe recovery", "correct result"
T, TB, TT, TC = (
    "tests/test_trust.py::",
    "tests/test_bad_input.py::",
    "tests/test_reliability.py::",
    "tests/test_cli_errors.py::",
)

# (case, expected outcome, pytest node ids or function names covering it: every parametrization counts as one try)
CATALOGUE = [
    # identity: everything that changes a number is in the key
    ("re-run warmup into the same folder", CORRECT, [T + "test_rewarm_into_the_same_folder_gives_the_scores_of_a_fresh_build"]),
    ("manifest lost, then another pool or seed", ERROR, [T + "test_lost_manifest_never_makes_old_features_valid_for_a_new_pool"]),
    ("manifest truncated", RECOVERY, [T + "test_damaged_manifest_is_rebuilt_from_the_folders_keys", T + "test_damaged_manifest_is_a_one_line_error_for_readers"]),
    ("resume with another batch size or model dtype", ERROR, [T + "test_resume_with_other_settings_is_refused_or_fresh"]),
    ("partial folder of other inputs", RECOVERY, [T + "test_stale_part_folder_of_other_inputs_is_discarded"]),
    ("moved warmup folder", CORRECT, [T + "test_moved_warmup_folder_reuses_its_datastore_without_recomputing"]),
    ("pool: unrelated column vs changed row", CORRECT, [T + "test_unrelated_pool_column_keeps_the_datastore_and_a_changed_row_does_not"]),
    ("target rows or subtask labels changed", CORRECT, [T + "test_changed_target_rows_or_labels_get_new_features"]),
    ("content digests and hash cache", CORRECT, [T + "test_dataset_digest_is_content_only", T + "test_file_digest_is_cached_and_follows_the_content", T + "test_diff_keys_names_each_leaf", T + "test_corrupted_hash_cache_is_ignored"]),
    ("datastore of another model/projection/seed/pool/dtype/batch", ERROR, [TB + "test_datastore_from_another_model_is_refused", "tests/test_datastore.py::test_different_pool_or_config_is_refused"]),
    # inputs checked before work starts
    ("SGD / AMSGrad / v < 0 / inf / missing or step-less optimizer state", ERROR, [T + "test_unusable_optimizer_state_is_refused_before_any_work", T + "test_captured_moments_with_negative_second_moment_are_refused"]),
    ("NaN adapter, then fixed", RECOVERY, [T + "test_nan_adapter_is_refused_and_the_fixed_checkpoint_selects_correctly"]),
    ("every row non-finite at a checkpoint", ERROR, [T + "test_checkpoint_whose_every_row_is_nonfinite_is_never_finished"]),
    ("half-written checkpoint folder", ERROR, [T + "test_half_written_checkpoint_folder_gets_advice"]),
    ("CLI user errors (files, names, budgets, config values, YAML/JSON, folders)", ERROR, [TC + "test_user_error_is_one_line_and_writes_nothing", TC + "test_none_message_content_names_the_row_and_its_id", TC + "test_export_and_info_of_something_else_are_one_line_errors"]),
    ("--allow-fewer", CORRECT, [TC + "test_allow_fewer_takes_every_selectable_row"]),
    # outputs atomic and self-checking
    ("unsafe target names (.., separators, reserved, spaces)", ERROR, [T + "test_unsafe_target_names_are_refused_and_nothing_outside_is_touched", T + "test_names_equal_ignoring_case_are_refused"]),
    ("tampered selection.json target name", ERROR, [T + "test_tampered_selection_json_cannot_reach_outside"]),
    ("selection killed mid-write", RECOVERY, [T + "test_selection_folder_is_replaced_whole_or_not_at_all"]),
    ("inconsistent / modified / old selection folder", ERROR, [T + "test_inconsistent_selection_folder_is_refused_by_export_and_report", T + "test_modified_selection_files_are_refused", T + "test_selection_of_an_older_schema_is_refused"]),
    ("output folder holding the user's files, or '.'", ERROR, [T + "test_output_dir_holding_user_files_is_never_replaced"]),
    ("flipped .npy header", ERROR, [T + "test_flipped_npy_header_is_named_with_the_fix"]),
    ("model folder gains a README / generation config", CORRECT, [T + "test_model_identity_ignores_files_that_cannot_change_a_gradient"]),
    ("wrong types in the Python API (list pool, str fraction...)", ERROR, ["tests/test_selection.py::test_wrong_types_are_clear_errors"]),
    ("warmup: full fine-tune, DoRA, save_strategy='no'", ERROR, ["tests/test_capture.py::test_full_fine_tune_is_refused_at_train_start", "tests/test_capture.py::test_dora_is_refused_at_train_start", "tests/test_capture.py::test_save_strategy_no_is_refused_before_training"]),
    ("warmup: save plan leaving one checkpoint, too few steps, relative model path", CORRECT, ["tests/test_capture.py::test_save_plan_is_counted_and_a_single_checkpoint_warned", "tests/test_capture.py::test_warmup_from_a_relative_model_path_on_few_rows", "tests/test_capture.py::test_base_model_is_recorded_as_an_absolute_path"]),
    ("tokenized rows of another tokenizer / mismatched labels", ERROR, ["tests/test_tokenization.py::test_tokenized_rows_of_another_tokenizer_are_refused"]),
    ("demo re-run with other warmup settings", ERROR, [T + "test_demo_refuses_a_warmup_left_with_other_settings"]),
    ("data folder rewritten in place (datasets' cache)", CORRECT, ["tests/test_cli.py::test_load_data_of_a_folder_rewritten_in_place_is_never_stale"]),
    # earlier catalogue
    ("corrupted shard (checksum)", ERROR, [TT + "test_corrupted_shard_is_caught_on_read_and_only_that_part_rebuilt", TT + "test_corrupted_valid_mask_is_caught"]),
    ("truncated shard (size)", ERROR, [TT + "test_truncated_shard_is_caught_on_open"]),
    ("second writer (lock), readers concurrent", ERROR, [TT + "test_second_writer_fails_fast_and_readers_are_fine"]),
    ("empty pool or target", ERROR, [TB + "test_empty_pool", "tests/test_selection.py::test_empty_pool_or_target_is_a_clear_error", "tests/test_selection.py::test_budget_errors"]),
    ("row with no loss token (empty/truncated completion)", CORRECT, [TB + "test_fully_truncated_completion_has_no_loss", "tests/test_datastore.py::test_row_without_supervised_token_is_reported", "tests/test_datastore.py::test_target_without_any_supervised_row_is_refused", "tests/test_selection.py::test_rows_without_supervised_token_are_never_selected"]),
    ("rows longer than max length (counted warning)", CORRECT, [TB + "test_long_rows_are_truncated_with_a_counted_warning"]),
    ("missing/unknown columns, bad values, unsupported file", ERROR, ["tests/test_tokenization.py::test_tokenize_dataset_unknown_columns", TB + "test_bad_row_values_name_the_row", "tests/test_cli.py::test_load_data_rejects_unknown_paths"]),
    ("duplicate ids", ERROR, [TB + "test_duplicate_ids"]),
    ("non-Adam optimizer (warmup, optimizer file)", ERROR, ["tests/test_capture.py::test_non_adam_optimizer_fails_at_train_start", "tests/test_capture.py::test_non_adam_optimizer_passed_to_trainer", TB + "test_optimizer_file_of_a_non_adam_optimizer"]),
    ("checkpoint with neither capture nor optimizer state", ERROR, [TB + "test_checkpoint_with_neither_capture_nor_optimizer_state"]),
    ("adapter not matching the base model", ERROR, [TB + "test_adapter_that_does_not_fit_the_base_model"]),
    ("projection dim > gradient dim", ERROR, [TB + "test_projection_dim_larger_than_the_gradient"]),
    ("fraction <= 0 or > 1, n > pool", ERROR, ["tests/test_selection.py::test_budget", "tests/test_selection.py::test_n"]),
    ("NaN/inf gradient rows", CORRECT, [TT + "test_nonfinite_gradient_rows_are_reported_and_never_selected"]),
    ("output folder not writable", ERROR, [TT + "test_not_writable_output_is_a_clear_error"]),
    ("disk full (ENOSPC) while writing", RECOVERY, [TT + "test_disk_full_leaves_nothing_corrupt", TT + "test_not_enough_space_is_refused_before_any_work"]),
    ("unsafe pickle in optimizer file (weights_only)", ERROR, [TB + "test_optimizer_file_with_pickled_code_is_never_executed"]),
    ("missing model folder on the command line", ERROR, [TB + "test_missing_model_folder_is_named_on_the_command_line"]),
    ("1 vs 2 processes bit-identical", CORRECT, ["tests/test_distributed.py::test_two_process_datastore_equals_single_process"]),
]  # fmt: skip


def _classify(expected: str, message: str) -> str:
    """What a failed try did: ``silent-wrong`` (no error where one was due, or a wrong result) or ``traceback``."""
    silent = ("DID NOT RAISE", "assert 0 == 2", "AssertionError")
    if expected == ERROR and not any(s in message for s in silent):
        return "traceback"
    return "silent-wrong" if any(s in message for s in silent) or expected != ERROR else "traceback"


def run_catalogue() -> list[tuple[str, str, int, int, int, str, int]]:
    """Run every test of the catalogue once; per case: (name, class, tried, passed, silent-wrong, data lost,
    traceback)."""
    nodes = sorted({n for _, _, ids in CATALOGUE for n in ids})
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *nodes],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        outcomes: dict[str, list[str | None]] = {}  # node → per try: None (passed) or the failure message
        for case in ET.parse(xml).getroot().iter("testcase"):
            node = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name', '').split('[')[0]}"
            if any(child.tag == "skipped" for child in case):
                continue
            failures = [child for child in case if child.tag in ("failure", "error")]
            message = " ".join((f.get("message") or "") + (f.text or "") for f in failures)
            outcomes.setdefault(node, []).append(message if failures else None)
    rows = []
    for name, expected, ids in CATALOGUE:
        results = [r for n in ids for r in outcomes.get(n, [])]
        failed = [_classify(expected, r) for r in results if r is not None]
        rows.append(
            (
                name,
                expected,
                len(results),
                len(results) - len(failed),
                failed.count("silent-wrong"),
                "0" if results and not failed else "?",
                failed.count("traceback"),
            )
        )
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


def run_crash_trials(random_kills: int, seed: int) -> list[tuple[str, str, int, int, int, str, int]]:
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
    same = lost_rows(again, reference)
    rows = [
        ("determinism: two uninterrupted builds, byte for byte", CORRECT, 1, int(same == 0), int(same > 0), "0", 0)
    ]

    def trial(out: Path, condition, delay: float = 0.0) -> tuple[bool, int]:
        """(was it killed before finishing, data lost after the resume)."""
        outcome = run_and_kill(warmup_dir, out, condition, delay)
        build_datastore(warmup_dir, crash_pool(), out, CRASH_GRAD, CRASH_PROJ).verify()
        return outcome == "killed", lost_rows(out, reference)

    for name in crash_points(work):
        killed, lost = trial(work / f"kill-{len(rows)}", crash_points(work / f"kill-{len(rows)}")[name])
        rows.append((f"SIGKILL {name}, resume", RECOVERY, 1, int(killed and lost == 0), 0, str(lost), 0))
    rng = random.Random(seed)
    results = []
    for k in range(random_kills):
        delay = rng.uniform(0, build_seconds)
        results.append(trial(work / f"random-{k}", None, delay))
    if random_kills:
        killed = sum(k for k, _ in results)
        rows.append(
            (
                f"SIGKILL at random times (0-{build_seconds:.1f} s into the build; {killed} killed before the end), "
                "resume",
                RECOVERY,
                random_kills,
                sum(k and lost == 0 for k, lost in results),
                0,
                str(sum(lost for _, lost in results)),
                0,
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
    lines = [
        "| case | expected outcome | tried | passed | silent-wrong | data lost | traceback |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(str(v) for v in row)} |" for row in rows]
    tried, passed, silent, traceback = (sum(r[k] for r in rows) for k in (2, 3, 4, 6))
    lost_total = sum(int(r[5]) for r in rows if r[5].isdigit())
    unknown = "+?" if any(not r[5].isdigit() for r in rows) else ""
    lines.append(
        f"| **all ({len(rows)} cases)** | | **{tried}** | **{passed}** | **{silent}** | **{lost_total}{unknown}** | "
        f"**{traceback}** |"
    )
    table = "\n".join(lines)
    print(table)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    out = ROOT / "benchmarks" / "results" / "reliability.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Reliability report\n\n`python benchmarks/reliability.py`\n\n{table}\n")


if __name__ == "__main__":
    main()
