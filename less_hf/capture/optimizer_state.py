"""Adam moments keyed by parameter name: from a live optimizer, a less_hf capture, or a plain HF checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import InputError, OptimizerStateError

MOMENTS_FILE = "moments.safetensors"
STATE_FILE = "state.json"
CAPTURE_DIR = "less_hf"


# Module names that wrappers insert into parameter names: FSDP1, torch.compile, activation checkpointing.
WRAPPER_TOKENS = ("_fsdp_wrapped_module", "_orig_mod", "_checkpoint_wrapped_module")


def canonical_name(name: str, adapter_name: str = "default") -> str:
    """Name of a LoRA parameter independent of DDP/FSDP/compile wrapping and of the adapter's name.

    ``module.base_model.model.layers.0.q_proj.lora_A.default.weight``
    → ``base_model.model.layers.0.q_proj.lora_A.weight``; so do
    ``_orig_mod.base_model._fsdp_wrapped_module.model.layers.0._checkpoint_wrapped_module.q_proj.lora_A.default.weight``
    and every other mix of those wrappers.
    """
    parts = [part for part in name.split(".") if part not in WRAPPER_TOKENS]
    while parts and parts[0] == "module":  # DDP / DataParallel / DeepSpeed engine
        parts = parts[1:]
    return ".".join(parts).replace(f".{adapter_name}.", ".")


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """Strip accelerate's ``AcceleratedOptimizer`` and DeepSpeed's ZeRO optimizer (and similar) wrappers: the
    innermost ``.optimizer``."""
    for _ in range(8):
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    return optimizer


def check_adam(optimizer: Any) -> torch.optim.Optimizer:
    """Raise a clear error unless the optimizer is torch's Adam or AdamW (any implementation: for-each, fused)."""
    opt = unwrap_optimizer(optimizer)
    if not isinstance(opt, (torch.optim.Adam, torch.optim.AdamW)):
        raise InputError(
            f"LESS rebuilds the Adam update from the optimizer's moments, but this run uses {type(opt).__name__}. "
            "Train the warmup with `optim='adamw_torch'` (or 'adamw_torch_fused', the default) in TrainingArguments."
        )
    if any(group.get("amsgrad", False) for group in opt.param_groups):
        raise InputError("AMSGrad Adam is not supported by less_hf: set amsgrad=False for the warmup.")
    return opt


@dataclass
class OptimizerMoments:
    """Adam state at one checkpoint, keyed by canonical parameter name."""

    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]
    step: int
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
        """Write ``moments.safetensors`` + ``state.json`` into ``directory`` atomically (temp dir, then rename)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            tensors = {f"{n}::exp_avg": t.detach().float().cpu().contiguous() for n, t in self.exp_avg.items()}
            tensors |= {f"{n}::exp_avg_sq": t.detach().float().cpu().contiguous() for n, t in self.exp_avg_sq.items()}
            save_file(tensors, str(tmp / MOMENTS_FILE))
            state = {"step": self.step, "betas": list(self.betas), "eps": self.eps, **self.extra, **(metadata or {})}
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True, default=str))
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, directory: str | os.PathLike) -> OptimizerMoments:
        """Read what :meth:`save` wrote."""
        directory = Path(directory)
        try:
            state = json.loads((directory / STATE_FILE).read_text())
            tensors = load_file(str(directory / MOMENTS_FILE))
            int(state["step"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise OptimizerStateError(
                f"The less_hf capture in {directory} is unreadable ({type(err).__name__}: {str(err)[:200]}). Delete "
                f"the checkpoint folder {directory.parent} (or its {directory.name}/ folder, to fall back on the "
                "Trainer's optimizer.pt), or re-run the warmup."
            ) from None
        exp_avg = {k.rsplit("::", 1)[0]: v for k, v in tensors.items() if k.endswith("::exp_avg")}
        exp_avg_sq = {k.rsplit("::", 1)[0]: v for k, v in tensors.items() if k.endswith("::exp_avg_sq")}
        known = {"step", "betas", "eps"}
        if state.get("amsgrad"):
            raise OptimizerStateError(f"{directory} was captured from AMSGrad Adam; less_hf needs amsgrad=False.")
        moments = cls(
            exp_avg,
            exp_avg_sq,
            int(state["step"]),
            tuple(state["betas"]),
            float(state["eps"]),
            {k: v for k, v in state.items() if k not in known},
        )
        moments.check_values(str(directory))
        return moments

    def check_values(self, where: str) -> None:
        """Refuse state that cannot be Adam's: a step < 1, a NaN/inf moment, a negative second moment, or an
        ``exp_avg`` without its ``exp_avg_sq``."""
        if self.step < 1:
            raise OptimizerStateError(
                f"{where}: the optimizer took no step (step={self.step}), so its moments are Adam's initial zeros and "
                "carry no update direction. Save checkpoints after training steps (save_strategy='epoch')."
            )
        if set(self.exp_avg) != set(self.exp_avg_sq):
            odd = sorted(set(self.exp_avg) ^ set(self.exp_avg_sq))[:3]
            raise OptimizerStateError(f"{where}: exp_avg and exp_avg_sq cover different parameters (e.g. {odd}).")
        check_moment_values(
            ((name, self.exp_avg[name], self.exp_avg_sq[name]) for name in sorted(self.exp_avg)), where
        )

    def check_matches(self, shapes: dict[str, torch.Size]) -> None:
        """Check that every trainable parameter has moments of its shape (and nothing else is left over)."""
        missing = sorted(set(shapes) - set(self.exp_avg))
        extra = sorted(set(self.exp_avg) - set(shapes))
        if missing or extra:
            raise InputError(
                f"The optimizer state does not match the model's trainable parameters: missing {missing[:3]} "
                f"({len(missing)} in all), unexpected {extra[:3]} ({len(extra)} in all). Was this checkpoint made "
                "with the same LoRA config (rank, target modules)?"
            )
        for name, shape in shapes.items():
            for kind, table in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                if tuple(table[name].shape) != tuple(shape):
                    raise InputError(
                        f"{kind} for {name} has shape {tuple(table[name].shape)} but the parameter has {tuple(shape)}."
                    )


def _group_hparams(opt: torch.optim.Optimizer | dict) -> tuple[tuple[float, float], float]:
    groups = opt.param_groups if isinstance(opt, torch.optim.Optimizer) else opt["param_groups"]
    betas = tuple(float(b) for b in groups[0].get("betas", (0.9, 0.999)))
    eps = float(groups[0].get("eps", 1e-8))
    return betas, eps  # type: ignore[return-value]


def _step_of(state: dict[str, Any]) -> int:
    step = state.get("step", 0)
    return int(step.item() if isinstance(step, torch.Tensor) else step)


def moments_from_optimizer(optimizer: Any, model: torch.nn.Module, adapter_name: str = "default") -> OptimizerMoments:
    """Moments from a live Adam/AdamW, keyed by the model's parameter names (never by position)."""
    opt = check_adam(optimizer)
    names = {id(p): canonical_name(n, adapter_name) for n, p in model.named_parameters()}
    exp_avg, exp_avg_sq, steps = {}, {}, []
    for group in opt.param_groups:
        for p in group["params"]:
            if id(p) not in names:
                raise InputError("The optimizer holds a parameter the model does not have; pass the trained model.")
            state = opt.state.get(p)
            if not state:  # no step taken yet for this parameter: Adam's initial zeros
                exp_avg[names[id(p)]] = torch.zeros_like(p, dtype=torch.float32)
                exp_avg_sq[names[id(p)]] = torch.zeros_like(p, dtype=torch.float32)
                steps.append(0)
                continue
            exp_avg[names[id(p)]] = state["exp_avg"]
            exp_avg_sq[names[id(p)]] = state["exp_avg_sq"]
            steps.append(_step_of(state))
    betas, eps = _group_hparams(opt)
    return OptimizerMoments(exp_avg, exp_avg_sq, max(steps, default=0), betas, eps)


def moments_from_hf_checkpoint(
    checkpoint_dir: str | os.PathLike, model: torch.nn.Module, adapter_name: str = "default"
) -> OptimizerMoments:
    """Moments from a plain HF Trainer checkpoint saved without the callback: ``optimizer.pt`` / ``optimizer.bin``,
    or FSDP's ``optimizer_0/`` folder (see :func:`~less_hf.capture.sharded.checkpoint_optimizer_state`).

    State saved under FSDP is keyed by parameter name and read by name.

    The Trainer saves state by position: the trainable parameters that get weight decay, in ``named_parameters()``
    order, then those that do not. That order is rebuilt here and every shape is checked, so a mismatch fails loudly
    instead of pairing moments with the wrong parameter.
    """
    from transformers import Trainer

    from .sharded import checkpoint_optimizer_state, is_named_state, moments_from_named_state

    saved, path = checkpoint_optimizer_state(checkpoint_dir)
    if is_named_state(saved):  # FSDP: keyed by parameter name, whatever the order
        return moments_from_named_state(saved, str(path), adapter_name)
    decay = set(Trainer.get_decay_parameter_names(None, model))  # does not use self
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ordered = [(n, p) for n, p in trainable if n in decay] + [(n, p) for n, p in trainable if n not in decay]
    indices = [i for group in saved["param_groups"] for i in group["params"]]
    if len(indices) != len(ordered):
        raise InputError(
            f"{path} holds state for {len(indices)} parameters but the model has {len(ordered)} trainable ones: it "
            "was saved from a different model or LoRA config."
        )
    exp_avg, exp_avg_sq, steps = {}, {}, []
    for index, (name, param) in zip(indices, ordered):
        state = saved["state"][index]
        key = canonical_name(name, adapter_name)
        if tuple(state["exp_avg"].shape) != tuple(param.shape):
            raise InputError(
                f"{path}: state #{index} has shape {tuple(state['exp_avg'].shape)} but parameter {name} has "
                f"{tuple(param.shape)}. The file's parameter order does not match this model: it was saved from "
                "another model or LoRA config. Re-run the warmup with GradientCaptureCallback."
            )
        exp_avg[key], exp_avg_sq[key] = state["exp_avg"], state["exp_avg_sq"]
        steps.append(_step_of(state))
    betas, eps = _group_hparams(saved)
    moments = OptimizerMoments(exp_avg, exp_avg_sq, max(steps, default=0), betas, eps)
    moments.check_values(str(path))
    return moments


def check_moment_values(moments: Iterable[tuple[str, torch.Tensor, torch.Tensor]], where: str) -> None:
    """Refuse ``(parameter, exp_avg, exp_avg_sq)`` triples that cannot be Adam state: a NaN/inf moment or a negative
    second moment."""
    for name, m, v in moments:
        if not bool(torch.isfinite(m).all()) or not bool(torch.isfinite(v).all()):
            raise OptimizerStateError(
                f"{where}: the Adam moments of {name} hold NaN/inf: the warmup diverged at or before this checkpoint. "
                "Re-run the warmup (lower learning rate, bf16 → fp32), or delete this checkpoint."
            )
        if bool((v < 0).any()):
            raise OptimizerStateError(
                f"{where}: exp_avg_sq of {name} has negative values ({float(v.min()):.3g}); a second moment is a mean "
                "of squares and cannot be negative, so this file is corrupted or not Adam state."
            )


def check_state_values(saved: dict[str, Any], path: Path) -> None:
    """:func:`check_moment_values` of every parameter of an optimizer state_dict (named by its index)."""
    states = saved["state"].items()
    check_moment_values(((f"parameter #{i}", st["exp_avg"], st["exp_avg_sq"]) for i, st in states), str(path))


def load_optimizer_file(path: Path, check: bool = True) -> dict[str, Any]:
    """``torch.load`` an optimizer file safely (tensors and plain containers only) and check it is Adam state."""
    try:  # weights_only: tensors and plain containers only; nothing from the file is unpickled as code
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError (or RuntimeError/EOFError for a torn file)
        raise OptimizerStateError(
            f"{path} cannot be loaded safely ({type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}). "
            "less_hf only reads optimizer files holding tensors (weights_only=True) and never unpickles code. "
            "Re-save it from a trusted run, or train with GradientCaptureCallback (safetensors)."
        ) from None
    if check:
        check_adam_state_dict(saved, path)
    return saved


def check_adam_state_dict(saved: Any, path: Path) -> None:
    """Refuse an optimizer state_dict that is not plain Adam/AdamW state for every parameter it lists."""
    if not isinstance(saved, dict) or "state" not in saved or "param_groups" not in saved:
        raise OptimizerStateError(f"{path} is not an optimizer state_dict (no 'state'/'param_groups').")
    groups = saved["param_groups"]
    if not groups or any("betas" not in g for g in groups):
        raise OptimizerStateError(
            f"{path} was saved by an optimizer without Adam's betas (SGD, Adafactor...). LESS rebuilds the Adam "
            "update from its moments: train the warmup with optim='adamw_torch'."
        )
    if any(g.get("amsgrad") for g in groups):
        raise OptimizerStateError(f"{path} is AMSGrad Adam state; less_hf needs amsgrad=False for the warmup.")
    indices = [i for g in groups for i in g.get("params", [])]
    missing = [i for i in indices if i not in saved["state"]]
    if missing:
        raise OptimizerStateError(
            f"{path} has no optimizer state for {len(missing)} of its {len(indices)} parameters (e.g. #{missing[0]}): "
            "those were never updated, or the optimizer is not Adam. Save checkpoints after training steps, with "
            "optim='adamw_torch'."
        )
    for index in indices:
        state = saved["state"][index]
        keys = set(state) if isinstance(state, dict) else set()
        if "max_exp_avg_sq" in keys:
            raise OptimizerStateError(f"{path} is AMSGrad Adam state; less_hf needs amsgrad=False for the warmup.")
        if not {"exp_avg", "exp_avg_sq", "step"} <= keys:
            raise OptimizerStateError(
                f"{path} holds {sorted(keys)} for parameter #{index}, not Adam's exp_avg/exp_avg_sq/step: the warmup "
                "used another optimizer. LESS needs Adam moments: train the warmup with optim='adamw_torch'."
            )
