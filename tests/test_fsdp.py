"""Capture under FSDP and DeepSpeed: 2 CPU processes (gloo) train the same LoRA warmup under DDP and under FSDP2
``fully_shard`` / FSDP1 (and DeepSpeed ZeRO-2/3 where `deepspeed` is installed); the callback's captures, the
Trainer-style FSDP optimizer files and the datastores built from them all agree. A DeepSpeed ZeRO checkpoint saved
without the callback is refused with the way out."""

from __future__ import annotations

import json
import os
import types

import numpy as np
import pytest
import torch
from test_distributed import launch

from less_hf.capture import GradientCaptureCallback, OptimizerMoments, moments_from_hf_checkpoint
from less_hf.capture.checkpoints import CheckpointInfo, load_moments
from less_hf.capture.optimizer_state import canonical_name
from less_hf.capture.sharded import checkpoint_optimizer_state
from less_hf.errors import InputError, OptimizerStateError

CHECKPOINTS = ["checkpoint-2", "checkpoint-4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("fsdp")
    launch("distributed_fsdp_script.py", tiny_model_dir, str(out), "fsdp", "fsdp1", "fsdp1_flat")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fsdp", "fsdp1_flat"])  # FSDP2 fully_shard; FSDP1 with flat parameters
def test_fsdp_capture_equals_ddp_capture(runs, mode):
    info = json.loads((runs / "fsdp_info.json").read_text())
    assert info["fsdp"]["dtensor"] and info["fsdp"]["local_shape"][0] * 2 == info["fsdp"]["full_shape"][0]  # sharded
    assert "refused" not in info[mode]
    for name in CHECKPOINTS:
        ddp, fsdp = (runs / run / name / "less_hf" for run in ("ddp", mode))
        assert sorted(p.name for p in fsdp.iterdir()) == sorted(p.name for p in ddp.iterdir())  # the same files
        a, b = OptimizerMoments.load(ddp), OptimizerMoments.load(fsdp)
        assert (a.step, a.betas, a.eps) == (b.step, b.betas, b.eps) and a.step == int(name.split("-")[1])
        assert sorted(a.exp_avg) == sorted(b.exp_avg) and len(a.exp_avg) == 8  # 2 layers × q,v × A,B
        for key in a.exp_avg:
            assert b.exp_avg[key].shape == a.exp_avg[key].shape  # whole tensors, not one rank's shard
            torch.testing.assert_close(b.exp_avg[key], a.exp_avg[key], rtol=1e-5, atol=1e-9)
            torch.testing.assert_close(b.exp_avg_sq[key], a.exp_avg_sq[key], rtol=1e-5, atol=1e-12)
            assert a.exp_avg_sq[key].abs().sum() > 0
        for field in ("learning_rates", "learning_rate_steps", "mean_lr", "trainable_parameters", "adapter_config"):
            assert a.extra[field] == b.extra[field], field


@pytest.mark.slow
def test_fsdp1_use_orig_params_on_cpu_is_refused_not_wrong(runs):
    """torch's FSDP1 (use_orig_params=True) returns exp_avg_sq's buffer as exp_avg for a CPU model: refused."""
    refused = json.loads((runs / "fsdp_info.json").read_text())["fsdp1"]["refused"]
    assert "exp_avg and exp_avg_sq" in refused and "FSDP2" in refused
    assert not list((runs / "fsdp1").glob("checkpoint-*/less_hf"))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["full", "sharded"])
def test_trainer_fsdp_optimizer_files_are_read_by_name(runs, tiny_model_dir, layout):
    """optimizer.bin (FULL_STATE_DICT) and optimizer_0/ (SHARDED_STATE_DICT, consolidated with
    torch.distributed.checkpoint) give the moments the callback captured."""
    from distributed_fsdp_script import build_model

    model = build_model(tiny_model_dir)
    shapes = {canonical_name(n): p.shape for n, p in model.named_parameters() if p.requires_grad}
    for name in CHECKPOINTS:
        folder = runs / "plain" / name / layout
        captured = OptimizerMoments.load(runs / "fsdp" / name / "less_hf")
        for moments in (
            moments_from_hf_checkpoint(folder, model),
            load_moments(CheckpointInfo(folder, 0, 1.0, False), model, shapes),
        ):
            assert moments.step == captured.step and sorted(moments.exp_avg) == sorted(captured.exp_avg)
            for key in captured.exp_avg:
                assert torch.equal(moments.exp_avg[key], captured.exp_avg[key])
                assert torch.equal(moments.exp_avg_sq[key], captured.exp_avg_sq[key])


@pytest.mark.slow
def test_fsdp_datastore_equals_ddp_datastore(runs, tmp_path):
    from less_hf import GradientConfig, ProjectionConfig
    from less_hf.datastore import build_datastore

    from conftest import make_pool

    pool = make_pool(12, seed=3)
    stores = [
        build_datastore(
            runs / mode,
            pool,
            tmp_path / mode,
            GradientConfig(max_length=64, batch_size=4, device="cpu"),
            ProjectionConfig(dims=[64], storage_dtype="float32"),
        )
        for mode in ("ddp", "fsdp")
    ]
    ddp, fsdp = stores
    assert ddp.row_ids == fsdp.row_ids and (ddp.valid == fsdp.valid).all()
    assert [c.name for c in ddp.manifest.checkpoints] == CHECKPOINTS
    for c_ddp, c_fsdp in zip(ddp.manifest.checkpoints, fsdp.manifest.checkpoints):
        assert c_ddp.weight == pytest.approx(c_fsdp.weight)
        a = np.asarray(ddp.pool_features(c_ddp.name, 64))
        b = np.asarray(fsdp.pool_features(c_fsdp.name, 64))
        assert np.abs(a).sum(axis=1).min() > 0
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6 * np.abs(a).max())


def test_canonical_name_strips_every_wrapper():
    peft = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    for wrapped in (
        "module.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
        "_orig_mod.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
        "_fsdp_wrapped_module.base_model.model.model.layers.0._fsdp_wrapped_module.self_attn.q_proj.lora_A.default"
        ".weight",
        "module._orig_mod.base_model.model.model.layers.0._checkpoint_wrapped_module.self_attn.q_proj.lora_A.default"
        ".weight",
    ):
        assert canonical_name(wrapped) == peft
    assert canonical_name("base_model.model.encoder.module.lora_A.default.weight") == (
        "base_model.model.encoder.module.lora_A.weight"  # a module really named "module" inside the model is kept
    )


def test_deepspeed_checkpoint_is_refused_with_the_way_out(tmp_path):
    checkpoint = tmp_path / "checkpoint-8"
    (checkpoint / "global_step8").mkdir(parents=True)
    for rank in range(2):  # the files DeepSpeed ZeRO writes: one flat partition per rank
        torch.save(
            {"optimizer_state_dict": {"zero_stage": 2, "base_optimizer_state": {"state": {}, "param_groups": []}}},
            checkpoint / "global_step8" / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt",
        )
    torch.save({"module": {}}, checkpoint / "global_step8" / "mp_rank_00_model_states.pt")
    (checkpoint / "zero_to_fp32.py").write_text("# DeepSpeed's weight consolidation script\n")
    (checkpoint / "latest").write_text("global_step8")
    with pytest.raises(OptimizerStateError, match="DeepSpeed ZeRO") as err:
        checkpoint_optimizer_state(checkpoint)
    message = str(err.value)
    assert "global_step8" in message and "zero_to_fp32.py" in message and "--use_fsdp" in message
    assert "safe_get_full_optimizer_state" in message  # how to consolidate with DeepSpeed itself
    # once consolidated by name into optimizer.pt, the same folder is read
    name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    state = {name: {"exp_avg": torch.ones(2, 3), "exp_avg_sq": torch.ones(2, 3), "step": torch.tensor(8.0)}}
    torch.save(
        {"state": state, "param_groups": [{"params": [name], "betas": (0.9, 0.95), "eps": 1e-6}]},
        checkpoint / "optimizer.pt",
    )
    saved, where = checkpoint_optimizer_state(checkpoint)
    assert where.name == "optimizer.pt" and name in saved["state"]


@pytest.fixture(scope="module")
def deepspeed_runs(tmp_path_factory, tiny_model_dir):
    """The same warmup under DeepSpeed ZeRO-2 and ZeRO-3 (DeepSpeed's CPU accelerator, gloo), next to DDP."""
    pytest.importorskip("deepspeed")
    out = tmp_path_factory.mktemp("deepspeed")
    previous = os.environ.get("DS_ACCELERATOR")
    os.environ["DS_ACCELERATOR"] = "cpu"
    try:
        launch("distributed_fsdp_script.py", tiny_model_dir, str(out), "zero2", "zero3")
    finally:
        if previous is None:
            os.environ.pop("DS_ACCELERATOR")
        else:
            os.environ["DS_ACCELERATOR"] = previous
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["zero2", "zero3"])
def test_deepspeed_capture_equals_ddp_capture(deepspeed_runs, mode):
    """Needs `deepspeed` (not a dependency; skipped without it). ZeRO-3 sums its gradients in another order, so the
    moments agree to float tolerance rather than bit for bit."""
    for name in CHECKPOINTS:
        a = OptimizerMoments.load(deepspeed_runs / "ddp" / name / "less_hf")
        b = OptimizerMoments.load(deepspeed_runs / mode / name / "less_hf")
        assert (a.step, a.betas, a.eps) == (b.step, b.betas, b.eps) and sorted(a.exp_avg) == sorted(b.exp_avg)
        for key in a.exp_avg:
            for x, y in ((a.exp_avg[key], b.exp_avg[key]), (a.exp_avg_sq[key], b.exp_avg_sq[key])):
                assert y.shape == x.shape
                torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-5 * float(x.abs().max()))
        for field in ("learning_rates", "mean_lr", "trainable_parameters", "adapter_config"):
            assert a.extra[field] == b.extra[field], field


def test_deepspeed_run_without_deepspeed_installed_is_refused():
    try:
        import deepspeed  # noqa: F401

        pytest.skip("deepspeed is installed here")
    except ImportError:
        pass
    args = types.SimpleNamespace(deepspeed="ds_zero3.json")
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(InputError, match="DeepSpeed.*cannot be imported"):
        GradientCaptureCallback().on_train_begin(args, None, None, optimizer=optimizer)


def test_fsdp_flag_is_no_longer_refused(tmp_path, tiny_model_dir):
    """fsdp in TrainingArguments passes on_train_begin (the save gathers when the model is really sharded)."""
    from distributed_fsdp_script import build_model
    from transformers import TrainerControl, TrainerState

    model = build_model(tiny_model_dir)
    args = types.SimpleNamespace(
        fsdp=True, deepspeed=None, save_strategy="epoch", num_train_epochs=2, save_total_limit=None, save_steps=500
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    state = TrainerState(max_steps=4, num_train_epochs=2)
    GradientCaptureCallback().on_train_begin(args, state, TrainerControl(), model=model, optimizer=optimizer)
