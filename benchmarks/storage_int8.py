"""Effect of int8 feature storage on a real LESS selection, and its size, side by side with fp16.

Takes a finished datastore (e.g. the demo's `demo_output/warmup/less_datastore/<key>`), re-stores its fp16 pool and
target features as int8 (the same per-row ±127 quantisation the writer applies), scores both, and reports per target
the overlap of the top-5% selections, the Spearman correlation of the scores and the size ratio.

    python benchmarks/storage_int8.py demo_output/warmup/less_datastore/*/
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from less_hf.datastore import Datastore, load_target_features
from less_hf.datastore.store import quantize_rows
from less_hf.scoring import score_datastore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import spearman  # noqa: E402


def requantize(src: Path, dst: Path) -> None:
    """Copy the datastore, replacing every feature array with its int8 version."""
    shutil.copytree(src, dst)
    for path in dst.rglob("d[0-9]*.npy"):
        values = np.load(path)
        np.save(path, quantize_rows(values))


def main(directory: str) -> None:
    src = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "int8"
        requantize(src, dst)
        results = {}
        for store_dir in (src, dst):
            store = Datastore.open(store_dir)
            targets = [load_target_features(p) for p in sorted((store_dir / "targets").iterdir()) if p.is_dir()]
            results[store_dir] = score_datastore(store, targets)
        size = {d: sum(p.stat().st_size for p in d.rglob("d[0-9]*.npy")) for d in (src, dst)}
        print(
            f"features: fp16 {size[src] / 1e6:.1f} MB, int8 {size[dst] / 1e6:.1f} MB "
            f"({size[src] / size[dst]:.2f}× smaller)\n"
        )
        print("| target | top-5% overlap (int8 vs fp16) | Spearman of scores |")
        print("|---|---|---|")
        for name, fp16 in results[src].items():
            int8 = results[dst][name]
            finite = np.isfinite(fp16)
            k = max(1, round(0.05 * finite.sum()))
            top = [set(np.argsort(-np.where(finite, s, -np.inf))[:k].tolist()) for s in (fp16, int8)]
            rho = spearman(fp16[finite], int8[finite])
            print(f"| {name} | {len(top[0] & top[1]) / k:.3f} ({k} rows) | {rho:.5f} |")


if __name__ == "__main__":
    default = next(Path("demo_output/warmup/less_datastore").glob("*/manifest.json"), Path("x/manifest.json")).parent
    main(sys.argv[1] if len(sys.argv) > 1 else str(default))
