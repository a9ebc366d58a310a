"""Adam moments when the optimizer state is sharded: gathered live under FSDP or DeepSpeed ZeRO, or read from the
folders a Trainer writes under FSDP (DeepSpeed ZeRO checkpoint folders are recognised and refused with the way out).

Under FSDP every rank holds a slice of every moment. :func:`gather_full_moments` asks torch's own
``get_optimizer_state_dict(..., full_state_dict=True, cpu_offload=True)`` for the whole tensors: a collective call
(every rank must make it), after which rank 0 holds them on the CPU keyed by parameter name. Those names are made
peft's again by :func:`~less_hf.capture.optimizer_state.canonical_name`, whatever the wrapping.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import MissingFileError, OptimizerStateError
from .optimizer_state import (
    OptimizerMoments,
    _group_hparams,
    _step_of,
    canonical_name,
    check_adam,
    check_adam_state_dict,
    load_optimizer_file,
)

SHARDED_OPTIMIZER_DIR = "optimizer_0"  # accelerate's SHARDED_STATE_DICT folder (torch.distributed.checkpoint)
DCP_METADATA = ".metadata"


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` is sharded by FSDP (FSDP1 wrappers, FSDP2 ``fully_shard`` modules or DTensor parameters),
    so its optimizer state is split across ranks."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    if any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in model.modules()):
        return True
    return any(isinstance(p, DTensor) for p in model.parameters())


def moments_from_named_state(saved: dict[str, Any], where: str, adapter_name: str = "default") -> OptimizerMoments:
    """Moments from an optimizer state_dict keyed by parameter name (FSDP's full or consolidated state).

    Args:
        saved: ``{"state": {name: {"exp_avg", "exp_avg_sq", "step"}}, "param_groups": [...]}``.
        where: the file or folder named in errors.
        adapter_name: the peft adapter (dropped from the names).
    """
    check_adam_state_dict(saved, Path(where))
    exp_avg, exp_avg_sq, steps = {}, {}, []
    for name, state in saved["state"].items():
        if not isinstance(name, str):
            raise OptimizerStateError(
                f"{where}: optimizer state is keyed by position ({name!r}), not by parameter name; it is not a "
                "full FSDP optimizer state_dict."
            )
        key = canonical_name(name, adapter_name)
        if key in exp_avg:
            raise OptimizerStateError(f"{where}: two optimizer entries map to parameter {key} ({name}).")
        exp_avg[key] = state["exp_avg"].detach().float().cpu()
        exp_avg_sq[key] = state["exp_avg_sq"].detach().float().cpu()
        steps.append(_step_of(state))
    betas, eps = _group_hparams(saved)
    moments = OptimizerMoments(exp_avg, exp_avg_sq, max(steps, default=0), betas, eps)
    moments.check_values(where)
    return moments


def gather_full_moments(
    model: torch.nn.Module, optimizer: Any, adapter_name: str = "default"
) -> OptimizerMoments | None:
    """The full Adam moments of an FSDP-sharded model, on rank 0 (None on the other ranks).

    Collective: every rank must call it at the same point, or the job hangs. Uses torch's
    ``get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))``,
    which all-gathers each moment and keeps the whole tensors on rank 0's CPU only.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    opt = check_adam(optimizer)
    full = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.is_initialized() and dist.get_rank() != 0:
        return None
    check_not_aliased(full)
    return moments_from_named_state(full, "the FSDP optimizer state", adapter_name)


def is_deepspeed(optimizer: Any) -> bool:
    """Whether ``optimizer`` is (or wraps) a DeepSpeed ZeRO optimizer."""
    while optimizer is not None:
        if type(optimizer).__module__.startswith("deepspeed"):
            return True
        optimizer = getattr(optimizer, "optimizer", None)
    return False


def gather_deepspeed_moments(
    model: torch.nn.Module, optimizer: Any, adapter_name: str = "default"
) -> OptimizerMoments | None:
    """The full Adam moments of a DeepSpeed ZeRO (stage 1, 2 or 3) run, on rank 0 (None on the other ranks).

    Collective: every rank must call it. Uses DeepSpeed's own ``deepspeed.utils.safe_get_full_optimizer_state`` for
    every trainable parameter (it all-gathers the ZeRO partitions into the parameter's full shape); the step, betas and
    eps come from the torch Adam(W) that ZeRO drives.
    """
    import torch.distributed as dist
    from deepspeed.utils import safe_get_full_optimizer_state

    base = check_adam(optimizer)
    exp_avg, exp_avg_sq = {}, {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = canonical_name(name, adapter_name)
        m = safe_get_full_optimizer_state(param, "exp_avg")
        v = safe_get_full_optimizer_state(param, "exp_avg_sq")
        if m is None or v is None:
            raise OptimizerStateError(f"DeepSpeed holds no Adam state for {name}: save checkpoints after a step.")
        exp_avg[key], exp_avg_sq[key] = m.detach().float().cpu().clone(), v.detach().float().cpu().clone()
    if dist.is_initialized() and dist.get_rank() != 0:
        return None
    steps = [_step_of(state) for state in base.state.values()]
    betas, eps = _group_hparams(base)
    moments = OptimizerMoments(exp_avg, exp_avg_sq, max(steps, default=0), betas, eps)
    moments.check_values("the DeepSpeed optimizer state")
    return moments


def check_not_aliased(saved: dict[str, Any]) -> None:
    """Refuse a gathered state whose ``exp_avg`` and ``exp_avg_sq`` share memory.

    FSDP1 with ``use_orig_params=True`` all-gathers every state into one buffer and returns views of it; its
    ``cpu_offload`` copy is what separates them, and a model already on the CPU gets no copy, so torch 2.13 returns
    ``exp_avg_sq``'s values as ``exp_avg`` too. That would be silently wrong, so it is refused here.
    """
    for name, state in saved["state"].items():
        m, v = state.get("exp_avg"), state.get("exp_avg_sq")
        if (
            isinstance(m, torch.Tensor)
            and isinstance(v, torch.Tensor)
            and m.numel()
            and m.untyped_storage().data_ptr() == v.untyped_storage().data_ptr()
        ):
            raise OptimizerStateError(
                f"The gathered FSDP optimizer state of {name} holds one buffer for exp_avg and exp_avg_sq: torch's "
                "FSDP1 with use_orig_params=True does so for a model on the CPU. Use FSDP2 (fsdp_config "
                "{'version': 2}, the Trainer's default, or `fully_shard`), or FSDP1 with use_orig_params=False, or "
                "train on GPUs."
            )


def load_sharded_optimizer_dir(folder: Path) -> dict[str, Any]:
    """Consolidate accelerate's ``optimizer_0/`` (torch.distributed.checkpoint, one ``.distcp`` file per rank) into
    one optimizer state_dict keyed by parameter name, with torch's own ``dcp_to_torch_save`` (single process)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    handle, tmp = tempfile.mkstemp(suffix=".pt", prefix=".less_hf-consolidated-")
    os.close(handle)
    try:
        try:
            dcp_to_torch_save(folder, tmp)
        except Exception as err:  # a torn or foreign folder
            raise OptimizerStateError(
                f"{folder} cannot be consolidated by torch.distributed.checkpoint ({type(err).__name__}: "
                f"{str(err)[:200]}). Save the warmup with GradientCaptureCallback, or with "
                "fsdp_config={'state_dict_type': 'FULL_STATE_DICT'} so the Trainer writes one optimizer.bin."
            ) from None
        saved = load_optimizer_file(Path(tmp), check=False)
    finally:
        Path(tmp).unlink(missing_ok=True)
    saved = saved.get("optimizer", saved) if isinstance(saved, dict) else saved  # accelerate saves {"optimizer": ...}
    check_adam_state_dict(saved, folder)
    return saved


def deepspeed_folders(checkpoint_dir: Path) -> list[Path]:
    """DeepSpeed's ``global_step*/`` folders holding ZeRO-partitioned optimizer files, if any."""
    return sorted(p for p in checkpoint_dir.glob("global_step*") if p.is_dir() and any(p.glob("*optim_states.pt")))


def deepspeed_error(checkpoint_dir: Path, folder: Path) -> OptimizerStateError:
    """The refusal for a DeepSpeed ZeRO checkpoint, with the ways out."""
    return OptimizerStateError(
        f"{checkpoint_dir} was saved by DeepSpeed ZeRO: its Adam moments are split across "
        f"{folder.name}/*_optim_states.pt in DeepSpeed's flat-partition layout, which less_hf does not read "
        f"({folder.parent / 'zero_to_fp32.py'} consolidates the weights only, not the optimizer state). Either "
        "(1) re-run the warmup with GradientCaptureCallback, which gathers the full moments at every save under "
        "DeepSpeed ZeRO 1-3 (or FSDP: `accelerate launch --use_fsdp ...`, or DDP); or "
        "(2) consolidate each checkpoint with DeepSpeed itself, on a machine with the training's DeepSpeed: load it "
        "into the model and optimizer (`trainer.train(resume_from_checkpoint=...)` with the same config) and save "
        "`{'state': ..., 'param_groups': ...}` of `deepspeed.utils.safe_get_full_optimizer_state(param, "
        "'exp_avg'|'exp_avg_sq')` by parameter name as optimizer.pt in that checkpoint folder; less_hf reads an "
        "optimizer.pt keyed by parameter name."
    )


def checkpoint_optimizer_state(checkpoint_dir: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """The optimizer state_dict a plain Trainer checkpoint holds, and the file or folder it came from.

    Reads ``optimizer.pt`` / ``optimizer.bin`` (DDP: keyed by position; FSDP ``FULL_STATE_DICT``: keyed by name) or
    consolidates FSDP's ``SHARDED_STATE_DICT`` folder ``optimizer_0/``. A DeepSpeed ZeRO checkpoint is refused with
    the way out; a folder with none of these gets a :class:`~less_hf.errors.MissingFileError`.
    """
    checkpoint_dir = Path(checkpoint_dir)
    for name in ("optimizer.pt", "optimizer.bin"):
        if (checkpoint_dir / name).is_file():
            return load_optimizer_file(checkpoint_dir / name), checkpoint_dir / name
    sharded = checkpoint_dir / SHARDED_OPTIMIZER_DIR
    if (sharded / DCP_METADATA).is_file():
        return load_sharded_optimizer_dir(sharded), sharded
    ds = deepspeed_folders(checkpoint_dir)
    if ds:
        raise deepspeed_error(checkpoint_dir, ds[-1])
    raise MissingFileError(
        f"{checkpoint_dir} has neither a less_hf capture nor optimizer.pt/optimizer.bin (nor FSDP's "
        f"{SHARDED_OPTIMIZER_DIR}/). Train with GradientCaptureCallback, or keep `save_only_model=False` so "
        "the Trainer saves the optimizer."
    )


def is_named_state(saved: dict[str, Any]) -> bool:
    """Whether an optimizer state_dict is keyed by parameter name (FSDP) rather than by position (DDP)."""
    return any(isinstance(k, str) for k in saved["state"])
