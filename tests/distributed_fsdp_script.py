"""Run by tests/test_fsdp.py with 2 CPU processes (gloo): the same LoRA warmup twice, once under DDP and once under
FSDP2 ``fully_shard``, each saving 2 checkpoints through GradientCaptureCallback's own hooks.

The HF Trainer cannot run FSDP on CPU: accelerate only enables its FSDP plugin for accelerator devices (with
``use_cpu=True`` it silently falls back to DDP; without it the Trainer raises "Using fsdp only works in distributed
training"). So this script drives the warmup with a small training loop and calls the callback's ``on_train_begin``
/ ``on_optimizer_step`` / ``on_save`` exactly as the Trainer does. It also writes the optimizer files a Trainer
writes under FSDP (``optimizer.bin`` for FULL_STATE_DICT, ``optimizer_0/`` for SHARDED_STATE_DICT) for the readers.

Usage: distributed_fsdp_script.py MODEL_DIR OUTPUT_DIR [MODE...] (fsdp, fsdp1, fsdp1_flat, zero2, zero3)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from accelerate import PartialState  # noqa: E402

from conftest import make_pool  # noqa: E402

STEPS, SAVE_EVERY, BATCH, LR = 4, 2, 2, 1e-3


def build_model(model_dir: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def batches(model_dir: str, rank: int):
    from less_hf.gradients import collate
    from less_hf.modeling import load_tokenizer
    from less_hf.tokenization import tokenize_dataset

    tokenizer = load_tokenizer(model_dir)
    rows = tokenize_dataset(make_pool(2 * BATCH * STEPS, seed=1), tokenizer, 64)
    for step in range(STEPS):
        start = (step * 2 + rank) * BATCH  # rank r takes the r-th half of each global batch, as a sampler would
        yield collate([rows[i] for i in range(start, start + BATCH)], tokenizer.pad_token_id)


def save_adapter(model, peft_model, directory: Path, rank: int, sharded: bool) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if sharded:
        # FSDP1's cpu_offload of tensors already on the CPU crashes (torch 2.13): gather without it
        offload = not isinstance(model, torch.distributed.fsdp.FullyShardedDataParallel)
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=offload))
        if rank == 0:
            peft_model.save_pretrained(directory, state_dict=full)
    elif rank == 0:
        peft_model.save_pretrained(directory)


def save_plain_fsdp_optimizer(model, optimizer, directory: Path, rank: int) -> None:
    """What the Trainer (accelerate's save_fsdp_optimizer) writes under FSDP2: FULL_STATE_DICT → optimizer.bin on
    rank 0; SHARDED_STATE_DICT → optimizer_0/ through torch.distributed.checkpoint."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    full = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        (directory / "full").mkdir(parents=True, exist_ok=True)
        torch.save(full, directory / "full" / "optimizer.bin")
    sharded = get_optimizer_state_dict(model, optimizer)
    dcp.save({"optimizer": sharded}, storage_writer=dcp.FileSystemWriter(str(directory / "sharded" / "optimizer_0")))


def warmup(model_dir: str, output_dir: Path, mode: str, rank: int) -> dict:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from less_hf.capture import GradientCaptureCallback
    from less_hf.errors import OptimizerStateError

    peft_model = build_model(model_dir)
    hook_model = peft_model  # the Trainer passes its own model: unwrapped under DDP, FSDP2 shards in place
    if mode == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(peft_model)
    elif mode.startswith("fsdp1"):  # FSDP1 wraps: the Trainer then passes the wrapper
        from peft.utils.other import fsdp_auto_wrap_policy
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        # flat parameters cannot mix frozen and trainable tensors: peft's policy (the one accelerate uses for peft
        # models) gives the LoRA modules FSDP units of their own
        policy = ModuleWrapPolicy({LlamaDecoderLayer}) if mode == "fsdp1" else fsdp_auto_wrap_policy(peft_model)
        model = hook_model = FullyShardedDataParallel(
            peft_model,
            auto_wrap_policy=policy,
            use_orig_params=mode == "fsdp1",  # "fsdp1_flat": one FlatParameter per wrapped module
            device_id=torch.device("cpu"),
        )
    elif mode.startswith("zero"):  # DeepSpeed ZeRO-2 / ZeRO-3 driving torch's AdamW (DS_ACCELERATOR=cpu, gloo)
        import deepspeed

        base = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
        config = {
            "train_micro_batch_size_per_gpu": BATCH,
            "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": int(mode[-1])},
            "zero_allow_untested_optimizer": True,
            "gradient_clipping": 0.0,
        }
        model, ds_optimizer, _, _ = deepspeed.initialize(model=peft_model, optimizer=base, config=config)
    else:
        from torch.distributed.fsdp import fully_shard

        for layer in peft_model.base_model.model.model.layers:
            fully_shard(layer)
        model = fully_shard(peft_model)
    if mode.startswith("zero"):
        optimizer = ds_optimizer  # what the Trainer hands its callbacks under DeepSpeed
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    args = TrainingArguments(output_dir=str(output_dir), report_to=[], use_cpu=True, seed=0)
    state = TrainerState(max_steps=STEPS, save_steps=SAVE_EVERY, is_world_process_zero=rank == 0)
    control = TrainerControl()
    callback = GradientCaptureCallback(base_model_name_or_path=model_dir)
    callback.on_train_begin(args, state, control, model=hook_model, optimizer=optimizer)
    info = {}
    for step, batch in enumerate(batches(model_dir, rank), start=1):
        for group in optimizer.param_groups:
            group["lr"] = LR * (1 - (step - 1) / STEPS)  # linear decay, as the warmup's schedule
        loss = model(**batch).loss
        if mode.startswith("zero"):
            model.backward(loss)
            model.step()
        else:
            loss.backward()
            optimizer.step()
        callback.on_optimizer_step(args, state, control, optimizer=optimizer)
        optimizer.zero_grad()
        state.global_step, state.epoch = step, step / STEPS
        if step % SAVE_EVERY == 0:
            checkpoint = output_dir / f"checkpoint-{step}"
            if mode == "zero3":  # ZeRO-3 partitions the weights too: gather them for the save
                import deepspeed

                with deepspeed.zero.GatheredParameters(list(peft_model.parameters()), modifier_rank=None):
                    save_adapter(model, peft_model, checkpoint, rank, sharded=False)
            else:
                save_adapter(model, peft_model, checkpoint, rank, sharded=mode not in ("ddp", "zero2"))
            if mode == "fsdp":
                save_plain_fsdp_optimizer(model, optimizer, output_dir.parent / "plain" / checkpoint.name, rank)
            dist.barrier()
            try:
                callback.on_save(args, state, control, model=hook_model, optimizer=optimizer)
            except OptimizerStateError as err:  # raised on rank 0 only: record it, keep the ranks in step
                info["refused"] = str(err)
    callback.on_train_end(args, state, control)
    if mode == "fsdp":
        from torch.distributed.tensor import DTensor

        lora = next(p for n, p in peft_model.named_parameters() if "lora_A" in n)
        info |= {
            "dtensor": isinstance(lora, DTensor),
            "full_shape": list(lora.shape),
            "local_shape": list(lora.to_local().shape) if isinstance(lora, DTensor) else None,
        }
    dist.barrier()
    return info


if __name__ == "__main__":
    model_dir, output_dir = sys.argv[1], Path(sys.argv[2])
    state = PartialState(cpu=True)  # gloo over CPU
    rank = state.process_index
    warmup(model_dir, output_dir / "ddp", "ddp", rank)
    info = {}
    # fsdp (FSDP2), fsdp1 (use_orig_params=True), fsdp1_flat, zero2, zero3 (DeepSpeed)
    for mode in sys.argv[3:] or ["fsdp"]:
        info[mode] = warmup(model_dir, output_dir / mode, mode, rank)
    if rank == 0:
        (output_dir / "fsdp_info.json").write_text(json.dumps(info))
    dist.barrier()
    dist.destroy_process_group()
