"""Batched exact per-example gradients vs the batch-size-1 autograd loop."""

from __future__ import annotations

import pytest
import torch

from less_hf.gradients import PerExampleGradients, collate, length_sorted_batches, per_example_loss
from less_hf.tokenization import IGNORE_INDEX, tokenize_dataset

from reference.loop_gradients import flatten, loop_gradients, lora_parameters

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]


def make_lora_model(model_dir, targets=TARGETS, seed=0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.1,
        target_modules=targets,
        init_lora_weights=False,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    model.eval()  # dropout off
    return model


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir):
    return make_lora_model(tiny_model_dir)


def random_rows(n: int, vocab: int, seed: int) -> list[dict]:
    """Rows of random lengths 2..40 with a random prompt length; every row has >= 1 supervised label."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(2, 41, (1,), generator=g))
        prompt = int(torch.randint(0, length - 1, (1,), generator=g))
        ids = torch.randint(4, vocab, (length,), generator=g).tolist()
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def rel_err(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row ‖a − b‖ / ‖b‖."""
    return (a - b).norm(dim=1) / b.norm(dim=1)


def batched(per_example: PerExampleGradients, rows: list[dict], batch_size: int, pad_id: int = 1):
    """Run the batched path over rows in chunks; return flat (N, D) gradients, losses, counts in row order."""
    names = sorted(per_example.shapes)
    flats, losses, counts = [], [], []
    for start in range(0, len(rows), batch_size):
        grads, loss, count = per_example(collate(rows[start : start + batch_size], pad_id))
        assert set(grads) == set(names)
        for name in names:
            assert grads[name].shape == (len(rows[start : start + batch_size]), *per_example.shapes[name])
        flats.append(flatten(grads, names))
        losses.append(loss)
        counts.append(count)
    return torch.cat(flats), torch.cat(losses), torch.cat(counts)


def test_lora_weights_are_non_trivial(lora_model):
    params = dict(lora_parameters(lora_model))
    assert any(".lora_B." in n for n in params)
    for name, p in params.items():
        assert p.abs().sum() > 0, name  # B is not the default zero init, so A's gradient is non-zero too


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_matches_loop_on_random_rows(lora_model, tokenizer, seed):
    rows = random_rows(11, len(tokenizer), seed)
    per_example = PerExampleGradients(lora_model)
    names = sorted(per_example.shapes)
    ref_grads, ref_losses, ref_counts = loop_gradients(lora_model, rows)
    ref = flatten(ref_grads, names)
    assert (ref.norm(dim=1) > 0).all()
    # every parameter (A and B of every target module) gets a non-zero gradient
    for name in names:
        assert ref_grads[name].abs().amax() > 0, name
    got, losses, counts = batched(per_example, rows, batch_size=4)  # mixed lengths: padding in every batch
    assert rel_err(got, ref).max() <= 1e-5
    torch.testing.assert_close(losses, ref_losses.float(), rtol=1e-6, atol=1e-6)
    assert counts.tolist() == ref_counts.tolist()
    # the same rows in one batch give the same per-example gradients
    got_one, _, _ = batched(per_example, rows, batch_size=len(rows))
    assert rel_err(got_one, ref).max() <= 1e-5


def test_batched_matches_loop_on_pool_rows(lora_model, tokenizer, pool):
    tokenized = tokenize_dataset(pool.select(range(10)), tokenizer, max_length=64)
    rows = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in tokenized]
    per_example = PerExampleGradients(lora_model)
    ref_grads, ref_losses, ref_counts = loop_gradients(lora_model, rows)
    got, losses, counts = batched(per_example, rows, batch_size=5, pad_id=tokenizer.pad_token_id)
    assert rel_err(got, flatten(ref_grads, sorted(per_example.shapes))).max() <= 1e-5
    torch.testing.assert_close(losses, ref_losses.float(), rtol=1e-6, atol=1e-6)
    assert counts.tolist() == ref_counts.tolist() == list(tokenized["num_supervised"])


def test_per_example_loss_is_each_rows_own_mean():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    labels = torch.randint(0, 11, (3, 6))
    labels[0, :4] = IGNORE_INDEX  # 2 supervised (after the shift: positions 4, 5)
    labels[1, :] = IGNORE_INDEX  # none
    losses, counts = per_example_loss(logits, labels)
    assert counts.tolist() == [2, 0, 5]
    for b in (0, 2):
        mask = labels[b, 1:] != IGNORE_INDEX
        expected = torch.nn.functional.cross_entropy(logits[b, :-1][mask], labels[b, 1:][mask])
        torch.testing.assert_close(losses[b], expected)
    assert losses[1] == 0


def test_row_without_supervised_token(lora_model, tokenizer):
    rows = random_rows(4, len(tokenizer), seed=3)
    empty = {"input_ids": rows[1]["input_ids"], "labels": [IGNORE_INDEX] * len(rows[1]["input_ids"])}
    # only the first label is supervised: the causal shift drops it, so nothing is left either
    first_only = {
        "input_ids": rows[2]["input_ids"],
        "labels": rows[2]["input_ids"][:1] + [IGNORE_INDEX] * (len(rows[2]["input_ids"]) - 1),
    }
    mixed = [rows[0], empty, first_only, rows[3]]
    per_example = PerExampleGradients(lora_model)
    got, losses, counts = batched(per_example, mixed, batch_size=4)
    assert counts[1] == 0 and counts[2] == 0
    assert losses[1] == 0 and losses[2] == 0
    assert torch.count_nonzero(got[1]) == 0 and torch.count_nonzero(got[2]) == 0
    assert torch.isfinite(got).all()
    # the other rows are unaffected by their empty neighbours
    ref_grads, _, _ = loop_gradients(lora_model, [rows[0], rows[3]])
    ref = flatten(ref_grads, sorted(per_example.shapes))
    assert rel_err(got[[0, 3]], ref).max() <= 1e-5


def test_num_params(lora_model):
    per_example = PerExampleGradients(lora_model)
    assert per_example.num_params == sum(p.numel() for _, p in lora_parameters(lora_model))
    assert set(per_example.shapes) == {name for name, _ in lora_parameters(lora_model)}


def test_extra_trainable_non_linear_parameter_is_refused(tiny_model_dir):
    model = make_lora_model(tiny_model_dir, targets=["q_proj"])
    PerExampleGradients(model)  # fine as it is
    norm = next(p for n, p in model.named_parameters() if n.endswith("norm.weight"))
    norm.requires_grad_(True)
    with pytest.raises(ValueError, match="norm"):
        PerExampleGradients(model)


def test_trainable_embedding_is_refused(tiny_model_dir):
    model = make_lora_model(tiny_model_dir, targets=["q_proj"])
    model.get_input_embeddings().weight.requires_grad_(True)
    with pytest.raises(ValueError, match="embed"):
        PerExampleGradients(model)


def test_model_without_trainable_linear_is_refused(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="LoRA"):
        PerExampleGradients(model)


def test_length_sorted_batches():
    lengths = [5, 1, 9, 9, 3, 7, 2]
    batches = list(length_sorted_batches(lengths, 3))
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert flat[:2] == [2, 3]  # ties keep row order
    with pytest.raises(ValueError):
        list(length_sorted_batches(lengths, 0))


def test_collate_right_pads():
    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    batch = collate(rows, pad_token_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
