"""GradientCaptureCallback after a real Trainer run, reading plain HF checkpoints, finding checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from less_hf import GradientCaptureCallback, LessHFError, find_checkpoints, warmup
from less_hf.capture import OptimizerMoments, checkpoint_weights, moments_from_hf_checkpoint
from less_hf.capture.optimizer_state import CAPTURE_DIR, canonical_name, check_adam

from conftest import tiny_warmup_config


def load_checkpoint_model(tiny_model_dir, checkpoint):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(model, str(checkpoint), is_trainable=True)


def lora_model(tiny_model_dir, r=4, targets=("q_proj", "k_proj", "v_proj", "o_proj")):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=8, target_modules=list(targets), task_type="CAUSAL_LM"))


def logged_lrs(checkpoint: Path) -> dict[int, float]:
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h["learning_rate"] for h in history if "learning_rate" in h}


def test_checkpoint_layout(warmup_dir):
    names = sorted(p.name for p in Path(warmup_dir).iterdir() if p.name.startswith("checkpoint-"))
    assert names == ["checkpoint-3", "checkpoint-6"]
    for name in names:
        capture = Path(warmup_dir) / name / CAPTURE_DIR
        assert (capture / "moments.safetensors").is_file()
        assert (capture / "state.json").is_file()
        assert (Path(warmup_dir) / name / "optimizer.pt").is_file()
        assert (Path(warmup_dir) / name / "adapter_model.safetensors").is_file()
        # the atomic write leaves no temp folder behind
        assert not [p for p in (Path(warmup_dir) / name).iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", ["checkpoint-3", "checkpoint-6"])
def test_moments_equal_the_trainers_optimizer_file(warmup_dir, tiny_model_dir, name):
    checkpoint = Path(warmup_dir) / name
    captured = OptimizerMoments.load(checkpoint / CAPTURE_DIR)
    model = load_checkpoint_model(tiny_model_dir, checkpoint)
    from_file = moments_from_hf_checkpoint(checkpoint, model)
    trainable = [canonical_name(n) for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(captured.exp_avg) == sorted(from_file.exp_avg) == sorted(trainable)
    assert all(".lora_A.weight" in n or ".lora_B.weight" in n for n in trainable)
    for key in trainable:
        assert torch.equal(captured.exp_avg[key], from_file.exp_avg[key].float()), key
        assert torch.equal(captured.exp_avg_sq[key], from_file.exp_avg_sq[key].float()), key
        assert captured.exp_avg_sq[key].min() >= 0
    assert captured.step == from_file.step == int(name.split("-")[1])
    assert captured.betas == from_file.betas == (0.9, 0.999)
    assert captured.eps == from_file.eps == 1e-8
    # an independent read of optimizer.pt: with no weight-decay exclusions among LoRA weights, the Trainer stores
    # the state in named_parameters() order
    raw = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True)
    indices = [i for group in raw["param_groups"] for i in group["params"]]
    assert len(indices) == len(trainable)
    for index, key in zip(indices, trainable):
        assert torch.equal(raw["state"][index]["exp_avg"].float(), captured.exp_avg[key])
        assert torch.equal(raw["state"][index]["exp_avg_sq"].float(), captured.exp_avg_sq[key])
    # every parameter really moved: the moments are not Adam's initial zeros
    assert all(captured.exp_avg_sq[k].abs().sum() > 0 for k in trainable)


def test_state_json(warmup_dir, tiny_model_dir):
    previous_steps = 0
    for name, step in (("checkpoint-3", 3), ("checkpoint-6", 6)):
        checkpoint = Path(warmup_dir) / name
        state = json.loads((checkpoint / CAPTURE_DIR / "state.json").read_text())
        assert state["step"] == state["global_step"] == step
        assert state["betas"] == [0.9, 0.999] and state["eps"] == 1e-8
        assert state["learning_rate_steps"] == list(range(previous_steps + 1, step + 1))
        lrs = state["learning_rates"]
        assert len(lrs) == step - previous_steps  # one per optimizer step since the previous save
        logged = logged_lrs(checkpoint)  # logging_steps=1: the Trainer logged the lr of every step
        assert lrs == pytest.approx([logged[s] for s in state["learning_rate_steps"]], rel=1e-6)
        assert state["mean_lr"] == pytest.approx(np.mean(lrs), rel=1e-12)
        assert state["base_model_name_or_path"] == str(tiny_model_dir)
        assert state["adapter_config"]["r"] == 4
        assert sorted(state["trainable_parameters"]) == sorted(OptimizerMoments.load(checkpoint / CAPTURE_DIR).exp_avg)
        assert state["seed"] == 0
        previous_steps = step
    # linear decay: the second epoch's mean lr is smaller
    first, second = find_checkpoints(warmup_dir)
    assert 0 < second.mean_lr < first.mean_lr


def test_find_checkpoints(warmup_dir):
    infos = find_checkpoints(warmup_dir)
    assert [c.name for c in infos] == ["checkpoint-3", "checkpoint-6"]
    assert [c.step for c in infos] == [3, 6]
    assert all(c.captured for c in infos)
    for c in infos:
        state = json.loads((c.path / CAPTURE_DIR / "state.json").read_text())
        assert c.mean_lr == pytest.approx(state["mean_lr"])
    weights = checkpoint_weights(infos)
    assert weights.sum() == pytest.approx(1.0)
    assert weights == pytest.approx(np.array([c.mean_lr for c in infos]) / sum(c.mean_lr for c in infos))


def test_find_checkpoints_numeric_order(tmp_path):
    for step in (10, 2, 100):
        d = tmp_path / f"checkpoint-{step}" / CAPTURE_DIR
        d.mkdir(parents=True)
        (d / "state.json").write_text(json.dumps({"mean_lr": step * 1e-5}))
    (tmp_path / "checkpoint-x").mkdir()
    (tmp_path / "runs").mkdir()
    infos = find_checkpoints(tmp_path)
    assert [c.step for c in infos] == [2, 10, 100]
    assert checkpoint_weights(infos) == pytest.approx(np.array([2, 10, 100]) / 112)


def test_checkpoint_weights_need_a_positive_sum(tmp_path):
    from less_hf.capture import CheckpointInfo

    with pytest.raises(ValueError):
        checkpoint_weights([CheckpointInfo(tmp_path, 1, 0.0, True)])


def test_find_checkpoints_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        find_checkpoints(tmp_path)
    with pytest.raises(FileNotFoundError):
        find_checkpoints(tmp_path / "missing")


@pytest.fixture(scope="module")
def uncaptured_dir(warmup_dir, tmp_path_factory):
    """A copy of the warmup with the callback's folders removed: a plain HF Trainer output."""
    copy = tmp_path_factory.mktemp("uncaptured") / "warmup"
    shutil.copytree(warmup_dir, copy, ignore=shutil.ignore_patterns("less_datastore*"))
    for checkpoint in copy.glob("checkpoint-*"):
        shutil.rmtree(checkpoint / CAPTURE_DIR)
    return copy


def test_find_checkpoints_without_capture_uses_trainer_state(uncaptured_dir, warmup_dir):
    plain = find_checkpoints(uncaptured_dir)
    captured = find_checkpoints(warmup_dir)
    assert [c.name for c in plain] == ["checkpoint-3", "checkpoint-6"]
    assert not any(c.captured for c in plain)
    for p, c in zip(plain, captured):
        assert p.mean_lr == pytest.approx(c.mean_lr, rel=1e-6)
        expected = np.mean([lr for s, lr in logged_lrs(p.path).items() if p.step - 3 < s <= p.step])
        assert p.mean_lr == pytest.approx(expected)
    assert checkpoint_weights(plain) == pytest.approx(checkpoint_weights(captured))


def test_trainer_state_without_learning_rates(uncaptured_dir, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(uncaptured_dir, copy)
    for checkpoint in copy.glob("checkpoint-*"):
        path = checkpoint / "trainer_state.json"
        state = json.loads(path.read_text())
        state["log_history"] = [{k: v for k, v in h.items() if k != "learning_rate"} for h in state["log_history"]]
        path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match="logging_steps"):
        find_checkpoints(copy)


def test_moments_from_hf_checkpoint_shape_mismatch(warmup_dir, tiny_model_dir):
    checkpoint = Path(warmup_dir) / "checkpoint-3"
    with pytest.raises(ValueError, match="shape"):
        moments_from_hf_checkpoint(checkpoint, lora_model(tiny_model_dir, r=2))
    with pytest.raises(ValueError, match="different"):
        moments_from_hf_checkpoint(checkpoint, lora_model(tiny_model_dir, targets=("q_proj",)))


def test_moments_from_hf_checkpoint_without_optimizer_file(tmp_path, tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="optimizer"):
        moments_from_hf_checkpoint(tmp_path, lora_model(tiny_model_dir))


def test_check_matches(warmup_dir):
    moments = OptimizerMoments.load(Path(warmup_dir) / "checkpoint-3" / CAPTURE_DIR)
    shapes = {n: t.shape for n, t in moments.exp_avg.items()}
    moments.check_matches(shapes)
    name = next(iter(shapes))
    with pytest.raises(ValueError, match="shape"):
        moments.check_matches({**shapes, name: torch.Size([1, 1])})
    with pytest.raises(ValueError, match="missing"):
        moments.check_matches({**shapes, "extra.lora_A.weight": torch.Size([1])})


def test_moments_save_load_roundtrip(tmp_path):
    m = {"a.lora_A.weight": torch.randn(3, 4), "a.lora_B.weight": torch.randn(5, 3)}
    v = {k: t.abs() for k, t in m.items()}
    moments = OptimizerMoments(m, v, step=17, betas=(0.8, 0.95), eps=1e-6)
    moments.save(tmp_path / "cap", {"mean_lr": 0.5})
    moments.save(tmp_path / "cap", {"mean_lr": 0.25})  # overwriting is fine
    loaded = OptimizerMoments.load(tmp_path / "cap")
    assert loaded.step == 17 and loaded.betas == (0.8, 0.95) and loaded.eps == 1e-6
    assert loaded.extra["mean_lr"] == 0.25
    for k in m:
        assert torch.equal(loaded.exp_avg[k], m[k]) and torch.equal(loaded.exp_avg_sq[k], v[k])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap"]


def test_canonical_name():
    assert (
        canonical_name("module.base_model.model.layers.0.q_proj.lora_A.default.weight")
        == "base_model.model.layers.0.q_proj.lora_A.weight"
    )
    assert canonical_name("x.lora_B.mine.weight", "mine") == "x.lora_B.weight"


def test_check_adam():
    p = [torch.nn.Parameter(torch.zeros(2))]
    check_adam(torch.optim.AdamW(p))
    check_adam(torch.optim.Adam(p))
    with pytest.raises(ValueError, match="SGD"):
        check_adam(torch.optim.SGD(p, lr=0.1))
    with pytest.raises(ValueError, match="AMSGrad"):
        check_adam(torch.optim.AdamW(p, amsgrad=True))


def small_config(**kwargs):
    return tiny_warmup_config(**{"num_rows": 4, "epochs": 1, "per_device_batch_size": 2, **kwargs})


def test_non_adam_optimizer_fails_at_train_start(tiny_model_dir, pool, tmp_path):
    with pytest.raises(ValueError, match="Adam"):
        warmup(tiny_model_dir, pool, tmp_path / "sgd", small_config(), use_cpu=True, disable_tqdm=True, optim="sgd")
    assert not list((tmp_path / "sgd").glob("checkpoint-*"))


def test_non_adam_optimizer_passed_to_trainer(tiny_model_dir, tokenizer, pool, tmp_path):
    model = lora_model(tiny_model_dir)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    trainer = _trainer(
        model, tokenizer, pool, tmp_path / "out", rows=4, optimizers=(optimizer, None), num_train_epochs=1
    )
    with pytest.raises(ValueError, match="SGD"):
        trainer.train()


def test_betas_and_eps_are_read_from_the_optimizer(tiny_model_dir, pool, tmp_path):
    out = warmup(
        tiny_model_dir,
        pool,
        tmp_path / "w",
        small_config(),
        use_cpu=True,
        disable_tqdm=True,
        adam_beta1=0.8,
        adam_beta2=0.95,
        adam_epsilon=1e-6,
    )
    (checkpoint,) = find_checkpoints(out)
    moments = OptimizerMoments.load(checkpoint.path / CAPTURE_DIR)
    assert moments.betas == (0.8, 0.95) and moments.eps == 1e-6
    assert moments.step == 2
    state = json.loads((checkpoint.path / CAPTURE_DIR / "state.json").read_text())
    assert len(state["learning_rates"]) == 2


def _capture_trainer(tiny_model_dir, tokenizer, pool, output_dir, callback):
    from transformers import Trainer, TrainingArguments

    from less_hf.gradients import collate
    from less_hf.tokenization import tokenize_dataset

    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        use_cpu=True,
        report_to=[],
        save_strategy="epoch",
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    return Trainer(
        model=lora_model(tiny_model_dir),
        args=args,
        train_dataset=tokenize_dataset(pool.select(range(4)), tokenizer, max_length=64),
        data_collator=lambda rows: collate(rows, tokenizer.pad_token_id),
        callbacks=[callback],
    )


@pytest.mark.parametrize("background", [True, False])
def test_files_are_complete_when_train_returns(tiny_model_dir, tokenizer, pool, tmp_path, background):
    """The background write is joined by train end: the last checkpoint's files equal the live optimizer state."""
    callback = GradientCaptureCallback(background_write=background)
    trainer = _capture_trainer(tiny_model_dir, tokenizer, pool, tmp_path / "out", callback)
    trainer.train()
    assert callback._writer is None
    checkpoints = find_checkpoints(tmp_path / "out")
    assert [c.step for c in checkpoints] == [2, 4] and all(c.captured for c in checkpoints)
    saved = OptimizerMoments.load(checkpoints[-1].path / CAPTURE_DIR)
    names = {id(p): canonical_name(n) for n, p in trainer.model.named_parameters()}
    live = trainer.optimizer.state
    assert len(live) == len(saved.exp_avg)
    for p, state in live.items():
        assert torch.equal(saved.exp_avg[names[id(p)]], state["exp_avg"])
        assert torch.equal(saved.exp_avg_sq[names[id(p)]], state["exp_avg_sq"])
    # the first checkpoint holds the moments of step 2, not the ones the optimizer reached later
    first = OptimizerMoments.load(checkpoints[0].path / CAPTURE_DIR)
    assert first.step == 2
    assert not torch.equal(next(iter(first.exp_avg.values())), next(iter(saved.exp_avg.values())))


def test_background_write_error_is_raised(tmp_path):
    """An error met by the writer thread surfaces at the next wait() (next save / train end), not silently."""
    import threading

    callback = GradientCaptureCallback()
    (tmp_path / "checkpoint-1").mkdir()
    (tmp_path / "checkpoint-1" / CAPTURE_DIR).write_text("a file where the capture folder goes")
    moments = OptimizerMoments({"w": torch.ones(2)}, {"w": torch.ones(2)}, 1, (0.9, 0.999), 1e-8)
    callback._writer = threading.Thread(
        target=callback._write, args=(moments, tmp_path / "checkpoint-1" / CAPTURE_DIR, {})
    )
    callback._writer.start()
    with pytest.raises(RuntimeError, match="writing the Adam moments failed"):
        callback.wait()
    callback.wait()  # the error is reported once


# ---------------------------------------------------------------------------------- checks at train start


def _trainer(model, tokenizer, pool, out, rows=8, optimizers=(None, None), **args_kwargs):
    """A plain `Trainer` on ``rows`` tokenized pool rows with the capture callback (2 epochs, a save per epoch)."""
    from transformers import Trainer, TrainingArguments

    from less_hf.gradients import collate
    from less_hf.tokenization import tokenize_dataset

    data = tokenize_dataset(pool.select(range(rows)), tokenizer, max_length=64)
    fields = dict(
        output_dir=str(out),
        num_train_epochs=2,
        per_device_train_batch_size=2,
        use_cpu=True,
        report_to=[],
        save_strategy="epoch",
        remove_unused_columns=False,
        disable_tqdm=True,
        learning_rate=1e-3,
    )
    fields.update(args_kwargs)
    return Trainer(
        model=model,
        args=TrainingArguments(**fields),
        train_dataset=data,
        optimizers=optimizers,
        data_collator=lambda batch: collate(batch, tokenizer.pad_token_id),
        callbacks=[GradientCaptureCallback()],
    )


def test_full_fine_tune_is_refused_at_train_start(tiny_model_dir, tokenizer, pool, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(LessHFError, match=r"no peft adapter.*full fine-tune.*peft_config=LoraConfig"):
        _trainer(model, tokenizer, pool, tmp_path / "full").train()
    assert not list((tmp_path / "full").glob("checkpoint-*"))


def test_dora_is_refused_at_train_start(tiny_model_dir, tokenizer, pool, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_dora=True))
    with pytest.raises(LessHFError, match="use_dora=False"):
        _trainer(model, tokenizer, pool, tmp_path / "dora").train()


def test_save_strategy_no_is_refused_before_training(tiny_model_dir, tokenizer, pool, tmp_path):
    with pytest.raises(LessHFError, match="save_strategy='no'"):
        _trainer(lora_model(tiny_model_dir), tokenizer, pool, tmp_path / "no", save_strategy="no").train()


@pytest.mark.parametrize(
    "args, expected",
    [
        ({"save_total_limit": 1}, 1),
        ({"save_strategy": "steps"}, 1),  # default save_steps=500 with 8 steps: only the final save
        ({"save_strategy": "steps", "save_steps": 3}, 3),  # steps 3, 6 and the final 8
        ({}, 2),
    ],
)
def test_save_plan_is_counted_and_a_single_checkpoint_warned(tiny_model_dir, tokenizer, pool, tmp_path, args,
                                                              expected, caplog):  # fmt: skip
    import logging

    trainer = _trainer(lora_model(tiny_model_dir), tokenizer, pool, tmp_path / "plan", **args)
    with caplog.at_level(logging.WARNING):
        trainer.train()
    assert len(find_checkpoints(tmp_path / "plan")) == expected
    assert ("will leave 1 checkpoint" in caplog.text) == (expected == 1)


def test_base_model_is_recorded_as_an_absolute_path(tiny_model_dir, tokenizer, pool, tmp_path, monkeypatch):
    import os

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    monkeypatch.chdir(Path(tiny_model_dir).parent)
    relative = os.path.basename(tiny_model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(relative), LoraConfig(r=4, target_modules=["q_proj"]))
    _trainer(model, tokenizer, pool, tmp_path / "rel", num_train_epochs=1).train()
    state = json.loads((tmp_path / "rel" / "checkpoint-4" / CAPTURE_DIR / "state.json").read_text())
    assert state["base_model_name_or_path"] == str(Path(tiny_model_dir).resolve())


def test_warmup_from_a_relative_model_path_on_few_rows(tiny_model_dir, pool, tmp_path, monkeypatch, caplog, recwarn):
    """A relative model path is recorded absolute (selection works from any directory); a warmup of one step per
    epoch is warned about; no pin_memory warning on CPU."""
    import logging
    import os

    from less_hf.modeling import base_model_of

    monkeypatch.chdir(Path(tiny_model_dir).parent)
    config = tiny_warmup_config(num_rows=4, per_device_batch_size=4, epochs=2)
    with caplog.at_level(logging.WARNING):
        warmup(os.path.basename(tiny_model_dir), pool, tmp_path / "w", config, use_cpu=True, disable_tqdm=True)
    assert "1 optimizer step per epoch" in caplog.text
    assert not [w for w in recwarn if "pin_memory" in str(w.message)]
    monkeypatch.chdir(tmp_path)
    base = base_model_of(find_checkpoints(tmp_path / "w")[0].path)
    assert base == str(Path(tiny_model_dir).resolve()) and Path(base).is_dir()
