"""`less-hf` command line: warmup, select, demo — thin wrappers over the same configs as the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any

from .config import GradientConfig, ProjectionConfig, SelectionConfig, WarmupConfig


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Expose every field of a config dataclass as ``--field-name`` with its help text and default."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = str(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kwargs: dict[str, Any] = {"default": default, "help": f"{f.metadata.get('help', '')} (default: {default})"}
        if "list" in hint:
            kwargs.update(nargs="+", type=int if "int" in hint else str)
        elif "bool" in hint:
            kwargs["type"] = _parse_bool
        elif "float" in hint:
            kwargs["type"] = float
        elif "int" in hint:
            kwargs["type"] = int
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"{cls.__name__}.{f.name}", **kwargs)


def config_from_args(args: argparse.Namespace, cls: type):
    prefix = f"{cls.__name__}."
    return cls(**{k[len(prefix) :]: v for k, v in vars(args).items() if k.startswith(prefix)})


def load_data(spec: str):
    """A dataset from a `save_to_disk` folder or a .json/.jsonl/.parquet/.csv file."""
    from datasets import load_dataset, load_from_disk

    path = Path(spec)
    if path.is_dir():
        return load_from_disk(str(path))
    suffix = path.suffix.lower()
    builders = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
    if not path.exists() or suffix not in builders:
        raise SystemExit(f"error: {spec!r} is neither a `save_to_disk` folder nor a .json/.jsonl/.parquet/.csv file.")
    return load_dataset(builders[suffix], data_files=str(path), split="train")


def _cmd_warmup(args: argparse.Namespace) -> int:
    from .warmup import warmup

    warmup(args.model, load_data(args.pool), args.output_dir, config_from_args(args, WarmupConfig))
    print(f"Warmup checkpoints written to {args.output_dir}")
    return 0


def _parse_targets(specs: list[str]) -> dict[str, Any]:
    targets = {}
    for spec in specs:
        if "=" not in spec:
            raise SystemExit(f"error: --target takes NAME=PATH, got {spec!r}")
        name, path = spec.split("=", 1)
        targets[name] = load_data(path)
    return targets


def _cmd_select(args: argparse.Namespace) -> int:
    from .selection import LESSSelector

    pool = load_data(args.pool)
    selection = config_from_args(args, SelectionConfig)
    selector = LESSSelector(
        args.warmup_dir,
        args.datastore_dir,
        config_from_args(args, GradientConfig),
        config_from_args(args, ProjectionConfig),
        selection,
        args.base_model,
    )
    results = selector.select(pool, _parse_targets(args.target), fraction=selection.fraction, n=selection.n)
    out = Path(args.output_dir)
    for name, subset in results.items():
        subset.save_to_disk(str(out / name))
        print(f"{name}: selected {len(subset)} of {len(pool)} rows → {out / name}")
    (out / "selection.json").write_text(
        json.dumps({"targets": sorted(results), "selection": selection.to_dict()}, indent=2)
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    run_demo(config_from_args(args, DemoConfig))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="less-hf", description="LESS targeted data selection for HF training.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("warmup", help="LoRA warmup on a random slice of the pool, saving LESS checkpoints.")
    p.add_argument("--model", required=True, help="Base model folder (or a Hub name available offline).")
    p.add_argument("--pool", required=True, help="Pool dataset: save_to_disk folder or .json/.jsonl/.parquet/.csv.")
    p.add_argument("--output-dir", required=True, help="Where the checkpoint-N folders go.")
    add_dataclass_args(p, WarmupConfig)
    p.set_defaults(func=_cmd_warmup)

    p = sub.add_parser("select", help="Build the gradient datastore and select the top rows for each target.")
    p.add_argument("--warmup-dir", required=True, help="The warmup's output dir (checkpoint-N folders).")
    p.add_argument("--pool", required=True, help="Pool dataset (as for warmup).")
    p.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="A target task's few-shot examples; repeat for several tasks.",
    )
    p.add_argument("--output-dir", required=True, help="Selected subsets are saved here, one folder per target.")
    p.add_argument("--datastore-dir", default=None, help="Datastore location (default: <warmup-dir>/less_datastore).")
    p.add_argument("--base-model", default=None, help="Override the base model recorded in the checkpoints.")
    add_dataclass_args(p, GradientConfig)
    add_dataclass_args(p, ProjectionConfig, skip=())
    add_dataclass_args(p, SelectionConfig)
    p.set_defaults(func=_cmd_select)

    from .demo import DemoConfig  # light: the demo module imports its assets lazily

    p = sub.add_parser("demo", help="End-to-end LESS on the built-in offline model and data (SmolLM2-135M).")
    add_dataclass_args(p, DemoConfig)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
