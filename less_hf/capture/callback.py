"""`GradientCaptureCallback`: keep what LESS needs at every Trainer save."""

from __future__ import annotations

import atexit
import math
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.utils import logging

from ..errors import InputError
from .optimizer_state import CAPTURE_DIR, OptimizerMoments, canonical_name, check_adam, moments_from_optimizer
from .sharded import gather_deepspeed_moments, gather_full_moments, is_deepspeed, is_sharded

logger = logging.get_logger(__name__)


def _base_model_path(model: Any) -> str | None:
    """The base model as recorded by peft (or the model's config), made absolute when it is a local folder, so a
    selection run from any directory finds it."""
    config = getattr(model, "peft_config", None)
    path = None
    if config:
        first = next(iter(config.values()))
        path = getattr(first, "base_model_name_or_path", None)
    return _absolute(path or getattr(getattr(model, "config", None), "_name_or_path", None))


def _absolute(path: str | None) -> str | None:
    """A local folder as an absolute path (a Hub id, or None, as is)."""
    if path and Path(path).expanduser().is_dir():
        return str(Path(path).expanduser().resolve())
    return path


def check_lora_model(model: Any, adapter_name: str = "default") -> None:
    """Refuse, with the fix, a model LESS cannot featurize: no peft adapter (a full fine-tune), another peft method,
    or DoRA (its magnitude vectors are not LoRA linear weights)."""
    configs = getattr(model, "peft_config", None)
    if not configs:
        raise InputError(
            "GradientCaptureCallback: the model has no peft adapter, so this is a full fine-tune. LESS computes "
            "per-example gradients of LoRA weights: pass peft_config=LoraConfig(r=128, lora_alpha=512, "
            "target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj'], task_type='CAUSAL_LM') to SFTTrainer, or "
            "wrap the model with peft.get_peft_model before training."
        )
    config = configs.get(adapter_name)
    if config is None:
        raise InputError(
            f"GradientCaptureCallback(adapter_name={adapter_name!r}): the model's adapters are {sorted(configs)}; "
            "pass the name of the one being trained."
        )
    kind = str(getattr(config, "peft_type", "")).rsplit(".", 1)[-1]
    if kind != "LORA":
        raise InputError(f"GradientCaptureCallback: the adapter is {kind}, not LoRA; LESS needs a LoraConfig.")
    if getattr(config, "use_dora", False):
        raise InputError(
            "GradientCaptureCallback: the LoRA config has use_dora=True; less_hf's per-example gradients cover "
            "LoRA linear weights only, not DoRA's magnitude vectors. Set use_dora=False for the warmup."
        )


def planned_checkpoints(args: TrainingArguments, state: TrainerState) -> int | None:
    """How many checkpoints the Trainer will leave on disk (None when it cannot be known in advance, e.g. 'best')."""
    strategy = str(getattr(args.save_strategy, "value", args.save_strategy))
    max_steps = int(state.max_steps or 0)
    if strategy == "no":
        return 0
    if strategy == "epoch":
        epochs = int(state.num_train_epochs or math.ceil(args.num_train_epochs))
        count = max(1, epochs)
    elif strategy == "steps":
        every = state.save_steps or args.save_steps
        every = math.ceil(every * max_steps) if 0 < every < 1 else int(every)
        count = max_steps // every + (1 if max_steps % every else 0) if every > 0 else 1
    else:
        return None
    if args.save_total_limit:
        count = min(count, int(args.save_total_limit))
    return count


class GradientCaptureCallback(TrainerCallback):
    """Add to any `Trainer` / TRL `SFTTrainer` training a peft LoRA model with Adam(W)::

        trainer = SFTTrainer(model, args=args, train_dataset=ds, peft_config=lora,
                             callbacks=[GradientCaptureCallback()])

    At every save it writes ``checkpoint-N/less_hf/`` (atomically) holding:

    - ``moments.safetensors``: ``exp_avg`` and ``exp_avg_sq`` of every trainable parameter, keyed by parameter name;
    - ``state.json``: optimizer step, betas, eps, every learning rate used since the previous save and their mean
      (η̄ for this checkpoint), the base model, the adapter config, the trainable parameter names and the seed.

    Only the main process writes under `accelerate launch`. A non-Adam optimizer fails at train start. Under FSDP
    (FSDP1 or FSDP2 ``fully_shard``) every rank joins torch's ``get_optimizer_state_dict(full_state_dict=True)`` at
    each save, and the main process writes the same files a DDP run writes. Under DeepSpeed ZeRO (1, 2 or 3, driving
    torch's AdamW) every rank joins DeepSpeed's ``safe_get_full_optimizer_state`` instead.

    By default the save copies the moments to CPU (tens of milliseconds) and writes the files in a background
    thread while training goes on. That thread is joined before the next save, when training ends and when the
    process exits, and an error it met is raised there; the files appear atomically either way.

    Args:
        base_model_name_or_path: recorded so selection can rebuild the model; defaults to what peft recorded.
        adapter_name: the peft adapter being trained.
        background_write: write the files in a background thread (default) instead of blocking the save.
    """

    def __init__(
        self,
        base_model_name_or_path: str | None = None,
        adapter_name: str = "default",
        background_write: bool = True,
    ) -> None:
        self.base_model_name_or_path = base_model_name_or_path
        self.adapter_name = adapter_name
        self.background_write = background_write
        self._lrs: list[float] = []
        self._steps: list[int] = []
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        atexit.register(_join_at_exit, weakref.ref(self))

    def wait(self) -> None:
        """Block until the last background write has finished; raise the error it met, if any."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.join()
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"GradientCaptureCallback: writing the Adam moments failed: {error}") from error

    def _write(self, moments: OptimizerMoments, directory: Path, metadata: dict[str, Any]) -> None:
        try:
            if not directory.parent.is_dir():  # the Trainer rotated the checkpoint away meanwhile
                logger.warning("GradientCaptureCallback: %s was removed before its moments were written.", directory)
                return
            moments.save(directory, metadata)
            logger.info("GradientCaptureCallback: wrote Adam moments to %s", directory)
        except BaseException as error:  # surfaced by wait()
            self._error = error

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        optimizer = kwargs.get("optimizer")
        if optimizer is None:
            raise InputError("GradientCaptureCallback needs the Trainer's optimizer; none was passed to the callback.")
        if is_deepspeed(optimizer) or getattr(args, "deepspeed", None):
            try:
                import deepspeed.utils  # noqa: F401
            except ImportError:
                raise InputError("This run uses DeepSpeed but `deepspeed` cannot be imported here.") from None
            try:
                check_adam(optimizer)
            except InputError:
                raise InputError(
                    "Under DeepSpeed, LESS needs ZeRO to drive torch's Adam/AdamW: leave the `optimizer` section out "
                    "of the DeepSpeed config (the Trainer then passes its own `optim='adamw_torch'`), or pass "
                    "torch.optim.AdamW to deepspeed.initialize (with zero_allow_untested_optimizer=true)."
                ) from None
        check_adam(optimizer)
        model = kwargs.get("model")
        if model is not None and not any(p.requires_grad for p in model.parameters()):
            raise InputError("The model has no trainable parameters; wrap it with peft LoRA before training.")
        if model is not None:
            check_lora_model(model, self.adapter_name)
        self._check_save_plan(args, state)
        self._lrs, self._steps = [], []

    def _check_save_plan(self, args: TrainingArguments, state: TrainerState) -> None:
        """Refuse a run that will leave no checkpoint; warn when it leaves one (η̄ = 1: LESS averages over several)
        or takes fewer optimizer steps than it saves checkpoints (a checkpoint with no step of its own)."""
        count = planned_checkpoints(args, state)
        if count == 0:
            raise InputError(
                "GradientCaptureCallback: save_strategy='no' saves no checkpoint, so nothing can be captured. Use "
                "save_strategy='epoch' (one checkpoint per epoch, as LESS does)."
            )
        if count == 1 and state.is_world_process_zero:
            logger.warning(
                "GradientCaptureCallback: this run will leave 1 checkpoint (save_strategy=%s, save_steps=%s, "
                "save_total_limit=%s, %d steps), so LESS scores with a single checkpoint (η̄ = 1). The paper uses one "
                "per epoch: save_strategy='epoch' with num_train_epochs >= 2 and save_total_limit=None.",
                args.save_strategy,
                args.save_steps,
                args.save_total_limit,
                state.max_steps,
            )
        if count and state.max_steps and state.max_steps < count and state.is_world_process_zero:
            logger.warning(
                "GradientCaptureCallback: %d optimizer steps for %d checkpoints: some checkpoint will follow no step "
                "of its own. Warm up on more rows (or a smaller batch / accumulation).",
                state.max_steps,
                count,
            )

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # Called after optimizer.step() and before lr_scheduler.step(): param_groups hold the lr just used.
        optimizer = kwargs["optimizer"]
        self._lrs.append(float(optimizer.param_groups[0]["lr"]))
        self._steps.append(state.global_step + 1)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        model, optimizer = kwargs["model"], kwargs["optimizer"]
        deepspeed = is_deepspeed(optimizer)
        sharded = deepspeed or is_sharded(model)
        # FSDP / ZeRO: every rank takes part in the gather (a collective), before the main process may return early
        gathered = None
        if deepspeed:
            gathered = gather_deepspeed_moments(model, optimizer, self.adapter_name)
        elif sharded:
            gathered = gather_full_moments(model, optimizer, self.adapter_name)
        if not state.is_world_process_zero:
            self._lrs, self._steps = [], []
            return
        self.wait()
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not checkpoint.is_dir():
            logger.warning("GradientCaptureCallback: %s not found after save; nothing captured.", checkpoint)
            return
        moments = gathered if gathered is not None else moments_from_optimizer(optimizer, model, self.adapter_name)
        peft_config = getattr(model, "peft_config", {}).get(self.adapter_name)
        lrs = self._lrs or [float(optimizer.param_groups[0]["lr"])]
        if sum(lrs) <= 0:
            logger.warning(
                "GradientCaptureCallback: %s used learning rate 0 for all its steps (η̄ = 0), so it will not count "
                "in the score. Its steps fall in the schedule's warmup or end: warm up on more rows or steps.",
                checkpoint.name,
            )
        metadata = {
            "global_step": state.global_step,
            "epoch": state.epoch,
            "learning_rates": lrs,
            "learning_rate_steps": self._steps,
            "mean_lr": sum(lrs) / len(lrs),
            "base_model_name_or_path": _absolute(self.base_model_name_or_path) or _base_model_path(model),
            "adapter_config": peft_config.to_dict() if peft_config is not None else None,
            "trainable_parameters": (
                sorted(moments.exp_avg)  # FSDP1 without use_orig_params names flat parameters: use the gathered names
                if sharded
                else [canonical_name(n, self.adapter_name) for n, p in model.named_parameters() if p.requires_grad]
            ),
            "seed": args.seed,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if metadata["adapter_config"]:  # sets are not JSON
            metadata["adapter_config"] = {
                k: sorted(v) if isinstance(v, set) else v for k, v in metadata["adapter_config"].items()
            }
        self._lrs, self._steps = [], []
        if not self.background_write:
            moments.save(checkpoint / CAPTURE_DIR, metadata)
            return
        # Snapshot now (the optimizer updates its moments in place at the next step), write in the background.
        snapshot = OptimizerMoments(
            {n: _cpu_copy(t) for n, t in moments.exp_avg.items()},
            {n: _cpu_copy(t) for n, t in moments.exp_avg_sq.items()},
            moments.step,
            moments.betas,
            moments.eps,
            dict(moments.extra),
        )
        self._writer = threading.Thread(
            target=self._write, args=(snapshot, checkpoint / CAPTURE_DIR, metadata), name="less_hf-moments"
        )
        self._writer.start()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.wait()


def _cpu_copy(t: Any) -> Any:
    """A float32 CPU copy that later in-place updates of ``t`` cannot reach."""
    t = t.detach()
    copy = t.float().cpu()
    return copy.clone() if copy.data_ptr() == t.data_ptr() else copy


def _join_at_exit(ref: weakref.ref) -> None:
    callback = ref()
    if callback is not None and callback._writer is not None:
        callback._writer.join()
