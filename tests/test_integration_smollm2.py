"""Short integration tests on the real SmolLM2-135M-Instruct and the built-in data (offline after first fetch)."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm2():
    from less_hf.assets import smollm2_path

    return str(smollm2_path())


def test_batched_gradients_match_the_loop_on_real_rows(smollm2):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from less_hf.assets import load_pool
    from less_hf.gradients import PerExampleGradients, collate
    from less_hf.modeling import load_tokenizer
    from less_hf.tokenization import tokenize_dataset

    from reference.loop_gradients import flatten, loop_gradients

    tokenizer = load_tokenizer(smollm2)
    rows = tokenize_dataset(load_pool(max_rows=40, seed=1).select(range(3)), tokenizer, max_length=48)
    rows = [rows[i] for i in range(len(rows))]
    torch.manual_seed(0)
    # float64: in float32, 30 layers amplify summation-order differences between any two kernels (batched or not,
    # LM head on all positions or only supervised ones) to ~3e-4; in float64 the paths agree to the fp32 einsum's ulp.
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float64)
    model = get_peft_model(
        model,
        LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
        ),
    ).eval()
    per_example = PerExampleGradients(model)
    grads, losses, _ = per_example(collate(rows, tokenizer.pad_token_id))
    ref, ref_losses, _ = loop_gradients(model, rows)
    names = sorted(per_example.shapes)
    a, b = flatten(grads, names), flatten(ref, names)
    assert torch.allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    assert float(((a - b).norm(dim=1) / b.norm(dim=1)).max()) < 1e-5


def test_demo_end_to_end_small(tmp_path):
    """The README's demo, shrunk: real warmup, datastore, selection for every built-in target, saved subsets."""
    from datasets import load_from_disk

    from less_hf.demo import DemoConfig, run_demo

    config = DemoConfig(
        output_dir=str(tmp_path),
        pool_size=40,
        warmup_fraction=0.2,
        target_rows=3,
        epochs=1,
        lora_r=8,
        lora_alpha=16,
        max_length=64,
        dim=512,
        batch_size=8,
        fraction=0.1,
        show=1,
    )
    selected = run_demo(config)
    assert set(selected) == {"mmlu", "bbh", "csqa"}
    for name, subset in selected.items():
        assert len(subset) == 4
        saved = load_from_disk(str(tmp_path / "selected" / name))
        assert saved["id"] == subset["id"]
        assert all(s > float("-inf") for s in saved["less_score"])
    # the demo also leaves a report and a Hub-ready export
    assert (tmp_path / "selected" / "report.html").exists()
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "hub_export" / "data").glob("*.parquet")) == [
        "bbh",
        "csqa",
        "mmlu",
    ]
