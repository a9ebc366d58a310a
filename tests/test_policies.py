"""Multi-target policies on known scores: round_robin against a hand-worked example, max = the old combined."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset

from less_hf.errors import BudgetError, ConfigError
from less_hf.output import top_indices
from less_hf.selection.base import Selector
from less_hf.selection.policies import resolve_policy, round_robin

NEG = -np.inf
# 3 tasks × 6 pool rows. Rankings (row: best first; -inf rows never selectable; ties go to the lower row):
#   A: 0 (.9), 1 (.8), 4 (.5), 5 (.5), 2 (.1)        row 3 is -inf
#   B: 0 (.95), 2 (.7), 3 (.6), 1 (.2)               rows 4, 5 are -inf
#   C: 5 (.4)                                        only one selectable row
SCORES = {
    "A": np.array([0.9, 0.8, 0.1, NEG, 0.5, 0.5]),
    "B": np.array([0.95, 0.2, 0.7, 0.6, NEG, NEG]),
    "C": np.array([NEG, NEG, NEG, NEG, NEG, 0.4]),
}


class KnownScores(Selector):
    """A scorer whose per-task scores are given: the policies are what is under test."""

    score_column = "known_score"

    def __init__(self, scores: dict[str, np.ndarray] = SCORES) -> None:
        self._scores = scores

    def score(self, pool, targets):
        return {name: self._scores[name].copy() for name in targets}


@pytest.fixture()
def pool():
    return Dataset.from_dict({"id": [f"r{i}" for i in range(6)]})


@pytest.fixture()
def targets():
    return {name: Dataset.from_dict({"text": [name]}) for name in SCORES}


def test_round_robin_hand_worked(pool, targets):
    # Turn 1: A takes r0; B's best (r0) is taken, so B takes its next unseen r2; C takes r5.
    # Turn 2: A takes r1; B takes r3; C has nothing left and drops out. Turn 3: A takes r4 (r5 is taken).
    selector = KnownScores()
    out = selector.select(pool, targets, n=6, mode="round_robin")
    assert out["id"] == ["r0", "r2", "r5", "r1", "r3", "r4"]
    assert out["selected_for"] == ["A", "B", "C", "A", "B", "A"]
    assert out["known_score"] == [0.9, 0.7, 0.4, 0.8, 0.6, 0.5]  # the score of the task that took the row
    assert out["known_score_rank"] == list(range(6))
    assert selector.select(pool, targets, n=4, mode="round_robin")["id"] == ["r0", "r2", "r5", "r1"]


def test_round_robin_budget_beyond_the_selectable_rows(pool, targets):
    pool7 = Dataset.from_dict({"id": [f"r{i}" for i in range(7)]})
    scores = {k: np.append(v, NEG) for k, v in SCORES.items()}  # r6 is selectable for no task
    with pytest.raises(BudgetError, match="6 of 7"):
        KnownScores(scores).select(pool7, targets, n=7, mode="round_robin")
    out = KnownScores(scores).select(pool7, targets, n=7, mode="round_robin", allow_fewer=True)
    assert sorted(out["id"]) == [f"r{i}" for i in range(6)]


def test_round_robin_function_duplicates_and_exhaustion():
    orders = [np.array([3, 1, 2]), np.array([3, 1, 4, 5]), np.array([1])]
    idx, owner = round_robin(orders, 10)
    assert idx.tolist() == [3, 1, 2, 4, 5]
    assert owner.tolist() == [0, 1, 0, 1, 1]  # the third list's only row was taken before its turn
    assert round_robin([np.array([], dtype=np.int64)], 3)[0].tolist() == []


def reference_round_robin(scores: dict[str, np.ndarray], k: int) -> list[int]:
    """A slow reference: each task in turn scans its ranking (score desc, row asc) for the first untaken row."""
    rankings = {
        t: sorted((i for i in range(len(s)) if np.isfinite(s[i])), key=lambda i, s=s: (-s[i], i))
        for t, s in scores.items()
    }
    taken: list[int] = []
    while len(taken) < k:
        progress = False
        for ranking in rankings.values():
            row = next((i for i in ranking if i not in taken), None)
            if row is not None and len(taken) < k:
                taken.append(row)
                progress = True
        if not progress:
            break
    return taken


def test_round_robin_matches_a_slow_reference_on_random_scores():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n, tasks = int(rng.integers(3, 30)), int(rng.integers(1, 5))
        scores = {}
        for t in range(tasks):
            s = rng.integers(0, 5, size=n).astype(float)  # many ties
            s[rng.random(n) < 0.3] = NEG
            scores[f"t{t}"] = s
        k = int(rng.integers(1, n + 1))
        orders = [top_indices(s, n) for s in scores.values()]
        assert round_robin(orders, k)[0].tolist() == reference_round_robin(scores, k)


def test_max_is_the_old_combined(pool, targets):
    selector = KnownScores()
    out = selector.select(pool, targets, n=3, mode="max")
    old = top_indices(np.max(np.stack(list(SCORES.values())), axis=0), 3)  # the old combined mode
    assert out["id"] == [f"r{i}" for i in old] == ["r0", "r1", "r2"]
    with pytest.warns(FutureWarning):
        assert selector.select(pool, targets, n=3, mode="combined")["id"] == out["id"]
    assert "selected_for" not in out.column_names


def test_policy_names():
    assert resolve_policy("per_task") == "per_task"
    with pytest.warns(FutureWarning):
        assert resolve_policy("combined") == "max"
    with pytest.raises(ConfigError, match="round_robin"):
        resolve_policy("roundrobin")


def test_policy_is_recorded(pool, targets, tmp_path):
    selector = KnownScores()
    selector.select(pool, targets, n=4, mode="round_robin")
    meta = json.loads((selector.save(tmp_path / "rr") / "selection.json").read_text())
    info = meta["targets"]["combined"]
    assert meta["policy"] == "round_robin" and info["counts_per_task"] == {"A": 2, "B": 1, "C": 1}
    assert info["threshold"] is None  # not the top rows of one score
    selector.select(pool, targets, n=3, mode="max")
    meta = json.loads((selector.save(tmp_path / "max") / "selection.json").read_text())
    assert meta["policy"] == "max" and meta["targets"]["combined"]["threshold"] == 0.7


def test_round_robin_selection_reports_and_exports(pool, targets, tmp_path):
    from less_hf.output.hub import card_body
    from less_hf.output.report import write_report

    selector = KnownScores()
    selector.select(pool, targets, n=4, mode="round_robin")
    folder = selector.save(tmp_path / "rr")
    markdown = write_report(folder, tmp_path / "report")["markdown"].read_text()
    assert "policy `round_robin`" in markdown and "taken in turn" in markdown
    meta = json.loads((folder / "selection.json").read_text())
    assert "Multi-target policy: `round_robin`" in card_body(meta)
