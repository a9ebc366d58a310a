"""less_hf benchmarks: every section side by side in one run, one markdown table, saved with the machine's description.

    python benchmarks/run.py --preset smoke     # about 3 minutes: tiny sizes, checks that everything runs
    python benchmarks/run.py --preset quick     # about 10 minutes: small sizes
    python benchmarks/run.py --preset full      # < 30 minutes on 2 quiet cores: the numbers in the README

Sections (see each module's docstring for exactly what is run):
  1. datastore build throughput, less_hf vs the paper's procedure, and fidelity to exact scores (build_throughput.py)
  2. projection speed and cosine fidelity per projector, several seeds (projection_fidelity.py)
  3. streaming scoring: rows/s, GB/s vs memory bandwidth, peak RSS at N rows (scoring.py)
  4. callback overhead on a real warmup (callback_overhead.py)
  5. 1 vs 2 processes under `accelerate launch` (scaling.py)
  6. feature storage formats (fp16, int8, 4/2/1-bit): size vs agreement with fp16 scores on the demo's real
     features (storage.py; needs a finished `less-hf demo` datastore or --datastore)

Writes ``benchmarks/results/<name>.md`` and ``.json`` (after every section, so a failure keeps what was done; a
section that fails is reported with its error and the others still run). Needs the built-in SmolLM2 (``less_hf
.assets``, built on first use) and, for the full preset, ~17 GB of free disk in ``--workdir`` for the 1M-row scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks import build_throughput, callback_overhead, projection_fidelity, scaling, scoring, storage  # noqa: E402
from benchmarks.common import Section, machine  # noqa: E402

PRESETS = {
    "smoke": {  # seconds per section: checks that everything runs, numbers meaningless
        "callback": {"rows": 8, "epochs": 1, "repeats": 1},
        "build": {"rows": 2, "target_rows": 2, "dense_fraction": 0.0005},
        "projection": {"rows": 6, "dims": [1024], "dense_dims": [1024], "seeds": 2},
        "scoring": {"sizes": [2_000]},
        "scaling": {"rows": 4},
    },
    "quick": {
        "callback": {"rows": 32, "epochs": 1, "repeats": 1},
        "build": {"rows": 8, "target_rows": 4, "dense_fraction": 0.002},
        "projection": {"rows": 33, "dims": [1024, 8192], "dense_dims": [1024], "seeds": 2},
        "scoring": {"sizes": [10_000, 100_000]},
        "scaling": {"rows": 16},
    },
    "full": {
        "callback": {"rows": 64, "epochs": 2, "repeats": 2},
        "build": {"rows": 32, "target_rows": 8, "dense_fraction": 0.01},
        "projection": {"rows": 48, "dims": [1024, 8192], "dense_dims": [1024, 8192], "seeds": 3},
        "scoring": {"sizes": [10_000, 100_000, 1_000_000]},
        "scaling": {"rows": 32},
    },
}
ORDER = ["callback", "build", "scaling", "projection", "scoring", "storage"]  # `callback`'s warmup feeds build/scaling
NUMBER = {"build": 1, "projection": 2, "scoring": 3, "callback": 4, "scaling": 5, "storage": 6}


def report(preset: str, info: dict, sections: dict[str, Section | str], started: float) -> str:
    lines = [
        f"# less_hf benchmarks ({preset} preset)",
        "",
        f"`python benchmarks/run.py --preset {preset}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"{(time.time() - started) / 60:.1f} minutes.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
    ]
    for key in sorted(sections, key=NUMBER.get):
        value = sections[key]
        lines.append(
            value.markdown()
            if isinstance(value, Section)
            else f"## {NUMBER[key]}. {key}: FAILED\n\n```\n{value}\n```\n"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--sections", nargs="+", choices=ORDER, default=ORDER, help="run only these sections")
    parser.add_argument("--name", help="results file name (default: <preset>-<cores>core-<date>)")
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one, removed at the end)")
    parser.add_argument("--datastore", help="finished fp16 datastore for the storage section (default: the demo's)")
    args = parser.parse_args()
    sizes = PRESETS[args.preset]
    started = time.time()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="less_hf_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    name = args.name or f"{args.preset}-{os.cpu_count()}core-{time.strftime('%Y%m%d-%H%M', time.gmtime(started))}"
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    info = machine()
    print("Machine:", json.dumps(info), flush=True)
    sections: dict[str, Section | str] = {}
    warmup_dir = workdir / "warmup"
    try:
        for key in ORDER:
            if key not in args.sections:
                continue
            print(f"\n=== section {NUMBER[key]}: {key} ===", flush=True)
            t0 = time.perf_counter()
            try:
                if key in ("build", "scaling") and not list(warmup_dir.glob("checkpoint-*")):
                    cfg = sizes["callback"]
                    callback_overhead.warmup_run(
                        *_warmup_inputs(cfg["rows"]), cfg["epochs"], "background", str(warmup_dir)
                    )
                if key == "callback":
                    sections[key] = callback_overhead.run(**sizes["callback"], keep_warmup=warmup_dir)
                elif key == "build":
                    sections[key] = build_throughput.run(warmup_dir, workdir=workdir, **sizes["build"])
                elif key == "scaling":
                    sections[key] = scaling.run(warmup_dir, workdir=workdir, **sizes["scaling"])
                elif key == "projection":
                    sections[key] = projection_fidelity.run(**sizes["projection"])
                elif key == "scoring":
                    sections[key] = scoring.run(
                        sizes["scoring"]["sizes"], workdir, info["memory_bandwidth_gb_s"], info["fp32_gemm_gflops"]
                    )
                elif key == "storage":
                    found = storage.find_datastore(Path.cwd(), ROOT)
                    sections[key] = storage.run(Path(args.datastore) if args.datastore else found)
                print(sections[key].markdown(), flush=True)
            except Exception:  # noqa: BLE001 - reported in the results, the other sections still run
                sections[key] = traceback.format_exc()
                print(sections[key], file=sys.stderr, flush=True)
            print(f"(section {key}: {time.perf_counter() - t0:.0f} s)", flush=True)
            text = report(args.preset, info, sections, started)
            (out_dir / f"{name}.md").write_text(text)
            data = {
                k: (v.data | {"table": v.rows} if isinstance(v, Section) else {"error": v})
                for k, v in sections.items()
            }
            (out_dir / f"{name}.json").write_text(
                json.dumps({"preset": args.preset, "machine": info, **data}, indent=1, default=str)
            )
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n" + report(args.preset, info, sections, started))
    print(f"Saved {out_dir / name}.md and .json")


def _warmup_inputs(rows: int):
    from benchmarks.common import smollm2_rows

    path, tokenizer, _, tokenized = smollm2_rows(rows)
    return path, tokenized, tokenizer


if __name__ == "__main__":
    main()
