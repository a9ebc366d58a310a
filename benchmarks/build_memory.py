"""Memory of pools larger than RAM: peak RSS of the datastore build and of the selection as the pool grows.

    python benchmarks/build_memory.py [--stage-sizes 10000 100000 1000000] [--build-sizes 10000 100000]
        [--select-sizes 1000000 10000000] [--compare PATH] [--workdir DIR]

Everything runs on the tests' tiny random Llama (tests/conftest.py: 2 layers, hidden 64, a 400-token BPE) warmed up
for one epoch with GradientCaptureCallback (one checkpoint), on synthetic prompt/completion rows of ~16 tokens saved
with ``save_to_disk`` and read back memory-mapped (``load_from_disk``), as ``less-hf select --pool FOLDER`` reads them.
Each measurement runs in a fresh child process; it samples its own ``/proc/self/status`` every 10 ms and reports the
peak RSS (VmHWM: anonymous memory plus the file pages it has mapped, i.e. the memory-mapped pool and the features
memmap) and the peak anonymous RSS (RssAnon: what the process itself allocated, the number that must stay flat).

- ``stages``: what the build does before and around the gradients, on N rows: load the pool, hash its content
  (the datastore key), check ids unique, tokenize (token counts per row), cut the length-sorted batch plan, write
  ``row_ids.json``. No gradient is computed, so 1M rows fit in minutes.
- ``build``: the whole ``build_datastore`` (sparse projection to d = 128, fp16) on N rows.
- ``select``: streaming top-5% of N random scores and the returned ``Dataset`` (``subset_with_scores``) over an
  N-row memory-mapped pool.

``--compare PATH`` runs the ``stages``/``build`` children a second time with ``PYTHONPATH=PATH`` (another checkout
of less_hf, e.g. the previous release), side by side in the same run. Saves ``benchmarks/results/build_memory.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # appended: a --compare child imports less_hf from its own PYTHONPATH first
    sys.path.append(str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402

from benchmarks.common import Section  # noqa: E402

DIM = 128
MAX_LENGTH = 32
BATCH_SIZE = 512


# ------------------------------------------------------------------------------------------------------ measuring


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[name] = int(value.split()[0]) // 1024  # MB
    return out


class Sampler:
    """Peak RssAnon and VmHWM of this process, sampled every ``interval`` seconds on a background thread."""

    def __init__(self, interval: float = 0.01) -> None:
        self.peak_anon = _status()["RssAnon"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak_anon = max(self.peak_anon, _status()["RssAnon"])

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        status = _status()
        return {"peak_anon_mb": max(self.peak_anon, status["RssAnon"]), "peak_rss_mb": status["VmHWM"]}


def run_child(mode: str, *args: str, pythonpath: str | None = None, timeout: int = 7200) -> dict:
    import subprocess

    env = {**os.environ, "PYTHONPATH": pythonpath or str(ROOT)}
    script = str(Path(__file__).resolve())
    out = subprocess.run(
        [sys.executable, script, "--child", mode, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    if out.returncode:
        raise RuntimeError(f"{mode} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------ inputs


def rows(n: int, offset: int = 0):
    rng = np.random.default_rng(offset)
    a, b = rng.integers(1, 100, size=(2, n))
    for i in range(n):
        yield {
            "id": f"row-{offset + i}",
            "prompt": f"what is {a[i]} plus {b[i]} ?",
            "completion": f" {a[i] + b[i]}",
        }


def make_pool(folder: Path, n: int, chunk: int = 1 << 20) -> Path:
    """``n`` synthetic prompt/completion rows (made with numpy a chunk at a time), saved with ``save_to_disk``."""
    import pyarrow as pa
    from datasets import Dataset

    path = folder / f"pool-{n}"
    if (path / "dataset_info.json").exists():
        return path
    tables = []
    for lo in range(0, n, chunk):
        index = np.arange(lo, min(n, lo + chunk))
        a, b = np.random.default_rng(lo).integers(1, 100, size=(2, len(index)))
        ids = np.char.add("row-", index.astype(str))
        prompt = np.char.add(
            np.char.add(np.char.add("what is ", a.astype(str)), np.char.add(" plus ", b.astype(str))), " ?"
        )
        completion = np.char.add(" ", (a + b).astype(str))
        tables.append(pa.table({"id": ids.tolist(), "prompt": prompt.tolist(), "completion": completion.tolist()}))
    Dataset(pa.concat_tables(tables)).save_to_disk(str(path))
    return path


def make_warmup(folder: Path) -> Path:
    """The tests' tiny model, warmed up for one epoch on 12 rows (one checkpoint)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from datasets import Dataset

    from less_hf import warmup

    from conftest import make_model, make_tokenizer, tiny_warmup_config

    out = folder / "warmup"
    if list(out.glob("checkpoint-*")):
        return out
    tokenizer = make_tokenizer()
    model_dir = folder / "tiny_model"
    make_model(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    pool = Dataset.from_list(list(rows(48)))
    warmup(str(model_dir), pool, out, tiny_warmup_config(epochs=1, max_length=MAX_LENGTH), use_cpu=True)
    return out


# ------------------------------------------------------------------------------------------------------ children


def _configs():
    from less_hf import GradientConfig, ProjectionConfig

    return GradientConfig(max_length=MAX_LENGTH, batch_size=BATCH_SIZE), ProjectionConfig(dims=[DIM], seed=0)


def child_stages(pool_path: str, warmup_dir: str, out_dir: str) -> dict:
    """The pool-sized work of a build, stage by stage, without gradients (works on this and older checkouts)."""
    from datasets import load_from_disk

    from less_hf.capture.checkpoints import find_checkpoints
    from less_hf.datastore import build
    from less_hf.gradients.featurizer import GradientFeaturizer
    from less_hf.projection import from_config

    grad, proj = _configs()
    featurizer = GradientFeaturizer(find_checkpoints(warmup_dir), grad, from_config(proj))
    featurizer.tokenizer  # noqa: B018 - loaded before the baseline
    base = _status()["RssAnon"]
    sampler = Sampler()
    times = {}

    def stage(name, fn):
        start = time.perf_counter()
        value = fn()
        times[name] = round(time.perf_counter() - start, 2)
        return value

    pool = stage("load", lambda: load_from_disk(pool_path))
    stage("key", lambda: build.datastore_key(featurizer, pool, "adam", "float16", featurizer.checkpoints))
    try:  # this checkout
        from less_hf.datastore.rows import check_unique_ids, write_row_ids

        stage("ids", lambda: check_unique_ids(pool))
    except ImportError:  # an older one: every id as a Python string
        from less_hf.datastore.atomic import write_json_atomic
        from less_hf.tokenization import row_ids

        ids = stage("ids", lambda: row_ids(pool))
        stage("ids", lambda: build.check_unique_ids(ids))

        def write_row_ids(path, _):
            write_json_atomic(path, ids)

    tokenized = stage("tokenize", lambda: featurizer.tokenize(pool))
    stage("plan", lambda: featurizer.batch_plan(tokenized))
    stage("row_ids.json", lambda: write_row_ids(Path(out_dir) / "row_ids.json", pool))
    return {"rows": len(pool), "baseline_anon_mb": base, "seconds": times, **sampler.stop()}


def child_build(pool_path: str, warmup_dir: str, out_dir: str) -> dict:
    from datasets import load_from_disk

    from less_hf import build_datastore

    grad, proj = _configs()
    sampler = Sampler()
    pool = load_from_disk(pool_path)
    start = time.perf_counter()
    store = build_datastore(warmup_dir, pool, out_dir, grad, proj)
    seconds = time.perf_counter() - start
    assert store.manifest.status == "complete"
    return {"rows": len(pool), "seconds": round(seconds, 1), **sampler.stop()}


def child_select(pool_path: str, fraction: str) -> dict:
    from datasets import load_from_disk

    from less_hf.output import subset_with_scores, top_indices

    pool = load_from_disk(pool_path)
    scores = np.random.default_rng(0).standard_normal(len(pool))
    scores[::97] = -np.inf
    k = max(1, round(float(fraction) * len(pool)))
    base = _status()["RssAnon"]
    sampler = Sampler()
    start = time.perf_counter()
    indices = top_indices(scores, k)
    top_s = time.perf_counter() - start
    subset = subset_with_scores(pool, indices, scores, "score")
    assert len(subset) == k and subset[0]["score_rank"] == 0
    return {
        "rows": len(pool),
        "k": k,
        "baseline_anon_mb": base,
        "top_k_seconds": round(top_s, 2),
        "seconds": round(time.perf_counter() - start, 2),
        **sampler.stop(),
    }


# ------------------------------------------------------------------------------------------------------ report


def run(
    workdir: Path,
    stage_sizes: list[int],
    build_sizes: list[int],
    select_sizes: list[int],
    compare: str | None = None,
    compare_build_sizes: tuple[int, ...] = (10_000,),
    on_update=None,
    skip_this: bool = False,
) -> Section:
    """Measure every size; one markdown table (``Section``) for ``benchmarks/run.py`` or this script."""
    import shutil

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    warmup_dir = make_warmup(workdir)
    section = Section(
        "Memory of large pools (peak RSS by pool size)",
        ["what", "code", "rows", "peak anon RSS (MB)", "peak RSS incl. mapped files (MB)", "seconds"],
        notes=[NOTE],
    )
    codes = ([] if skip_this else [("this", None)]) + ([("compare", compare)] if compare else [])
    results: list[dict] = []

    def record(what: str, code: str, n: int, result: dict) -> None:
        result = {"what": what, "code": code, "n": n, **result}
        results.append(result)
        seconds = result["seconds"]
        if isinstance(seconds, dict):
            seconds = ", ".join(f"{k} {v}" for k, v in seconds.items())
        section.rows.append([what, code, f"{n:,}", result["peak_anon_mb"], result["peak_rss_mb"], seconds])
        print(json.dumps(result), flush=True)
        if on_update is not None:
            on_update(section)

    for n in sorted(set(stage_sizes) | set(build_sizes) | set(select_sizes)):
        pool = make_pool(workdir, n)
        for code, path in codes:
            if n in stage_sizes:
                out = workdir / f"stages-{code}-{n}"
                out.mkdir(exist_ok=True)
                record("stages", code, n, run_child("stages", str(pool), str(warmup_dir), str(out), pythonpath=path))
                shutil.rmtree(out, ignore_errors=True)
            if n in build_sizes and (code == "this" or n in compare_build_sizes):
                out = workdir / f"build-{code}-{n}"
                shutil.rmtree(out, ignore_errors=True)
                record("build", code, n, run_child("build", str(pool), str(warmup_dir), str(out), pythonpath=path))
                shutil.rmtree(out, ignore_errors=True)
            if n in select_sizes:
                record("select top 5%", code, n, run_child("select", str(pool), "0.05", pythonpath=path))
    section.data = {"results": results}
    return section


NOTE = (
    "Peak anon RSS: the largest RssAnon sampled every 10 ms (memory the process allocated). Peak RSS: VmHWM, "
    "which also counts the pages of the memory-mapped pool and of the features memmap the process touched "
    "(file-backed, reclaimable by the kernel). Each line is a fresh child process. `stages` = load, content key, "
    "unique ids, tokenize, batch plan, row_ids.json (no gradients); `build` = the whole build_datastore "
    f"(d = {DIM}, fp16, batch {BATCH_SIZE}, max_length {MAX_LENGTH}, one checkpoint)."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--stage-sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--build-sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--select-sizes", type=int, nargs="*", default=[1_000_000, 10_000_000])
    parser.add_argument("--compare", help="another less_hf checkout to measure side by side (PYTHONPATH)")
    parser.add_argument("--compare-build-sizes", type=int, nargs="*", default=[10_000])
    parser.add_argument("--skip-this", action="store_true", help="measure only the --compare checkout")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--name", default="build_memory")
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        import less_hf

        result = {"stages": child_stages, "build": child_build, "select": child_select}[mode](*rest)
        print(json.dumps({**result, "less_hf": str(Path(less_hf.__file__).parent.parent)}))
        return
    import tempfile

    from benchmarks.common import machine

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="less_hf_memory_"))
    started = time.time()
    info = machine()
    out = ROOT / "benchmarks" / "results" / f"{args.name}.md"

    def save(section: Section) -> str:
        text = "\n".join(
            [
                "# Memory of large pools",
                "",
                f"`python benchmarks/build_memory.py {' '.join(sys.argv[1:])}` — "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
                f"{(time.time() - started) / 60:.1f} minutes.",
                "",
                "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
                "",
                section.markdown(),
            ]
        )
        out.write_text(text)
        out.with_suffix(".json").write_text(json.dumps(section.data, indent=1))
        return text

    section = run(
        workdir,
        args.stage_sizes,
        args.build_sizes,
        args.select_sizes,
        args.compare,
        tuple(args.compare_build_sizes),
        on_update=save,
        skip_this=args.skip_this,
    )
    print(save(section))


if __name__ == "__main__":
    main()
