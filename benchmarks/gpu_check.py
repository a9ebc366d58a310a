"""GPU check: CUDA/CPU parity, bf16 vs fp32, 8B-scale build throughput and GPU scoring, in one command (≤ 8 min on
one H100/H200). Writes ``gpu_check.md`` and ``gpu_check.json`` to ``--out`` (default ``benchmarks/results/``).

On the lent device machine (no network; torch, transformers, peft, accelerate, safetensors, numpy are there and
nothing else is needed: no ``datasets``, ``trl`` or ``faiss``, no model download, nothing to carry)::

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT   # then copy $OUT/gpu_check.* to benchmarks/results/

Anywhere else: ``python benchmarks/gpu_check.py`` (results in ``benchmarks/results/``); ``--tiny`` runs every section
on tiny shapes in seconds, on the CPU when there is no GPU (the test suite runs it that way, so it cannot rot).

Sections (each under its own share of ``--budget_s``; an out-of-memory error or failure is recorded and the next
section still runs; the files are rewritten after every section):

1. parity: a tiny random Llama + LoRA, the same weights on the CPU and on the GPU, fp32 (``highest`` matmul
   precision, no TF32): the sparse projector's hash tables and the dense projector's signs bit-equal; unprojected
   per-example gradients and projected Adam features equal to relative 1e-4; LESS scores' Spearman ≥ 0.9999. With
   no GPU both sides are the CPU (said in the output).
2. bf16: a random 4-layer Llama (hidden 512, LoRA r=128/α=512) with its base weights in bf16 (LoRA weights fp32, as
   peft loads them) vs the same weights in fp32 on the GPU: feature error, scores' Spearman and top-5% overlap;
   and two identical bf16 runs compared (the README expects GPU runs to agree to fp16 storage precision, relative
   2e-3).
3. throughput: a Llama-3-8B-shaped model with random bf16 weights built on the GPU from its config, LoRA r=128/α=512
   on q,k,v,o, rows of 512 tokens (the first quarter an unsupervised prompt), d = 8192: rows/s, tokens/s and peak
   GPU memory of the build's per-batch pipeline (``less_hf.gradients.featurizer.batch_features``: exact per-example
   gradients, Adam transform from synthetic moments held on the CPU as the build holds them, sparse projection,
   copy to the CPU), next to (a) a plain batched forward+backward of the same model and rows (a training step: the
   physical limit) and (b) the paper's procedure: batch-size-1 ``torch.autograd.grad`` per row + Adam + dense
   Rademacher projection of every 16 rows (timed on ``--dense_fraction`` of D, default 2%, and extrapolated). If 8B
   does not fit the time or memory, the next smaller shape (Llama-3.2-3B, then 1B) is used and the output says so.
4. scoring: the library's scoring kernel (``cosine_block``, max over subtasks) over a synthetic fp16 store of 1M rows
   × 8192 held in GPU memory (fewer rows if it does not fit), for 85 and 1 directions: GB/s of features read and %
   of the measured device-to-device copy bandwidth (read + write).

Exit status 1 when the parity section ran and failed, else 0 (a section's own failure is in the files).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from benchmarks import gpu_parts as gp  # noqa: E402
from benchmarks.common import Section, peak_rss_mb  # noqa: E402
from benchmarks.gpu_sections import FALLBACK, TINY, Sizes, TooSlow, bf16, parity, scoring, throughput  # noqa: E402
from less_hf.modeling import resolve_device  # noqa: E402

SECTIONS = {"parity": 0.08, "bf16": 0.12, "throughput": 0.6, "scoring": 0.2}  # shares of the time budget


def environment(device: torch.device) -> dict:
    import peft
    import transformers

    info = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
        if device.type == "cuda"
        else None,
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": sys.version.split()[0],
    }
    return info


def write(out: Path, meta: dict, sections: dict) -> None:
    lines = [
        "# less_hf GPU check" + (" (--tiny: tiny shapes, numbers not meaningful)" if meta["tiny"] else ""),
        "",
        f"`{meta['command']}` — {meta['started']}, {meta['wall_s'] / 60:.1f} minutes.",
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in meta["environment"].items() if v is not None),
        "",
    ]
    for key, value in sections.items():
        if isinstance(value, Section):
            lines.append(value.markdown())
        else:
            lines += [f"## {key}: {value['status']}", "", f"```\n{value.get('error', '')}\n```", ""]
    (out / "gpu_check.md").write_text("\n".join(lines))
    data = {
        **meta,
        "sections": {k: ({"status": "ok", **v.data} if isinstance(v, Section) else v) for k, v in sections.items()},
    }
    (out / "gpu_check.json").write_text(json.dumps(data, indent=2, default=float))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for gpu_check.*")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: seconds, on the CPU when there is no GPU")
    parser.add_argument("--device", default="auto", help="'auto' (the GPU when there is one), 'cpu', 'cuda:1', ...")
    parser.add_argument(
        "--model", default=None, choices=FALLBACK, help="first shape tried in section 3 (default 8b; tiny with --tiny)"
    )
    parser.add_argument(
        "--budget_s",
        type=float,
        default=None,
        help="time budget in seconds (default 420; 900 with --tiny, where it never bites)",
    )
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--batch_size", type=int, default=None, help="section 3's rows per batch (default 16)")
    parser.add_argument(
        "--dense_fraction", type=float, default=None, help="share of D the dense projection is timed on"
    )
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else Sizes()
    if args.batch_size:
        sizes = replace(sizes, batch_size=args.batch_size)
    if args.dense_fraction:
        sizes = replace(sizes, dense_fraction=args.dense_fraction)
    device = resolve_device(args.device)  # 'auto': the current GPU when there is one, else the CPU
    budget = args.budget_s or (900.0 if args.tiny else 420.0)
    if args.tiny:
        torch.set_num_threads(1)  # tiny shapes gain nothing from threads, and lose 10x on a busy machine
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    end = started + budget
    meta = {
        "command": "python benchmarks/gpu_check.py "
        + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "tiny": args.tiny,
        "budget_s": budget,
        "sizes": asdict(sizes),
        "environment": environment(device),
        "wall_s": 0.0,
    }
    sections: dict = {}
    shares = {k: SECTIONS[k] for k in args.sections}
    for key in args.sections:
        now = time.monotonic()
        remaining_share = sum(v for k, v in shares.items() if k not in sections)
        deadline = now + (end - now) * shares[key] / remaining_share
        print(f"[gpu_check] {key}: {deadline - now:.0f} s budget", flush=True)
        try:
            if now >= end:
                raise TooSlow("the time budget was spent before this section")
            if key == "throughput":
                sections[key] = throughput(sizes, device, deadline, args.model or ("tiny" if args.tiny else "8b"))
            else:
                sections[key] = {"parity": parity, "bf16": bf16, "scoring": scoring}[key](sizes, device, deadline)
            sections[key].data["seconds"] = time.monotonic() - now
        except Exception as err:  # noqa: BLE001  (a failed section is reported; the others still run)
            status = "out of memory" if gp.is_oom(err) else ("skipped" if isinstance(err, TooSlow) else "failed")
            sections[key] = {
                "status": status,
                "error": traceback.format_exc()[-3000:],
                "seconds": time.monotonic() - now,
            }
            print(sections[key]["error"], file=sys.stderr, flush=True)
        gp.free_memory(device)
        meta["wall_s"] = time.monotonic() - started
        if device.type != "cuda":
            meta["peak_rss_mb"] = round(peak_rss_mb(), 1)
        write(args.out, meta, sections)
    print((args.out / "gpu_check.md").read_text(), flush=True)
    parity_section = sections.get("parity")
    return 0 if not isinstance(parity_section, Section) or parity_section.data["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
