"""RDS+ against a float64 loop of the authors' recipe; the position weighting; per-task round-robin over examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from less_hf.selection import SELECTORS, RDSPlusSelector, get_selector
from less_hf.selection.features import pool_hidden
from less_hf.selection.rds_plus import example_round_robin


def reference_features(model_dir: str, dataset: Dataset, max_length: int) -> np.ndarray:
    """The recipe as a plain loop: chat-templated row → CausalLM hidden_states[-1] in float64 → Σ_t (t+1)·h_t /
    Σ_t (t+1) → unit vector (compute_influence_cosinesim.py, --pooling weighted_mean, batch size 1)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
    out = []
    for row in dataset:
        text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        with torch.no_grad():
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        total = np.zeros(hidden.shape[1])
        weight_sum = 0.0
        for t in range(hidden.shape[0]):
            total += (t + 1) * hidden[t].numpy()
            weight_sum += t + 1
        vector = total / weight_sum
        out.append(vector / np.sqrt((vector**2).sum()))
    return np.stack(out)


def reference_round_robin(similarity: np.ndarray, k: int) -> list[int]:
    """Examples in turn, each taking its most similar row not taken yet (ties: lower row index)."""
    taken: list[int] = []
    while len(taken) < k:
        for j in range(similarity.shape[1]):
            ranked = sorted(range(similarity.shape[0]), key=lambda i: (-similarity[i, j], i))
            taken.append(next(i for i in ranked if i not in taken))
            if len(taken) == k:
                break
    return taken


def test_rds_plus_matches_a_float64_loop_of_the_recipe(tiny_model_dir, pool):
    small = pool.select(range(10))
    target = pool.select([20, 21, 22])
    selector = RDSPlusSelector(tiny_model_dir, max_length=64, batch_size=4)  # batches of mixed lengths: padding
    selected = selector.select(small, {"t": target}, n=5)["t"]

    ref_pool = reference_features(tiny_model_dir, small, 64)
    ref_target = reference_features(tiny_model_dir, target, 64)
    sims = ref_pool @ ref_target.T
    np.testing.assert_allclose(selector.scores_["t"], sims.max(axis=1), atol=1e-5, rtol=0)
    assert list(selected["id"]) == [small[i]["id"] for i in reference_round_robin(sims, 5)]
    np.testing.assert_allclose(selected["rds_plus_score"], sims.max(axis=1)[reference_round_robin(sims, 5)], atol=1e-5)


def test_weighted_mean_pooling_counts_positions_from_each_rows_start():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float64).reshape(2, 4, 1)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    pooled = pool_hidden(hidden, mask, "weighted_mean")
    assert pooled[0, 0].item() == pytest.approx((1 * 0 + 2 * 1 + 3 * 2 + 4 * 3) / 10)
    assert pooled[1, 0].item() == pytest.approx((1 * 4 + 2 * 5) / 3)  # padding ignored
    assert pool_hidden(hidden, mask, "mean")[1, 0].item() == pytest.approx(4.5)


def test_example_round_robin_hand_worked():
    # 5 pool rows × 2 examples. Example 0 ranks 0,1,2,...; example 1 ranks 0 (taken) then 3, 4.
    sims = np.array([[0.9, 0.95], [0.8, 0.1], [0.7, 0.2], [0.1, 0.6], [0.0, 0.5]])
    assert example_round_robin(sims, 4).tolist() == [0, 3, 1, 4]
    sims[3, 1] = -np.inf  # never taken
    assert example_round_robin(sims, 4).tolist() == [0, 4, 1, 2]
    assert example_round_robin(sims, 2).tolist() == reference_round_robin(np.nan_to_num(sims, neginf=-9), 2)


def test_rds_plus_is_registered_and_recorded(tiny_model_dir, pool, tmp_path):
    import json

    assert SELECTORS["rds_plus"] is RDSPlusSelector
    selector = get_selector("rds_plus", tiny_model_dir, max_length=32)
    selector.select(pool.select(range(8)), pool.select([30, 31]), n=3)
    assert selector.method == "rds_plus"  # not "rds", although it is an RDSSelector
    meta = json.loads((selector.save(tmp_path / "sel") / "selection.json").read_text())
    assert meta["method"] == "rds_plus" and meta["policy"] == "per_task"
    assert meta["settings"]["pooling"] == "weighted_mean" and meta["settings"]["aggregate"] == "round_robin"
    assert meta["targets"]["target"]["n_selected"] == 3 and meta["targets"]["target"]["counts_per_task"] is None


def test_example_round_robin_matches_the_slow_reference_with_ties_and_shallow_budgets():
    rng = np.random.default_rng(1)
    for _ in range(40):
        n, m = int(rng.integers(2, 40)), int(rng.integers(1, 6))
        sims = rng.integers(0, 4, size=(n, m)).astype(float) / 4  # many ties
        k = int(rng.integers(1, max(2, n // 3)))  # 2k < n often: the per-example lists are cut short
        assert example_round_robin(sims, k).tolist() == reference_round_robin(sims, k)
