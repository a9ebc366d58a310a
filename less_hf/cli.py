"""`less-hf` command line: one subcommand per stage, flags generated from the same config dataclasses as the API.

Every subcommand takes ``--config FILE.yaml|.json`` whose keys are the flags' field names (``output_dir`` or
``output-dir``); flags given on the command line override the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from .config import GradientConfig, ProjectionConfig, SelectionConfig, TSDSConfig, WarmupConfig
from .data_sources import load_data
from .errors import ConfigError, InputError, LessHFError

__all__ = ["build_parser", "load_data", "main"]


class _UserFacing(Exception):
    """A library error that is the user's to fix (Hub refusals, no token)."""


SELECTION_METHODS = ("less", "tsds", "random", "bm25", "dsir", "rds", "rds_plus", "longest")
"""Methods `less-hf select --method` knows; each maps to a `Selector` in :func:`_make_selector`."""


def _is_main_process() -> bool:
    """True unless this is a non-zero rank under `accelerate launch` / torchrun (only rank 0 writes and prints)."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _field_kind(hint: Any) -> tuple[Any, bool, tuple | None]:
    """``(scalar type, is_list, choices)`` of a config annotation (``X | None`` unwrapped)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _field_kind(inner[0]) if len(inner) == 1 else (str, False, None)
    if origin is typing.Literal:
        return type(args[0]), False, args
    if origin is list:
        scalar, _, choices = _field_kind(args[0]) if args else (str, False, None)
        return scalar, True, choices
    return hint, False, None


def _number(kind: type):
    """argparse ``type`` for ints/floats that names the expected kind on error."""

    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}"
            ) from None

    convert.__name__ = kind.__name__
    return convert


def add_dataclass_args(
    parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (), flag_prefix: str = ""
) -> None:
    """Expose every field of a config dataclass as ``--<flag_prefix>field-name`` with its help text and default;
    ``Literal`` fields become choices."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} ({(cls.__doc__ or '').strip().splitlines()[0]})")
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        scalar, is_list, choices = _field_kind(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kwargs: dict[str, Any] = {"default": default, "help": f"{f.metadata.get('help', '')} (default: {default})"}
        if scalar is bool:
            kwargs.update(type=_parse_bool, nargs="?", const=True)  # `--bf16` alone means true, as in HF scripts
        elif scalar in (int, float):
            kwargs["type"] = _number(scalar)
        if is_list:
            kwargs["nargs"] = "+"
        if choices:
            kwargs["choices"] = choices
        kwargs["metavar"] = f.name.upper() if not choices else None
        names = [f.name, *f.metadata.get("aliases", ())]
        group.add_argument(*_flags(names, flag_prefix), dest=f"{cls.__name__}.{f.name}", **kwargs)


def _flags(names: list[str], prefix: str = "") -> list[str]:
    """Every spelling of an option: ``--name-with-dashes`` and HF's ``--name_with_underscores``, for each name."""
    flags = []
    for name in names:
        for flag in (f"--{prefix}{name.replace('_', '-')}", f"--{prefix.replace('-', '_')}{name}"):
            if flag not in flags:
                flags.append(flag)
    return flags


def config_from_args(args: argparse.Namespace, cls: type):
    """Build config ``cls`` from the ``Cls.field`` entries of parsed arguments."""
    prefix = f"{cls.__name__}."
    return cls(**{k[len(prefix) :]: v for k, v in vars(args).items() if k.startswith(prefix)})


def model_ref(value: str) -> str:
    """argparse ``type`` of a model option: an existing folder, or a Hub id (``name`` or ``org/name``).

    A value written as a path (absolute, ``./``, ``../``, ``~`` or more than one ``/``) that does not exist is an
    error here, instead of transformers' "Repo id must use alphanumeric chars" deep in a traceback.
    """
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise argparse.ArgumentTypeError(f"{value} is a file; give the model's folder (with config.json).")
        return str(path)
    if value.startswith(("/", "./", "../", "~")) or value.count("/") > 1:
        raise argparse.ArgumentTypeError(
            f"{value}: no such folder. Give an existing model folder (with config.json), or a Hub id such as "
            "'HuggingFaceTB/SmolLM2-135M-Instruct' when online."
        )
    return value


def _add(parser: argparse.ArgumentParser, flag: str, help: str, required: bool = False, **kwargs: Any) -> None:
    """A plain option; ``required`` ones are checked after the config file is merged (so a file may supply them)."""
    suffix = " (required)" if required else f" (default: {kwargs.get('default')})"
    parser.add_argument(*_flags([flag[2:].replace("-", "_")]), help=help + suffix, **kwargs)
    if required:
        parser.set_defaults(_required=[*parser.get_default("_required"), flag])


def _subparser(sub, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(_required=[])
    p.add_argument(
        "--config",
        default=None,
        help="YAML or JSON file of option values (keys = option names, '-' or '_'); flags given here override it.",
    )
    return p


def _read_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"config file {path} does not exist (--config).")
    text = file.read_text()
    suffix = file.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InputError("YAML config files need pyyaml (pip install pyyaml), or use a .json file.") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}.") from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ConfigError(f"config file {path} is not valid JSON: {err}.") from None
    else:
        raise ConfigError(f"config file {path} must end in .yaml, .yml or .json.")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option names to values.")
    return data


def _config_value(path: str, key: str, value: Any, action: argparse.Action) -> Any:
    """A config-file value checked and converted like the same flag on the command line."""

    def one(item: Any) -> Any:
        if isinstance(item, (list, dict)):
            raise ConfigError(f"{path}: {key} takes a single value, got {item!r}.")
        if item is None:
            return None
        text = str(item).lower() if isinstance(item, bool) else str(item)
        try:
            converted = action.type(text) if action.type is not None else text
        except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
            raise ConfigError(f"{path}: {key}: {err}.") from None
        if action.choices is not None and converted not in action.choices:
            raise ConfigError(f"{path}: {key}={item!r}; choose one of {list(action.choices)}.")
        return converted

    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {key} must be true or false, got {value!r}.")
        return value
    if action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        if not items and action.nargs == "+":
            raise ConfigError(f"{path}: {key} needs at least one value.")
        return [one(item) for item in items]
    return one(value)


def _apply_config_file(parser: argparse.ArgumentParser, sub: argparse.ArgumentParser, argv: list[str]):
    """Parse once to find ``--config``; if given, set its values as defaults and parse again (flags win)."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        actions = {}
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--"):
                    actions[option[2:].replace("-", "_")] = action
        defaults = {}
        for key, value in _read_config_file(args.config).items():
            field = str(key).replace("-", "_")
            if field not in actions or field in ("config", "help"):
                raise ConfigError(
                    f"{args.config}: unknown option {key!r} for `less-hf {args.command}`; known: "
                    f"{', '.join(sorted(k for k in actions if k not in ('help', 'config')))}"
                )
            defaults[actions[field].dest] = _config_value(args.config, str(key), value, actions[field])
        sub.set_defaults(**defaults)
        args = parser.parse_args(argv)
    missing = [flag for flag in args._required if getattr(args, flag[2:].replace("-", "_")) in (None, [])]
    if missing:
        raise ConfigError(f"`less-hf {args.command}` needs {', '.join(missing)} (as a flag or a config key).")
    return args


# ---------------------------------------------------------------------------------------------------- subcommands


def _cmd_warmup(args: argparse.Namespace) -> int:
    import os

    import torch

    from .warmup import warmup

    extra = {"use_cpu": True} if args.use_cpu else {}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        extra["use_cpu"] = True  # under `accelerate launch` on CPUs, the Trainer runs DDP over gloo only with use_cpu
    warmup(args.model, load_data(args.pool), args.output_dir, config_from_args(args, WarmupConfig), **extra)
    if _is_main_process():
        print(f"Warmup checkpoints written to {args.output_dir}")
    return 0


def _parse_targets(specs: list[str], flag: str = "--target") -> dict[str, Any]:
    """``NAME=PATH`` specs → ``{name: Dataset}``; names are checked (safe, distinct) before any file is read."""
    from .output.names import check_names

    pairs = []
    for spec in specs:
        if not isinstance(spec, str) or "=" not in spec:
            raise ConfigError(f"{flag} takes NAME=PATH, got {spec!r}.")
        pairs.append(spec.split("=", 1))
    names = [name for name, _ in pairs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{flag} names must be distinct; {duplicates} given more than once.")
    check_names(names, f"{flag} name")
    return {name: load_data(path) for name, path in pairs}


def _needs_warmup_dir(method: str, args: argparse.Namespace) -> str:
    if not getattr(args, "warmup_dir", None):
        raise ConfigError(f"--method {method} needs --warmup_dir (the warmup's checkpoints).")
    return args.warmup_dir


def _make_selector(method: str, args: argparse.Namespace):
    """The `Selector` for ``--method`` (see :data:`less_hf.selection.SELECTORS`), built from the parsed options."""
    from .selection import SELECTORS, LESSSelector

    if method not in SELECTORS:
        raise ConfigError(f"--method {method!r} is not available; choose one of {SELECTION_METHODS}.")
    if method == "less":
        return LESSSelector(
            _needs_warmup_dir(method, args),
            args.datastore_dir,
            config_from_args(args, GradientConfig),
            config_from_args(args, ProjectionConfig),
            config_from_args(args, SelectionConfig),
            args.base_model,
        )
    seed = getattr(args, "selection_seed", 0)
    if method == "tsds":
        tsds = config_from_args(args, TSDSConfig)
        if tsds.features == "embeddings":  # no warmup needed: a sentence encoder, the built-in MiniLM by default
            from .selection.tsds import minilm_featurizer

            encoder = minilm_featurizer(getattr(args, "embedding_model", None))
            return SELECTORS["tsds"](config=tsds, featurizer=encoder, seed=seed)
        return SELECTORS["tsds"](
            _needs_warmup_dir(method, args),
            config=tsds,
            datastore_dir=args.datastore_dir,
            gradient_config=config_from_args(args, GradientConfig),
            projection_config=config_from_args(args, ProjectionConfig),
            base_model=args.base_model,
            seed=seed,
        )
    if method == "longest":  # tokens of --base_model's tokenizer when given, else characters
        return SELECTORS[method](args.base_model)
    if method in ("rds", "rds_plus"):
        model = args.base_model
        if model is None:
            from .capture.checkpoints import find_checkpoints
            from .modeling import base_model_of

            model = base_model_of(find_checkpoints(_needs_warmup_dir(method, args))[0].path)
        gradient = config_from_args(args, GradientConfig)
        return SELECTORS[method](model, max_length=gradient.max_length, batch_size=gradient.batch_size)
    if method in ("random", "dsir"):
        return SELECTORS[method](seed=seed)
    return SELECTORS[method]()


def _cmd_compare(args: argparse.Namespace) -> int:
    from .evaluation import FinetuneConfig
    from .evaluation.compare import compare, format_table

    finetune = FinetuneConfig(
        epochs=args.epochs, learning_rate=args.learning_rate, batch_size=args.batch_size, max_length=args.max_length,
        lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
    )  # fmt: skip
    methods = [m for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ConfigError("--methods needs at least one method name, e.g. less,bm25,random.")
    pool = load_data(args.pool)
    warmup_config = None
    if not args.warmup_dir:
        from .selection.base import budget

        k = budget(len(pool), None if args.n else args.fraction, args.n)
        warmup_config = WarmupConfig(
            num_rows=min(len(pool), max(8, k)), epochs=args.warmup_epochs, per_device_batch_size=2,
            gradient_accumulation_steps=1, lora_r=args.warmup_lora_r, lora_alpha=4 * args.warmup_lora_r,
            max_length=args.max_length, logging_steps=1,
        )  # fmt: skip
    record = compare(
        pool,
        _parse_targets(args.target),
        _parse_targets(args.heldout, "--heldout"),
        methods=methods,
        fraction=None if args.n else args.fraction,
        n=args.n,
        seeds=args.seeds,
        model=args.model,
        output_dir=args.output_dir,
        finetune_config=finetune,
        warmup_dir=args.warmup_dir,
        warmup_config=warmup_config,
        gradient_config=GradientConfig(max_length=args.max_length),
        projection_config=ProjectionConfig(dims=[args.dim]),
        include_base=not args.no_base,
    )
    print(format_table(record))
    print(f"Written: {Path(args.output_dir) / 'compare.json'}, compare.md, compare.png")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    import os

    from .datastore.distributed import SHARD_ENV, parse_shard
    from .output.info import describe, format_description

    if args.shard:
        parse_shard(args.shard)  # checked before any work
        if not args.datastore_dir:
            raise InputError("--shard needs --datastore_dir: the folder this shard writes (one per shard).")
    previous = os.environ.get(SHARD_ENV)
    if args.shard:
        os.environ[SHARD_ENV] = args.shard  # read by the featurizer's current_shard()
    try:
        selector = _make_selector("less", args)
        datastore = selector.build_datastore(load_data(args.pool))
    finally:  # this command's --shard must not leak into a later call in the same process
        if previous is None:
            os.environ.pop(SHARD_ENV, None)
        else:
            os.environ[SHARD_ENV] = previous
    if datastore is None:  # one shard of a split build
        print(
            f"shard {args.shard or previous} written to {args.datastore_dir}; combine all shard folders with "
            "`less-hf merge-shards --output_dir DATASTORE SHARD_DIR...`"
        )
    elif _is_main_process():
        print(format_description(describe(datastore.directory)))
    return 0


def _cmd_merge_shards(args: argparse.Namespace) -> int:
    from .datastore.shards import merge_shards
    from .output.info import describe, format_description

    datastore = merge_shards(args.output_dir, args.shard_dirs)
    print(format_description(describe(datastore.directory)))
    return 0


def _cmd_select(args: argparse.Namespace) -> int:
    # every value is checked before any work, used by this method or not
    configs = {
        cls: config_from_args(args, cls) for cls in (GradientConfig, ProjectionConfig, SelectionConfig, TSDSConfig)
    }
    pool = load_data(args.pool)
    targets = _parse_targets(args.target)
    selection = configs[SelectionConfig]
    selector = _make_selector(args.method, args)
    results = selector.select(
        pool,
        targets,
        fraction=selection.fraction,
        n=selection.n,
        mode=args.mode,
        seed=args.selection_seed,
        allow_fewer=args.allow_fewer,
    )
    if args.mode != "per_task":  # max, round_robin (and the old name combined): one subset for the union
        results = {"combined": results}
    if not _is_main_process():
        return 0  # under `accelerate launch` every process scores; only the main one writes
    out = selector.save(args.output_dir, source_column=args.source_column, pool_spec=args.pool)
    for name, subset in results.items():
        print(f"{name}: selected {len(subset)} of {len(pool)} rows → {out / name}")
    print(f"Provenance in {out / 'selection.json'}; next: `less-hf report {out}` or `less-hf export {out} DIR`.")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .output.report import write_report

    paths = write_report(args.selection_dir, args.output_dir)
    print(f"Report: {paths['html']} (self-contained) and {paths['markdown']}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .output.hub import export_selection

    folder = export_selection(args.selection_dir, args.export_dir, args.repo_id)
    print(
        f"Exported to {folder}; load a target with datasets.load_dataset('parquet', "
        f"data_files='{folder}/data/TARGET-*.parquet', split='train') (or push it and load it by repo id)"
    )
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from .output.hub import HubUnreachableError, push_selection

    export_dir = args.export_dir or str(Path(args.selection_dir) / "hub_export")
    try:
        url = push_selection(args.selection_dir, args.repo_id, export_dir, not args.public, args.endpoint)
    except (HubUnreachableError, PermissionError, RuntimeError) as e:
        raise _UserFacing(str(e)) from None
    print(f"Pushed to {url}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .output.info import describe, format_description

    info = describe(args.path)
    print(json.dumps(info, indent=2, default=str) if args.json else format_description(info))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    run_demo(config_from_args(args, DemoConfig))
    return 0


# ---------------------------------------------------------------------------------------------------- parser


def _datastore_args(p: argparse.ArgumentParser, warmup_required: bool = True) -> None:
    if warmup_required:
        _add(p, "--warmup_dir", "The warmup's output dir (checkpoint-N folders).", required=True)
    else:
        _add(
            p,
            "--warmup_dir",
            "The warmup's output dir (checkpoint-N folders); needed by less, tsds (and rds without --base_model).",
            default=None,
        )
    _add(p, "--pool", "Pool: .json/.jsonl/.parquet/.csv file, `datasets` folder, or Hub name[:split].", required=True)
    _add(
        p,
        "--datastore_dir",
        "Datastore folder (None: <warmup-dir>/less_datastore/<key>, one folder per model, checkpoints, pool and "
        "settings). A given folder holding features made from other inputs is refused, never reused.",
        default=None,
    )
    _add(
        p,
        "--base_model",
        "Override the base model recorded in the checkpoints (e.g. a local copy).",
        default=None,
        type=model_ref,
    )
    add_dataclass_args(p, GradientConfig)
    add_dataclass_args(p, ProjectionConfig)


def build_parser() -> argparse.ArgumentParser:
    """The `less-hf` argument parser (one subparser per stage)."""
    parser = argparse.ArgumentParser(
        prog="less-hf",
        description="LESS targeted data selection for Hugging Face training. "
        "Stages: warmup → build → select → report / export / push; `info` describes any folder; "
        "`compare` measures which method suits your data.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    parser._less_subparsers = {}  # type: ignore[attr-defined]

    p = _subparser(sub, "warmup", "LoRA warmup on a random slice of the pool, saving LESS checkpoints.")
    _add(p, "--model", "Base model folder (or a Hub name when online).", required=True, type=model_ref)
    _add(p, "--pool", "Pool: .json/.jsonl/.parquet/.csv file, `datasets` folder, or Hub name[:split].", required=True)
    _add(p, "--output_dir", "Where the checkpoint-N folders go.", required=True)
    _add(
        p,
        "--use_cpu",
        "Train on the CPU even with a GPU (TrainingArguments.use_cpu).",
        action="store_true",
        default=False,
    )
    add_dataclass_args(p, WarmupConfig)
    p.set_defaults(func=_cmd_warmup)
    parser._less_subparsers["warmup"] = p  # type: ignore[attr-defined]

    p = _subparser(sub, "build", "Build (or resume) the pool's gradient datastore from the warmup checkpoints.")
    _datastore_args(p)
    _add(
        p,
        "--shard",
        "Compute only shard K of N ('K/N', or 'auto': RANK/WORLD_SIZE of `accelerate launch`) into --datastore_dir, "
        "for machines that share no filesystem; `merge-shards` combines the N folders.",
        default=None,
    )
    p.set_defaults(func=_cmd_build)
    parser._less_subparsers["build"] = p  # type: ignore[attr-defined]

    p = _subparser(
        sub, "merge-shards", "Combine the folders of `build --shard K/N` into one datastore (as one process builds)."
    )
    _add(p, "--output_dir", "The datastore to create.", required=True)
    p.add_argument("shard_dirs", nargs="+", help="The N shard folders (any order).")
    p.set_defaults(func=_cmd_merge_shards)
    parser._less_subparsers["merge-shards"] = p  # type: ignore[attr-defined]

    p = _subparser(sub, "select", "Score the pool for each target task and save the top rows with provenance.")
    _datastore_args(p, warmup_required=False)
    _add(
        p,
        "--target",
        "A target task's few-shot examples as NAME=PATH; repeat for several tasks.",
        required=True,
        action="append",
        metavar="NAME=PATH",
        default=None,
    )
    _add(p, "--output_dir", "Selection folder: one subset per target, selection.json, scores/.", required=True)
    _add(p, "--method", f"Selection method, one of {SELECTION_METHODS}.", default="less", choices=SELECTION_METHODS)
    _add(
        p,
        "--mode",
        "Multi-target policy: 'per_task' (one subset per target), 'max' (one subset 'combined' for the union of the "
        "targets, top rows by the max of the tasks' scores) or 'round_robin' (one subset 'combined', each task "
        "taking its next best unseen row in turn; column selected_for names the task). 'combined' is the "
        "deprecated name of 'max'.",
        default="per_task",
        choices=("per_task", "max", "round_robin", "combined"),
    )
    _add(p, "--selection_seed", "Seed of the methods that sample (random, dsir, tsds).", default=0, type=int)
    _add(
        p,
        "--allow_fewer",
        "Select every selectable row when fewer than the budget are (default: an error stating the shortfall).",
        action="store_true",
        default=False,
    )
    _add(
        p,
        "--source_column",
        "Pool column naming each row's source, for the source mix (None: 'source' if present).",
        default=None,
    )
    _add(
        p,
        "--embedding_model",
        "Sentence-encoder folder for --tsds_features embeddings (None: the built-in all-MiniLM-L6-v2, offline).",
        default=None,
        type=model_ref,
    )
    add_dataclass_args(p, SelectionConfig)
    add_dataclass_args(p, TSDSConfig, flag_prefix="tsds-")
    p.set_defaults(func=_cmd_select)
    parser._less_subparsers["select"] = p  # type: ignore[attr-defined]

    p = _subparser(
        sub, "compare", "Which method suits this data? Select with each, fine-tune briefly, score held-out rows."
    )
    _add(p, "--pool", "Pool: .json/.jsonl/.parquet/.csv file, `datasets` folder, or Hub name[:split].", required=True)
    _add(p, "--target", "A target task's examples the selectors see, as NAME=PATH; repeat for several tasks.",
         required=True, action="append", metavar="NAME=PATH", default=None)  # fmt: skip
    _add(p, "--heldout", "The held-out rows of target NAME (disjoint from its examples), as NAME=PATH; one per "
         "target. Rows with 'choices' and 'answer' also get accuracy.", required=True, action="append",
         metavar="NAME=PATH", default=None)  # fmt: skip
    _add(p, "--methods", "Comma-separated methods (name or name@policy, e.g. rds_plus@round_robin).",
         default="less,bm25,random")  # fmt: skip
    _add(p, "--fraction", "Fraction of the pool each method selects.", default=0.05, type=_number(float))
    _add(p, "--n", "Exact rows each method selects (instead of --fraction).", default=None, type=_number(int))
    _add(p, "--seeds", "Fine-tune seeds per method (sampling methods also select once per seed).", default=3,
         type=_number(int))  # fmt: skip
    _add(p, "--model", "Model to select with, fine-tune and evaluate (None: the built-in SmolLM2-135M-Instruct).",
         default=None, type=model_ref)  # fmt: skip
    _add(p, "--output_dir", "Where compare.json/.md/.png (and the warmup) go.", default="compare_output")
    _add(p, "--warmup_dir", "LESS/TSDS warmup checkpoints to reuse (None: warm up into <output_dir>/warmup).",
         default=None)  # fmt: skip
    _add(p, "--warmup_epochs", "Warmup epochs (when compare warms up).", default=2, type=_number(int))
    _add(p, "--warmup_lora_r", "Warmup LoRA rank (alpha = 4 r).", default=128, type=_number(int))
    _add(p, "--dim", "LESS/TSDS projection dimension.", default=8192, type=_number(int))
    _add(p, "--epochs", "Fine-tune epochs on each selection.", default=1, type=_number(int))
    _add(p, "--learning_rate", "Fine-tune learning rate (linear decay).", default=2e-4, type=_number(float))
    _add(p, "--batch_size", "Fine-tune rows per step.", default=4, type=_number(int))
    _add(p, "--lora_r", "Fine-tune LoRA rank (alpha = 2 r).", default=16, type=_number(int))
    _add(p, "--max_length", "Tokens per row for features, warmup and fine-tune (held-out rows: twice this).",
         default=256, type=_number(int))  # fmt: skip
    _add(p, "--no_base", "Skip the reference row of the model without fine-tuning.", action="store_true",
         default=False)  # fmt: skip
    p.set_defaults(func=_cmd_compare)
    parser._less_subparsers["compare"] = p  # type: ignore[attr-defined]

    p = _subparser(sub, "report", "Write report.html (self-contained) and report.md for a selection folder.")
    p.add_argument("selection_dir", help="A folder written by `less-hf select`.")
    _add(p, "--output_dir", "Where to write the report (None: the selection folder).", default=None)
    p.set_defaults(func=_cmd_report)
    parser._less_subparsers["report"] = p  # type: ignore[attr-defined]

    p = _subparser(
        sub, "export", "Write the selection as a Hub-ready folder: data/<target>-*.parquet + README.md card."
    )
    p.add_argument("selection_dir", help="A folder written by `less-hf select`.")
    p.add_argument("export_dir", help="Folder to write.")
    _add(p, "--repo_id", "Hub name to mention in the card (optional).", default=None)
    p.set_defaults(func=_cmd_export)
    parser._less_subparsers["export"] = p  # type: ignore[attr-defined]

    p = _subparser(sub, "push", "Export, then upload to a Hub dataset repo (token from HF_TOKEN or `hf auth login`).")
    p.add_argument("selection_dir", help="A folder written by `less-hf select`.")
    p.add_argument("repo_id", help="Hub dataset repo, e.g. my-org/mmlu-less-5pct.")
    _add(
        p,
        "--export_dir",
        "Local export folder, kept whatever happens (None: <selection_dir>/hub_export).",
        default=None,
    )
    _add(p, "--public", "Create the repo public (default: private).", action="store_true", default=False)
    _add(p, "--endpoint", "Hub endpoint (None: HF_ENDPOINT or huggingface.co).", default=None)
    p.set_defaults(func=_cmd_push)
    parser._less_subparsers["push"] = p  # type: ignore[attr-defined]

    p = _subparser(sub, "info", "Describe a datastore, a warmup dir, a checkpoint-N folder or a selection folder.")
    p.add_argument("path", help="The folder to describe.")
    _add(p, "--json", "Print JSON instead of text.", action="store_true", default=False)
    p.set_defaults(func=_cmd_info)
    parser._less_subparsers["info"] = p  # type: ignore[attr-defined]

    from .demo import DemoConfig  # light: the demo module imports its assets lazily

    p = _subparser(sub, "demo", "End-to-end LESS on the built-in offline model and data (SmolLM2-135M).")
    add_dataclass_args(p, DemoConfig)
    p.set_defaults(func=_cmd_demo)
    parser._less_subparsers["demo"] = p  # type: ignore[attr-defined]
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `less-hf`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    command = next((a for a in argv if not a.startswith("-")), None)
    sub = parser._less_subparsers.get(command)  # type: ignore[attr-defined]
    try:
        args = _apply_config_file(parser, sub, argv) if sub is not None else parser.parse_args(argv)
        return args.func(args)
    except (LessHFError, _UserFacing) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished parts are kept, so the same command resumes.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
